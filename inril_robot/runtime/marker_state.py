"""`MarkerStateSource`: a task's object-state observation from fiducial markers, the same keys a state policy reads.

The seam between the env and `inril_robot.vision.markers`: it owns the marker cameras (`RunConfig.markers.cameras`,
not policy inputs), their calibrations (a calibration file with extrinsics; a simulated camera without one uses its
rendered truth), and a `MarkerTracker`. `RobotEnv` asks it for object poses instead of the simulator, so a state
policy trained on estimated poses in simulation runs unchanged on a real cell, where nothing else exists. Each
estimate carries its age and a lost flag (`estimates`). Torch-free: this runs on the robot PC.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inril_robot.config import CameraConfig, RunConfig
from inril_robot.core.errors import InrilError
from inril_robot.core.geometry import quat_to_matrix
from inril_robot.core.state import RobotState
from inril_robot.hardware import Camera, Robot
from inril_robot.hardware.calibration_file import load_calibration
from inril_robot.hardware.scene import Objects, SceneObject
from inril_robot.runtime.registry import make_cameras
from inril_robot.vision.markers import CameraModel, MarkerError, MarkerTracker, ObjectEstimate, with_markers


class MarkerLost(RuntimeError, InrilError):
    """An object's markers have not been seen by any camera since the episode began: there is no pose to observe."""


def scene_objects(cfg: RunConfig, objects: list[SceneObject]) -> list[SceneObject]:
    """The task's objects, with markers on them when `cfg.markers` is enabled (what the sim renders)."""
    m = cfg.markers
    return with_markers(objects, m.first_id, m.size, m.dictionary) if m.enabled else list(objects)


def camera_model(cam_cfg: CameraConfig, camera: Camera) -> CameraModel:
    """The calibration of a marker camera: its calibration file, or the simulator's truth for a simulated camera."""
    if cam_cfg.calibration is not None:
        calib = load_calibration(Path(cam_cfg.calibration))
        if calib.extrinsics is None:
            raise MarkerError(
                f"markers.cameras.{cam_cfg.name}: {cam_cfg.calibration} has no extrinsics; run "
                "`inril-robot calibrate hand-eye` for this camera first"
            )
        k = calib.intrinsics
        if (k.width, k.height) != (cam_cfg.width, cam_cfg.height):
            raise MarkerError(
                f"markers.cameras.{cam_cfg.name}: calibrated at {k.width}x{k.height}, streams "
                f"{cam_cfg.width}x{cam_cfg.height}; set width/height to the calibrated size"
            )
        return CameraModel(
            cam_cfg.name,
            k.matrix(),
            np.asarray(k.distortion, float),
            calib.extrinsics.matrix(),
            calib.extrinsics.parent_frame,
        )
    truth = getattr(camera, "calibration_truth", None)
    if truth is None:
        raise MarkerError(
            f"markers.cameras.{cam_cfg.name}: a real camera needs a calibration file (calibration: PATH) with "
            "extrinsics to place the markers it sees"
        )
    k, parent_from_cam, parent = truth()
    return CameraModel(cam_cfg.name, k.matrix(), np.asarray(k.distortion, float), parent_from_cam, parent)


def base_from_tcp(state: RobotState) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3] = quat_to_matrix(state.ee_quat)
    t[:3, 3] = state.ee_pos
    return t


class MarkerStateSource:
    def __init__(self, cfg: RunConfig, objects: list[SceneObject], robot: Robot) -> None:
        """`objects`: the scene objects with their markers (`scene_objects`); `robot`: what simulated cameras render."""
        m = cfg.markers
        if not m.cameras:
            raise MarkerError("markers.enabled needs at least one camera in markers.cameras")
        self.cameras = make_cameras(cfg, robot, m.cameras)
        for cam in self.cameras:
            cam.start()
        self.models = {c.name: camera_model(c, cam) for c, cam in zip(m.cameras, self.cameras, strict=True)}
        self.tracker = MarkerTracker(objects, self.models, m.dictionary, m.max_age_s)
        self.max_frame_age_s = 1.0 / cfg.robot.control_hz + 0.05
        self.estimates: dict[str, ObjectEstimate] = {}

    def reset(self) -> None:
        """A new episode: nothing seen yet (an old pose never leaks into it)."""
        self.tracker.reset()
        self.estimates = {}

    def read(self, state: RobotState) -> dict[str, ObjectEstimate]:
        """Detect in every camera's newest frame and fuse; each estimate has its age and lost flag."""
        frames = {}
        for cam in self.cameras:
            frame = cam.read_latest(max_age_s=self.max_frame_age_s)
            frames[cam.name] = (frame.image, float(getattr(frame, "received", 0.0) or frame.timestamp))
        self.estimates = self.tracker.update(frames, base_from_tcp(state))
        return self.estimates

    def object_poses(self, state: RobotState) -> Objects:
        """The latest pose of every tracked object (possibly old: see `estimates`); `MarkerLost` if one was never
        seen in this episode."""
        estimates = self.read(state)
        missing = [name for name in self.tracker.tracked if name not in estimates]
        if missing:
            raise MarkerLost(
                f"no camera has seen the markers of {', '.join(missing)} since the episode began "
                f"(cameras: {', '.join(self.models)}); check the cameras' view, lighting and the printed ids"
            )
        return {name: est.pose for name, est in estimates.items()}

    def close(self) -> None:
        for cam in self.cameras:
            cam.stop()
