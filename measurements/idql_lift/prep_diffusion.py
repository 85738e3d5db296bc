"""A diffusion BC checkpoint on the quickstart's lift demos (the bench's `prepare_diffusion`), for IDQL."""

import sys
from pathlib import Path

import inril_robot.drivers.sim  # noqa: F401
from inril_robot.bench.sample_efficiency import prepare_diffusion
from inril_robot.data.store import Dataset

demos, out = Path(sys.argv[1]), Path(sys.argv[2])
print("checkpoint", prepare_diffusion("lift", Dataset(demos), out, [], steps=int(sys.argv[3])))
