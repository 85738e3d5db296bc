"""Held-out results of the image fine-tuning measurement (run.sh): per arm a Wilson interval, and paired counts
against BC and between the reward sources on the same seeds.
usage: python summarize.py WORK [PREFIX [SEED ...]] > summary.json   (PREFIX: run.sh's P, e.g. w20_; seeds 0 1)"""

import glob
import json
import sys
from pathlib import Path

from inril_robot.reporting.rates import wilson_interval

work = sys.argv[1]
prefix = sys.argv[2] if len(sys.argv) > 2 else ""
seeds_run = sys.argv[3:] or ["0", "1"]
bc = f"{prefix}bc"
pairs = [(f"{prefix}ft_sim_s{s}", f"{prefix}ft_det_s{s}") for s in seeds_run]
arms = [bc, *[arm for pair in pairs for arm in pair]]
per: dict[str, dict[int, bool]] = {}
for arm in arms:
    per[arm] = {}
    for path in glob.glob(f"{work}/eval/{arm}/*/eval.json"):
        for ep in json.loads(Path(path).read_text()).get("per_episode", []):
            per[arm][int(ep["seed"])] = bool(ep["success"])
result: dict = {"heldout": {}, "paired": {}, "runs": {}}
for arm, seeds in per.items():
    result["heldout"][arm] = wilson_interval(sum(seeds.values()), len(seeds)).to_dict()
for a, b in [(bc, x) for x in arms[1:]] + pairs:
    common = sorted(set(per[a]) & set(per[b]))
    result["paired"][f"{a} vs {b}"] = {
        "seeds": len(common),
        f"only {a}": sum(per[a][s] and not per[b][s] for s in common),
        f"only {b}": sum(per[b][s] and not per[a][s] for s in common),
    }
for arm in arms[1:]:
    run = json.loads(Path(f"{work}/{arm}.json").read_text())
    result["runs"][arm] = {k: run[k] for k in ("env_steps", "iterations", "wall_s")} | {"evals": run["evals"]}
print(json.dumps(result, indent=1))
