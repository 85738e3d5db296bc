"""The policy's observation history: the last To observations per key, what a policy with `n_obs_steps` = To reads.

At the start of an episode the first observation fills the whole history (the policy was trained on windows padded
the same way). Used by the policy runner, the fine-tuning envs and the robot agent alike.
"""

from __future__ import annotations

from collections import deque

import numpy as np


class ObsHistory:
    def __init__(self, keys: list[str], n_obs_steps: int) -> None:
        if n_obs_steps < 1:
            raise ValueError(f"n_obs_steps must be >= 1, got {n_obs_steps}")
        self.keys = list(keys)
        self.frames: deque[dict[str, np.ndarray]] = deque(maxlen=n_obs_steps)

    def clear(self) -> None:
        self.frames.clear()

    def __bool__(self) -> bool:
        return bool(self.frames)

    def push(self, obs: dict[str, np.ndarray], replace_last: bool = False) -> None:
        """Append the policy keys of `obs` (the first push fills the history; `replace_last` overwrites the newest
        frame, e.g. a re-read after holding)."""
        frame = {k: obs[k] for k in self.keys}
        if not self.frames:
            self.frames.extend(frame for _ in range(self.frames.maxlen or 1))
        elif replace_last:
            self.frames[-1] = frame
        else:
            self.frames.append(frame)

    def stacked(self, prefix: str = "") -> dict[str, np.ndarray]:
        """prefix + key -> (To, *shape), oldest first."""
        return {f"{prefix}{k}": np.stack([f[k] for f in self.frames]) for k in self.keys}
