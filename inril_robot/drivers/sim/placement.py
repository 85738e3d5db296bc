"""Simulated cameras placed from calibration files, so that sim images are taken from the real viewpoint.

``cameras.<name>.calibration: PATH`` on a sim camera replaces its ``pos``/``lookat``/``fovy_deg`` by the file's:

- extrinsics -> the MuJoCo camera pose (in the world for a static camera, in the hand for a wrist camera). MuJoCo
  cameras look along their -z axis with y up; the file's camera frame is OpenCV's (z forward, y down), so the
  rotation gains a half turn about x;
- intrinsics -> the vertical field of view. The policy resolution stays the camera config's (it is part of the
  contract). A calibration taken at another aspect ratio is assumed centre-cropped to the config's aspect, then
  resized (what keeps pixels square): fovy = 2 atan(crop_height / (2 fy)).

A pinhole with fovy has fx = fy and the principal point at the image centre, and MuJoCo does not render lens
distortion: `placement_notes` reports how far the file is from that (undistort real images if it matters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from inril_robot.config import CameraConfig
from inril_robot.core.geometry import OPENCV_TO_MUJOCO, matrix_to_quat
from inril_robot.hardware.calibration_file import CalibrationFile, CalibrationFileError, load_calibration


@dataclass(frozen=True)
class SimCameraPlacement:
    pos: np.ndarray  # (3,) in the world (static camera) or the TCP frame (wrist camera)
    quat_wxyz: np.ndarray  # MuJoCo camera orientation, same parent frame
    fovy_deg: float
    position_sigma: float  # the calibration's one-sigma uncertainty [m], [rad]
    rotation_sigma: float
    notes: list[str] = field(default_factory=list)


def crop_height(calib: CalibrationFile, width: int, height: int) -> float:
    """Rows of the calibrated image that a centre crop to the aspect width:height keeps."""
    k = calib.intrinsics
    if k.width / k.height > width / height:
        return float(k.height)  # crop the sides
    return k.width * height / width  # crop top and bottom


def placement_from_calibration(calib: CalibrationFile, cam: CameraConfig) -> SimCameraPlacement:
    if calib.extrinsics is None:
        raise CalibrationFileError(
            f"camera {cam.name!r}: the calibration file has intrinsics only; a sim camera "
            "needs extrinsics too (run `inril-robot calibrate hand-eye`)"
        )
    if calib.mount != cam.mount:
        raise CalibrationFileError(
            f"camera {cam.name!r} is mount={cam.mount!r} but its calibration file is for a "
            f"{calib.mount!r}-mounted camera ({calib.camera!r})"
        )
    t = calib.extrinsics.matrix()
    rot_mj = t[:3, :3] @ OPENCV_TO_MUJOCO
    q = matrix_to_quat(rot_mj)
    k = calib.intrinsics
    fovy = math.degrees(2.0 * math.atan(crop_height(calib, cam.width, cam.height) / (2.0 * k.fy)))
    notes = []
    if abs(k.fx - k.fy) > 0.01 * k.fy:
        notes.append(f"fx {k.fx:.1f} and fy {k.fy:.1f} px differ by more than 1%; the sim camera uses fy")
    off = max(abs(k.cx - (k.width - 1) / 2) / k.width, abs(k.cy - (k.height - 1) / 2) / k.height)
    if off > 0.02:
        notes.append(
            f"principal point ({k.cx:.1f}, {k.cy:.1f}) is {off:.1%} of the image off centre; the sim "
            "camera's is centred"
        )
    if any(abs(d) > 1e-3 for d in k.distortion):
        notes.append("lens distortion is not rendered: undistort real images to match the sim")
    if abs(k.width / k.height - cam.width / cam.height) > 1e-3:
        notes.append(
            f"calibrated at {k.width}x{k.height}, policy images {cam.width}x{cam.height}: assumes a "
            "centre crop to the policy's aspect ratio, then a resize"
        )
    return SimCameraPlacement(
        t[:3, 3].copy(),
        np.array([q[3], q[0], q[1], q[2]]),
        fovy,
        calib.uncertainty.position_m,
        calib.uncertainty.rotation_rad,
        notes,
    )


def sim_camera_placement(cam: CameraConfig) -> SimCameraPlacement:
    if cam.calibration is None:
        raise ValueError(f"camera {cam.name!r} has no calibration file")
    return placement_from_calibration(load_calibration(cam.calibration), cam)
