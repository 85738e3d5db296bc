"""Ground truth of a simulated calibration: where MuJoCo actually put the camera, and its exact intrinsics.

The simulator's base frame is MuJoCo's world frame (the arm's base sits at the origin), so a static camera's truth
is its world pose; a wrist camera's is its pose in the TCP site's frame. Both in OpenCV's optical frame.
"""

from __future__ import annotations

import math

import numpy as np

from inril_robot.calibration.solve import invert, make_transform
from inril_robot.core.geometry import OPENCV_TO_MUJOCO


def camera_truth(world: object, camera: str) -> np.ndarray:
    """T_base_cam (static camera) or T_tcp_cam (wrist camera) of the simulated camera, OpenCV optical frame."""
    m, d = world.model, world.data  # type: ignore[attr-defined]
    cam = m.camera(camera).id
    t_world_cam = make_transform(d.cam_xmat[cam].reshape(3, 3) @ OPENCV_TO_MUJOCO, d.cam_xpos[cam])
    if m.cam_bodyid[cam] == 0:
        return t_world_cam
    pos, rot = world.tcp_pose()  # type: ignore[attr-defined]
    return invert(make_transform(rot, pos)) @ t_world_cam


def intrinsics_truth(world: object, camera: str, width: int, height: int) -> np.ndarray:
    """The rendered camera's K: fx = fy = (h/2) / tan(fovy/2), principal point at the image centre.

    OpenCV puts pixel centres at integer coordinates, OpenGL at half-integers: the centre is ((w-1)/2, (h-1)/2).
    """
    m = world.model  # type: ignore[attr-defined]
    f = 0.5 * height / math.tan(math.radians(float(m.cam_fovy[m.camera(camera).id])) / 2)
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])
