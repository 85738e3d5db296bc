"""The success detector on a policy's own episodes (issue 19): one `eval` with `reward.source=detector` and one with
`reward.source=operator` (the simulator's success) of the same checkpoint on the same held-out seeds. The policy is
deterministic, so both runs play the same trajectory until the detector ends its episode: a detector success whose
simulator run fails is a false success, and the length difference of a shared success is how early it fired.

usage: python detector_on_policy.py DETECTOR_EVAL_DIR OPERATOR_EVAL_DIR   (folders holding */eval.json or eval.json)
"""

import glob
import json
import sys
from collections import Counter
from pathlib import Path


def episodes(folder: str) -> dict[int, tuple[bool, int]]:
    out = {}
    for path in glob.glob(f"{folder}/eval.json") + glob.glob(f"{folder}/*/eval.json"):
        for e in json.loads(Path(path).read_text())["per_episode"]:
            out[int(e["seed"])] = (bool(e["success"]), int(e["length"]))
    return out


det, sim = episodes(sys.argv[1]), episodes(sys.argv[2])
seeds = sorted(set(det) & set(sim))
tp = [s for s in seeds if det[s][0] and sim[s][0]]
fp = [s for s in seeds if det[s][0] and not sim[s][0]]
fn = [s for s in seeds if sim[s][0] and not det[s][0]]
report = {
    "episodes": len(seeds),
    "detector_successes": len(tp) + len(fp),
    "simulator_successes": len(tp) + len(fn),
    "precision": len(tp) / max(len(tp) + len(fp), 1),
    "recall": len(tp) / max(len(tp) + len(fn), 1),
    "false_successes": [{"seed": s, "detector_step": det[s][1], "simulator_episode_length": sim[s][1]} for s in fp],
    "steps_early": dict(sorted(Counter(sim[s][1] - det[s][1] for s in tp).items())),
}
print(json.dumps(report, indent=1))
