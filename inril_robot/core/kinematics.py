"""Forward kinematics and geometric Jacobian of the Franka FR3 / Panda arm with the Franka Hand, in plain numpy.

The arm is described by Franka's published Craig-convention (modified) DH parameters; each joint's transform is
``RotX(alpha) @ TransX(a) @ RotZ(q) @ TransZ(d)``. The flange sits 0.107 m along joint 7's z axis; the Franka Hand
mounts on it rotated -45 deg about z, and its TCP (between the fingertips) is 0.1034 m further along z. Poses are in
the robot base frame: the frame the arm's `RobotState` reports and the MuJoCo world frame of `inril_robot.drivers.sim`.
"""

from __future__ import annotations

import numpy as np

#: (a [m], d [m], alpha [rad]) of joints 1..7, Craig convention
DH_PARAMS = np.array(
    [
        [0.0, 0.333, 0.0],
        [0.0, 0.0, -np.pi / 2],
        [0.0, 0.316, np.pi / 2],
        [0.0825, 0.0, np.pi / 2],
        [-0.0825, 0.384, -np.pi / 2],
        [0.0, 0.0, np.pi / 2],
        [0.088, 0.0, np.pi / 2],
    ]
)
FLANGE_D = 0.107
HAND_TCP_D = 0.1034
HAND_YAW = -np.pi / 4

#: FR3 joint position limits [rad], (7, 2) rows of (lower, upper); as in franky-sim's assets/fr3.xml
JOINT_LIMITS = np.array(
    [
        [-2.7437, 2.7437],
        [-1.7837, 1.7837],
        [-2.9007, 2.9007],
        [-3.0421, -0.1518],
        [-2.8065, 2.8065],
        [0.5445, 4.5169],
        [-3.0159, 3.0159],
    ]
)


def _craig(a: float, d: float, alpha: float, theta: float) -> np.ndarray:
    ca, sa, ct, st = np.cos(alpha), np.sin(alpha), np.cos(theta), np.sin(theta)
    return np.array(
        [
            [ct, -st, 0.0, a],
            [st * ca, ct * ca, -sa, -d * sa],
            [st * sa, ct * sa, ca, d * ca],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


_FLANGE_TO_TCP = _craig(0.0, FLANGE_D, 0.0, 0.0) @ _craig(0.0, HAND_TCP_D, 0.0, HAND_YAW)


def joint_frames(q: np.ndarray) -> list[np.ndarray]:
    """The 4x4 base-frame transforms of joint frames 1..7 (each frame's z axis is its joint axis) and the TCP."""
    q = np.asarray(q, dtype=np.float64)
    if q.shape != (7,):
        raise ValueError(f"joint positions must have shape (7,), got {q.shape}")
    frames = []
    t = np.eye(4)
    for (a, d, alpha), theta in zip(DH_PARAMS, q, strict=True):
        t = t @ _craig(a, d, alpha, theta)
        frames.append(t)
    frames.append(t @ _FLANGE_TO_TCP)
    return frames


def fk(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TCP position (3,) [m] and rotation matrix (3, 3) in the base frame for joint positions `q` (7,) [rad]."""
    tcp = joint_frames(q)[-1]
    return tcp[:3, 3].copy(), tcp[:3, :3].copy()


def jacobian(q: np.ndarray) -> np.ndarray:
    """Geometric Jacobian (6, 7) of the TCP in the base frame: rows are linear velocity, then angular velocity."""
    frames = np.stack(joint_frames(q))
    axes, origins, tcp = frames[:7, :3, 2], frames[:7, :3, 3], frames[7, :3, 3]
    return np.vstack([np.cross(axes, tcp - origins).T, axes.T])
