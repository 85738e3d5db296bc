"""Held-out evaluation (100 episodes on HELDOUT seeds) of finished fine-tuning runs, cached in <run>/heldout.json
exactly where `bench sample-efficiency` looks for it (so `--report-only` reads these results back).

usage: python measurements/heldout.py RUN_DIR [RUN_DIR ...]
"""

import sys
from pathlib import Path

import inril_robot.drivers.sim  # noqa: F401
from inril_robot.bench.sample_efficiency import HELDOUT_EPISODES
from inril_robot.config import load_config
from inril_robot.learning.inril.common import evaluate_checkpoint

for run in map(Path, sys.argv[1:]):
    cfg = load_config(robot="sim", config_file=run / "run.yaml")
    result = evaluate_checkpoint(cfg, run / "last.pt", HELDOUT_EPISODES, cache=run / "heldout.json")
    print(run, "held-out success", result["success"]["rate"], "stops", result["stops"], flush=True)
