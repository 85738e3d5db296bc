"""Simulated cameras placed from calibration files, so that sim images are taken from the real viewpoint.

``cameras.<name>.calibration: PATH`` on a sim camera replaces its ``pos``/``lookat``/``fovy_deg`` by the file's:

- extrinsics -> the MuJoCo camera pose (in the world for a static camera, in the hand for a wrist camera). MuJoCo
  cameras look along their -z axis with y up; the file's camera frame is OpenCV's (z forward, y down), so the
  rotation gains a half turn about x;
- intrinsics -> the capture (issue 19): the camera renders at the real camera's capture resolution (the file's, or
  ``cameras.<name>.capture`` scaled from it at the same aspect ratio) with the file's fx, fy, cx, cy, so a crop
  box in capture pixels selects the same part of the scene in sim and on the real camera. The camera pipeline
  (`inril_robot.vision.pipeline`) then crops and resizes to the policy resolution (the camera config's
  width x height, part of the contract). `fovy_deg` is the vertical field of view of that capture.

MuJoCo does not render lens distortion: `notes` says so when the file has any (undistort real images if it matters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from inril_robot.config import CameraConfig
from inril_robot.core.geometry import OPENCV_TO_MUJOCO, matrix_to_quat
from inril_robot.hardware import CameraIntrinsics
from inril_robot.hardware.calibration_file import CalibrationFile, CalibrationFileError, load_calibration


@dataclass(frozen=True)
class SimCameraPlacement:
    pos: np.ndarray  # (3,) in the world (static camera) or the TCP frame (wrist camera)
    quat_wxyz: np.ndarray  # MuJoCo camera orientation, same parent frame
    fovy_deg: float
    position_sigma: float  # the calibration's one-sigma uncertainty [m], [rad]
    rotation_sigma: float
    intrinsics: CameraIntrinsics  # at the capture resolution (what the simulator renders)
    notes: list[str] = field(default_factory=list)


def capture_intrinsics(calib: CalibrationFile, cam: CameraConfig) -> CameraIntrinsics:
    """The file's intrinsics at the camera's capture size: the file's own size, or `cam.capture` at the same aspect
    ratio (a RealSense mode of the same sensor area scales; another aspect ratio is another field of view)."""
    k = calib.intrinsics
    width, height = cam.capture or (k.width, k.height)
    if (width, height) == (k.width, k.height):
        return k.to_camera_intrinsics()
    if abs(width / height - k.width / k.height) > 1e-3:
        raise CalibrationFileError(
            f"camera {cam.name!r}: capture {width}x{height} has another aspect ratio than the calibration "
            f"({k.width}x{k.height}); calibrate at that mode or set cameras.{cam.name}.capture to "
            f"[{k.width}, {k.height}]"
        )
    s = width / k.width
    return CameraIntrinsics(
        width, height, k.fx * s, k.fy * s, (k.cx + 0.5) * s - 0.5, (k.cy + 0.5) * s - 0.5, tuple(k.distortion)
    )


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
    k = capture_intrinsics(calib, cam)
    fovy = math.degrees(2.0 * math.atan(k.height / (2.0 * k.fy)))
    notes = []
    if any(abs(d) > 1e-3 for d in k.distortion):
        notes.append("lens distortion is not rendered: undistort real images to match the sim")
    if cam.crop is None and abs(k.width / k.height - cam.width / cam.height) > 1e-3:
        notes.append(
            f"captured at {k.width}x{k.height}, policy images {cam.width}x{cam.height}: the pipeline takes a "
            "centre crop to the policy's aspect ratio, then resizes"
        )
    return SimCameraPlacement(
        t[:3, 3].copy(),
        np.array([q[3], q[0], q[1], q[2]]),
        fovy,
        calib.uncertainty.position_m,
        calib.uncertainty.rotation_rad,
        k,
        notes,
    )


def sim_camera_placement(cam: CameraConfig) -> SimCameraPlacement:
    if cam.calibration is None:
        raise ValueError(f"camera {cam.name!r} has no calibration file")
    return placement_from_calibration(load_calibration(cam.calibration), cam)
