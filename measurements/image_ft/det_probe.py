"""Where a trained detector first fires on the held-out (test) episodes of its dataset (issue 19).

usage: python det_probe.py DATASET DETECTOR.pt
Episodes recorded by `bench.detector.record_labelled_episodes` with 2 hold steps: in a successful episode of n frames,
frame n-2 is the first observation after the simulator's success. Prints, per test episode, the first frame at or
above the threshold as steps early (+) or late (-) against that frame, and a histogram.
"""

import sys
from collections import Counter

import numpy as np

from inril_robot.data.store import Dataset
from inril_robot.learning.policies.success import SuccessDetector, split_episodes

ds, det = Dataset(sys.argv[1]), SuccessDetector.load(sys.argv[2])
_, _, test = split_episodes([e.index for e in ds.episodes], (0.6, 0.2), 0)
print(f"threshold {det.threshold:.4f}")
early: list[int] = []
for ep in ds.episodes:
    if ep.index not in test:
        continue
    p = det.probabilities({k: ep.load(f"obs/{k}") for k in ("front_rgb", "wrist_rgb")})
    fired = np.flatnonzero(p >= det.threshold)
    first = int(fired[0]) if len(fired) else None
    if ep.success:
        e = None if first is None else (len(p) - 2) - first
        early.append(e)
        print(f"episode {ep.index}: success, {len(p)} frames, first fire {first}, steps early {e}")
    else:
        print(f"episode {ep.index}: failure, {len(p)} frames, fired: {first is not None}")
print("steps early (successful test episodes):", dict(sorted(Counter(early).items(), key=lambda kv: str(kv[0]))))
