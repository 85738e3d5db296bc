"""The calibration file: one camera's intrinsics and (optionally) its extrinsics, versioned YAML.

Frames. The camera frame is OpenCV's optical frame (x right, y down, z forward along the optical axis). Extrinsics
give the camera frame in ``extrinsics.parent_frame``: ``base`` (the robot base frame, for a static camera;
eye-to-hand) or ``tcp`` (the frame of ``RobotState.ee_pos/ee_quat``, for a wrist camera; eye-in-hand), as
``position`` [m] and ``quaternion_xyzw``: ``p_parent = R(q) @ p_camera + position``.

Datasets and checkpoints name the calibration they were made with by `calibration_ref` (path plus a digest of the
file's bytes), so a re-calibrated camera is told apart from the one a policy was trained with.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inril_robot.core.atomic import atomic_open
from inril_robot.core.errors import ConfigError
from inril_robot.core.geometry import matrix_to_quat, quat_to_matrix
from inril_robot.core.models import format_validation_error
from inril_robot.hardware import CameraIntrinsics

SCHEMA_VERSION = 1
FILE_KIND = "inril-robot camera calibration"


class CalibrationFileError(ConfigError):
    """A calibration file is missing, not YAML, of another schema version, or has an invalid field (named)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Intrinsics(_Model):
    width: Annotated[int, Field(ge=1)]
    height: Annotated[int, Field(ge=1)]
    fx: Annotated[float, Field(gt=0)]
    fy: Annotated[float, Field(gt=0)]
    cx: float
    cy: float
    distortion: list[float] = Field(default_factory=list, description="OpenCV order: k1, k2, p1, p2[, k3, ...]")
    source: Literal["device", "charuco", "sim"] = "charuco"
    rms_px: float | None = None  # calibrateCamera's RMS reprojection error (charuco only)

    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def to_camera_intrinsics(self) -> CameraIntrinsics:
        return CameraIntrinsics(self.width, self.height, self.fx, self.fy, self.cx, self.cy, tuple(self.distortion))

    @classmethod
    def from_camera_intrinsics(cls, k: CameraIntrinsics, source: Literal["device", "sim"]) -> Intrinsics:
        return cls(
            width=k.width,
            height=k.height,
            fx=k.fx,
            fy=k.fy,
            cx=k.cx,
            cy=k.cy,
            distortion=list(k.distortion),
            source=source,
        )


class Extrinsics(_Model):
    parent_frame: Literal["base", "tcp"]
    position: tuple[float, float, float]
    quaternion_xyzw: tuple[float, float, float, float]
    method: str = ""

    @field_validator("quaternion_xyzw")
    @classmethod
    def _unit(cls, q: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        norm = math.sqrt(sum(v * v for v in q))
        if not abs(norm - 1.0) <= 1e-3:
            raise ValueError(f"must be a unit quaternion (xyzw), got norm {norm:.6g}")
        return tuple(v / norm for v in q)  # type: ignore[return-value]

    def matrix(self) -> np.ndarray:
        """4x4 transform camera frame -> parent frame."""
        t = np.eye(4)
        t[:3, :3] = quat_to_matrix(np.array(self.quaternion_xyzw))
        t[:3, 3] = self.position
        return t

    @classmethod
    def from_matrix(cls, t: np.ndarray, parent_frame: Literal["base", "tcp"], method: str = "") -> Extrinsics:
        q = matrix_to_quat(t[:3, :3])
        return cls(
            parent_frame=parent_frame,
            position=tuple(float(v) for v in t[:3, 3]),  # type: ignore[arg-type]
            quaternion_xyzw=tuple(float(v) for v in q),
            method=method,
        )  # type: ignore[arg-type]


class Uncertainty(_Model):
    """One-sigma estimates (leave-one-pose-out jackknife for the extrinsics, OpenCV's for the intrinsics)."""

    position_m: Annotated[float, Field(ge=0)] = 0.0
    rotation_rad: Annotated[float, Field(ge=0)] = 0.0
    fx_px: Annotated[float, Field(ge=0)] = 0.0
    fy_px: Annotated[float, Field(ge=0)] = 0.0


class PoseResidual(_Model):
    index: int
    reprojection_rms_px: float
    translation_m: float
    rotation_rad: float
    corners: int
    outlier: bool = False


class Residuals(_Model):
    reprojection_rms_px: float | None = None
    per_pose: list[PoseResidual] = Field(default_factory=list)
    outliers: list[int] = Field(default_factory=list)
    method_comparison: dict[str, dict[str, float]] = Field(default_factory=dict)


class CalibrationFile(_Model):
    schema_version: int = SCHEMA_VERSION
    kind: Literal["inril-robot camera calibration"] = FILE_KIND
    camera: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    serial: str | None = None
    mount: Literal["world", "wrist"] = "world"
    intrinsics: Intrinsics
    extrinsics: Extrinsics | None = None
    uncertainty: Uncertainty = Uncertainty()
    residuals: Residuals = Residuals()
    board: dict[str, Any] = Field(default_factory=dict)
    created: str = Field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    robot: dict[str, Any] = Field(default_factory=dict)
    camera_config: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)

    def expected_parent(self) -> str:
        return "tcp" if self.mount == "wrist" else "base"


def save_calibration(calib: CalibrationFile, path: str | Path) -> Path:
    path = Path(path)
    text = yaml.safe_dump(calib.model_dump(mode="json"), sort_keys=False)
    with atomic_open(path, "w") as f:
        f.write(f"# {FILE_KIND}, schema {SCHEMA_VERSION}: camera frame = OpenCV optical (x right, y down, z forward)\n")
        f.write(text)
    return path


def load_calibration(path: str | Path) -> CalibrationFile:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CalibrationFileError(f"calibration file not found: {path}") from None
    except yaml.YAMLError as e:
        raise CalibrationFileError(f"calibration file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise CalibrationFileError(f"calibration file {path} must hold a mapping, got {type(data).__name__}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise CalibrationFileError(
            f"calibration file {path}: schema_version {version!r} is not the supported {SCHEMA_VERSION}"
        )
    try:
        calib = CalibrationFile.model_validate(data)
    except ValidationError as e:
        text = format_validation_error(e, CalibrationFile).replace("invalid configuration", "invalid fields")
        raise CalibrationFileError(f"calibration file {path}: {text}") from None
    if calib.extrinsics is not None and calib.extrinsics.parent_frame != calib.expected_parent():
        raise CalibrationFileError(
            f"calibration file {path}: extrinsics.parent_frame is "
            f"{calib.extrinsics.parent_frame!r} but a {calib.mount}-mounted camera needs "
            f"{calib.expected_parent()!r}"
        )
    return calib


def calibration_ref(path: str | Path) -> str:
    """``<path>#sha256:<first 16 hex>``: what datasets and checkpoints record (`inril_robot.data.provenance`).

    A digest, not just the path: a calibration file re-solved in place must not pass for the one the data was taken
    with."""
    path = Path(path)
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except FileNotFoundError:
        raise CalibrationFileError(f"calibration file not found: {path}") from None
    return f"{path}#sha256:{digest}"


class _CameraCapture(Protocol):  # the fields of `inril_robot.config.CameraConfig` that decide the capture size
    width: int
    height: int
    capture: tuple[int, int] | None
    calibration: str | None


def capture_size(cam: _CameraCapture) -> tuple[int, int]:
    """(width, height) a camera streams or renders at (issue 19): `capture`, else its calibration file's size (the
    mode it was calibrated at), else the policy's width x height (no resize)."""
    if cam.capture is not None:
        return cam.capture
    if cam.calibration is not None:
        k = load_calibration(cam.calibration).intrinsics
        return k.width, k.height
    return cam.width, cam.height
