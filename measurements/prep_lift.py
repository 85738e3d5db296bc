"""Prepare the quickstart's lift demos + BC checkpoint (the same defaults as `inril-robot quickstart`)."""

import sys
from pathlib import Path

import inril_robot.drivers.sim  # noqa: F401
from inril_robot.cli.quickstart import prepare_pretrained, quickstart_config

out = Path(sys.argv[1])
cfg = quickstart_config("lift", 0.5, 2000, [])
ds, ck = prepare_pretrained(cfg, out, 50, print)
print("checkpoint", ck)
