"""Held-out results of the image fine-tuning measurement (run.sh): per arm a Wilson interval, and paired counts
against BC and between the reward sources on the same seeds.  usage: python summarize.py WORK > summary.json"""

import glob
import json
import sys

from inril_robot.reporting.rates import wilson_interval

work = sys.argv[1]
arms = ["bc", "ft_sim_s0", "ft_det_s0", "ft_sim_s1", "ft_det_s1"]
per: dict[str, dict[int, bool]] = {}
for arm in arms:
    per[arm] = {}
    for path in glob.glob(f"{work}/eval/{arm}/*/eval.json"):
        for ep in json.load(open(path)).get("per_episode", []):
            per[arm][int(ep["seed"])] = bool(ep["success"])
result: dict = {"heldout": {}, "paired": {}, "runs": {}}
for arm, seeds in per.items():
    result["heldout"][arm] = wilson_interval(sum(seeds.values()), len(seeds)).to_dict()
for a, b in [("bc", x) for x in arms[1:]] + [("ft_sim_s0", "ft_det_s0"), ("ft_sim_s1", "ft_det_s1")]:
    common = sorted(set(per[a]) & set(per[b]))
    result["paired"][f"{a} vs {b}"] = {
        "seeds": len(common),
        f"only {a}": sum(per[a][s] and not per[b][s] for s in common),
        f"only {b}": sum(per[b][s] and not per[a][s] for s in common),
    }
for arm in arms[1:]:
    run = json.load(open(f"{work}/{arm}.json"))
    result["runs"][arm] = {k: run[k] for k in ("env_steps", "iterations", "wall_s")} | {"evals": run["evals"]}
print(json.dumps(result, indent=1))
