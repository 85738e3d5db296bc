"""Paced `collect` in sim at 10 Hz with one slow operator read (0.35 s = 3.5 periods) at step 6: the gaps between the
recorded steps' wall times; a catch-up burst shows as gaps far below one period.

    PYTHONPATH=<tree> python3 scripts/loop_pacing_probe.py

Runs on the layered tree and (for the comparison) on an export of the tree before the one loop
(`git archive 06bff40 | tar -x -C /tmp/old`, PYTHONPATH=/tmp/old): it tries both import layouts.
"""

import json
import tempfile
import time
from pathlib import Path

import numpy as np

import inril_robot

try:
    import inril_robot.drivers.sim
    from inril_robot.runtime.collect import collect
    from inril_robot.runtime.env import RobotEnv
except ImportError:
    import drivers.sim  # noqa: F401  old layout
    from inril_robot.collect import collect
    from inril_robot.env import RobotEnv
from inril_robot.config import load_config
from inril_robot.data.store import Dataset
from inril_robot.hardware import Teleop, TeleopCommand


class Slow(Teleop):
    def __init__(self) -> None:
        self.n = 0

    def read(self) -> TeleopCommand:
        self.n += 1
        if self.n == 6:
            time.sleep(0.35)
        if self.n > 25:
            return TeleopCommand(keep=True)
        return TeleopCommand(delta_pos=np.array([0.002, 0, 0]))


cfg = load_config(robot="sim", task="reach", overrides=["teleop.kind=keyboard", "task.max_steps=60"])
out = Path(tempfile.mkdtemp()) / "demos"
with RobotEnv(cfg) as env:
    collect(cfg, out, 1, env, Slow(), pace=True)
wall = Dataset(out).episodes[0].load("time/wall")
gaps = np.diff(wall)
summary = {
    "tree": inril_robot.__file__,
    "steps": len(wall),
    "gaps_ms": [round(1e3 * g, 1) for g in gaps],
    "gaps_below_half_period": int((gaps < 0.05).sum()),
    "min_gap_ms": round(1e3 * gaps.min(), 1),
}
print(json.dumps(summary))
