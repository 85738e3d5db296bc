"""What a dataset or checkpoint records about the calibration it was made with: `<path>#sha256:<16 hex>` per camera.

The reference is `inril_robot.hardware.calibration_file.calibration_ref`: the path plus a digest of the file.
"""

from __future__ import annotations

from inril_robot.config import RunConfig
from inril_robot.hardware.calibration_file import calibration_ref


def calibration_refs(cfg: RunConfig) -> dict[str, str]:
    """camera name -> reference, for the cameras configured with a calibration file."""
    return {c.name: calibration_ref(c.calibration) for c in cfg.cameras if c.calibration is not None}


def calibration_field(cfg: RunConfig) -> str | None:
    """The dataset.json `calibration` value: "front=<ref>,wrist=<ref>", or None without calibrated cameras."""
    return ",".join(f"{name}={ref}" for name, ref in calibration_refs(cfg).items()) or None
