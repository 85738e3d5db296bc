"""`finetune --robot sim --bridge --speed 0` for 24 reach episodes (local server, sync learner): watchdog holds, their
episode and chunk, and the round-trip times; the measurement behind the server Trainer running without TensorBoard.

    PYTHONPATH=. python3 scripts/bridge_holds_probe.py
"""

import json
import sys
import tempfile
from pathlib import Path

from typer.testing import CliRunner

import inril_robot.drivers.sim  # noqa
from inril_robot.cli import app

sys.path.insert(0, ".")
from inril_robot.learning.pretrain import pretrain
from tests.test_bridge import FT
from tests.test_pretrain import reach_cfg, record_demos

root = Path(tempfile.mkdtemp())
demos = record_demos(root / "demos", "reach", 10)
ck = pretrain(
    reach_cfg(overrides=["train.steps=50", "train.eval_every=0"]), demos, root / "pre", resume=False
).last_checkpoint
r = CliRunner().invoke(
    app,
    [
        "finetune",
        "--robot",
        "sim",
        "--bridge",
        "--checkpoint",
        str(ck),
        "--demos",
        str(demos.root),
        "--out",
        str(root / "run"),
        "--speed",
        "0",
        "--episodes",
        "24",
        "--json",
        *[a for s in FT for a in ("--set", s)],
    ],
)
p = json.loads(r.stdout)
print(json.dumps({k: p[k] for k in ("episodes", "watchdog_holds", "hold_events", "stages", "hz")}, default=str))
