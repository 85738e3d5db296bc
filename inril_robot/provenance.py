"""What a dataset or checkpoint records about the calibration it was made with: `<path>#sha256:<16 hex>` per camera.

A digest, not just the path: a calibration file re-solved in place must not pass for the one the data was taken with.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from inril_robot.config import ConfigError, RunConfig


def calibration_ref(path: str | Path) -> str:
    path = Path(path)
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except FileNotFoundError:
        raise ConfigError(f"calibration file not found: {path}") from None
    return f"{path}#sha256:{digest}"


def calibration_refs(cfg: RunConfig) -> dict[str, str]:
    """camera name -> reference, for the cameras configured with a calibration file."""
    return {c.name: calibration_ref(c.calibration) for c in cfg.cameras if c.calibration is not None}


def calibration_field(cfg: RunConfig) -> str | None:
    """The dataset.json `calibration` value: "front=<ref>,wrist=<ref>", or None without calibrated cameras."""
    return ",".join(f"{name}={ref}" for name, ref in calibration_refs(cfg).items()) or None
