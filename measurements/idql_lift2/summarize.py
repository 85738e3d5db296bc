"""Table of the IDQL-from-a-weaker-BC measurement (issue 18) from the held-out JSONs (heldout.py) and the runs' result
JSON (the log's last line): before (the run's step-0 policy) and after (its last.pt), both acting as deployed, and the
paired differences over seeds (mean, 95% t interval).

usage: python summarize.py RUNS_DIR  -> prints markdown and writes summary.json next to this file
"""

import json
import sys
from pathlib import Path

from inril_robot.reporting.rates import mean_ci

R = Path(sys.argv[1])


def cell(r: dict) -> str:
    s = r["success"]
    return f"{s['successes']}/{s['trials']} [{100 * s['ci95_low']:.0f}, {100 * s['ci95_high']:.0f}]"


def rate(r: dict) -> float:
    return 100 * r["success"]["rate"]


summary: dict = {}
bc = json.loads((R / "bc3k.heldout.json").read_text()) if (R / "bc3k.heldout.json").is_file() else {}
if bc:
    summary["bc_diffusion_3k"] = {m: bc[m]["success"] for m in ("deployed", "diffusion_eta1")}
    print(f"diffusion BC (3k steps), held-out: eta 0 {cell(bc['deployed'])}, eta 1 {cell(bc['diffusion_eta1'])}\n")
print(
    "| run | before: step 0, deployed | after: last.pt, deployed | after: actor alone, eta 1 | change (deployed) "
    "| in-run eval (32 eps) | env steps | wall s |"
)
print("|---|---|---|---|---|---|---|---|")
changes: dict[str, list[float]] = {}
for path in sorted(R.glob("idql_m*_s*.heldout.json")):
    name = path.name.removesuffix(".heldout.json")
    m, seed = name.split("_")[1], int(name.split("_s")[-1])
    step0 = R / f"step0_s{seed}.json"
    log = (R / f"{name}.log").read_text()
    if not step0.is_file() or '{"' not in log:
        continue
    before = json.loads(step0.read_text())["deployed"]
    after = json.loads(path.read_text())
    res = json.loads(log[log.index('{"') :])
    delta = rate(after["deployed"]) - rate(before)
    changes.setdefault(m, []).append(delta)
    evals = " -> ".join(f"{100 * e['success_rate']:.0f}" for e in res["evals"])
    summary[name] = {
        "before_deployed": before["success"],
        "after_deployed": after["deployed"]["success"],
        "after_actor_eta1": after["diffusion_eta1"]["success"],
        "change_points": delta,
        "evals": res["evals"],
        "env_steps": res["env_steps"],
        "wall_s": res["wall_s"],
    }
    print(
        f"| {name} | {cell(before)} | {cell(after['deployed'])} | {cell(after['diffusion_eta1'])} | {delta:+.0f} "
        f"| {evals} | {res['env_steps']} | {res['wall_s']:.0f} |"
    )
print()
for m, values in sorted(changes.items()):
    ci = mean_ci(values)
    summary[f"change_{m}"] = {"mean": ci.mean, "ci95": [ci.low, ci.high], "n": ci.n, "values": values}
    label = "RL only" if m == "m0" else f"IN-RIL {m}"
    each = ", ".join(f"{v:+.0f}" for v in values)
    print(f"{label}: held-out change (deployed) {ci.mean:+.1f} points, 95% CI [{ci.low:+.1f}, {ci.high:+.1f}] ({each})")
(Path(__file__).parent / "summary.json").write_text(json.dumps(summary, indent=1))
