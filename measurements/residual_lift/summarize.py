"""Per-seed held-out success, means with Student-t 95% intervals and differences paired by seed, for the residual
RLPD runs on lift beside PPO (measurements/lift10k): python3 summarize.py RUNS.csv [RUNS.csv ...] > summary.md

Each RUNS.csv has the bench's columns (task, arm, seed, heldout_final, curve, ...); an arm label may be given as
`PATH=LABEL`."""

import csv
import json
import statistics
import sys

from scipy import stats


def interval(xs: list[float]) -> str:
    m = statistics.mean(xs)
    if len(xs) < 2:
        return f"{m:.1f}"
    h = stats.t.ppf(0.975, len(xs) - 1) * statistics.stdev(xs) / len(xs) ** 0.5
    return f"{m:.1f} [{m - h:.1f}, {m + h:.1f}]"


arms: dict[str, dict[int, dict]] = {}
for spec in sys.argv[1:]:
    path, _, label = spec.partition("=")
    with open(path) as f:
        for row in csv.DictReader(f):
            arms.setdefault(label or row["arm"], {})[int(row["seed"])] = row

print(
    "| arm | seeds | held-out per seed (%) | mean [95%] | >= 90% | in-run curve per seed (env steps: success of 50) |"
)
print("|---|---|---|---|---|---|")
for arm, runs in arms.items():
    seeds = sorted(runs)
    held = [100 * float(runs[s]["heldout_final"]) for s in seeds]
    curves = "; ".join(" ".join(f"{int(x)}:{round(100 * y)}" for x, y in json.loads(runs[s]["curve"])) for s in seeds)
    print(
        f"| {arm} | {seeds[0]}-{seeds[-1]} | {', '.join(f'{h:.0f}' for h in held)} | {interval(held)} | "
        f"{sum(h >= 90 for h in held)}/{len(held)} | {curves} |"
    )
names = list(arms)
print()
for i, a in enumerate(names):  # each arm against every arm given before it
    for b in names[i + 1 :]:
        common = sorted(set(arms[a]) & set(arms[b]))
        if len(common) >= 2:
            d = [100 * (float(arms[b][s]["heldout_final"]) - float(arms[a][s]["heldout_final"])) for s in common]
            wins = sum(x > 0 for x in d)
            print(
                f"- {b} minus {a}, paired over seeds {common[0]}-{common[-1]}: {interval(d)} points, {wins} of "
                f"{len(d)} won"
            )
