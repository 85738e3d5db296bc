"""`SimCamera`: offscreen MuJoCo rendering behind the `Camera` interface (one renderer per camera)."""

from __future__ import annotations

import math

import mujoco
import numpy as np

from inril_robot.config import CameraConfig
from inril_robot.core.geometry import OPENCV_TO_MUJOCO
from inril_robot.drivers.sim.world import SimWorld
from inril_robot.hardware import Camera, CameraIntrinsics, Frame, StaleFrameError


class SimCamera(Camera):
    def __init__(self, cfg: CameraConfig, world: SimWorld) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.world = world
        self._renderer: mujoco.Renderer | None = None
        self._frame_number = 0
        self._last: Frame | None = None
        self._rendered_at: tuple[int, float] | None = None  # (scene generation, sim time) of `_last`

    def start(self) -> None:
        if self._renderer is None:
            width, height = self.capture
            self._renderer = mujoco.Renderer(self.world.model, height=height, width=width)

    def read_latest(self, max_age_s: float = 0.2) -> Frame:
        """Render the scene as it is now; at most once per sim instant and scene change."""
        if self._renderer is None:
            raise RuntimeError(f"camera {self.name!r} is not started")
        now = float(self.world.data.time)
        key = (self.world.generation, now)
        if self._last is None or self._rendered_at != key:
            self._renderer.update_scene(self.world.data, camera=self.name)
            self._frame_number += 1
            self._last = Frame(self._renderer.render().copy(), now, self._frame_number)
            self._rendered_at = key
        age = now - self._last.timestamp
        if age > max_age_s:
            raise StaleFrameError(f"camera {self.name!r}: newest frame is {age:.3f} s old (> {max_age_s} s)")
        return self._last

    @property
    def capture(self) -> tuple[int, int]:
        """(width, height) rendered: the real camera's capture size (issue 19), not the policy's."""
        return self.world.camera_capture.get(self.name, (self.cfg.width, self.cfg.height))

    @property
    def intrinsics(self) -> CameraIntrinsics:
        """Of the rendered (capture) image: the calibration file's, or the pinhole of cfg.fovy_deg."""
        if self.name in self.world.camera_intrinsics:
            return self.world.camera_intrinsics[self.name]
        m = self.world.model
        width, height = self.capture
        fy = 0.5 * height / math.tan(math.radians(float(m.cam_fovy[m.camera(self.name).id])) / 2)
        return CameraIntrinsics(width, height, fy, fy, (width - 1) / 2, (height - 1) / 2)

    def calibration_truth(self) -> tuple[CameraIntrinsics, np.ndarray, str]:
        """What a perfect calibration of this camera gives: OpenCV intrinsics (pixel centres at integers: the
        principal point is ((w-1)/2, (h-1)/2)), the camera's OpenCV optical frame in its parent (4x4), and the
        parent ("base" for a static camera, "tcp" for one on the hand)."""
        w = self.world
        m, d = w.model, w.data
        k = self.intrinsics
        cam = m.camera(self.name).id
        world_from_cam = np.eye(4)
        world_from_cam[:3, :3] = d.cam_xmat[cam].reshape(3, 3) @ OPENCV_TO_MUJOCO
        world_from_cam[:3, 3] = d.cam_xpos[cam]
        k = CameraIntrinsics(k.width, k.height, k.fx, k.fy, (k.width - 1) / 2, (k.height - 1) / 2)
        if m.cam_bodyid[cam] == 0:
            return k, world_from_cam, "base"
        pos, rot = w.tcp_pose()
        world_from_tcp = np.eye(4)
        world_from_tcp[:3, :3], world_from_tcp[:3, 3] = rot, pos
        return k, np.linalg.inv(world_from_tcp) @ world_from_cam, "tcp"

    def stop(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
