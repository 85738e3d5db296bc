"""Rotation helpers in plain numpy. Quaternions are xyzw (the project's convention)."""

from __future__ import annotations

import numpy as np

# camera axes: OpenCV's (x right, y down, z forward) -> MuJoCo's (x right, y up, z back): a half turn about x
OPENCV_TO_MUJOCO = np.diag([1.0, -1.0, -1.0])


def skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def rotvec_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    rotvec = np.asarray(rotvec, dtype=np.float64)
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.eye(3) + skew(rotvec)
    k = skew(rotvec / angle)
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def matrix_to_rotvec(rot: np.ndarray) -> np.ndarray:
    return quat_to_rotvec(matrix_to_quat(rot))


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit-normalised quaternion (xyzw) -> rotation matrix. Rescaled by its largest entry first, so that huge
    entries do not overflow the norm (the safety envelope passes arbitrary recorded states through here)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.max(np.abs(q))
    x, y, z, w = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quat(rot: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion xyzw with w >= 0 (Shepperd's method, stable for all angles)."""
    m = np.asarray(rot, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = np.array([(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s])
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = np.array([0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s])
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = np.array([(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s])
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = np.array([(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s])
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    sin_half = np.linalg.norm(q[:3])
    if sin_half < 1e-12:
        return 2.0 * q[:3]
    angle = 2.0 * np.arctan2(sin_half, q[3])
    return q[:3] / sin_half * angle


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Rotation vector, base frame, that takes orientation `current` to `target` (both 3x3): log(target @ current.T)."""
    return matrix_to_rotvec(np.asarray(target) @ np.asarray(current).T)


def wrap_angle(angle: float, period: float = 2 * np.pi) -> float:
    """Wrap into [-period/2, period/2)."""
    return float((angle + period / 2) % period - period / 2)


def top_down_rotation(closing_axis_yaw: float) -> np.ndarray:
    """Gripper pointing straight down (tool z = -world z) with its closing (y) axis at `closing_axis_yaw`."""
    y = np.array([np.cos(closing_axis_yaw), np.sin(closing_axis_yaw), 0.0])
    z = np.array([0.0, 0.0, -1.0])
    return np.column_stack([np.cross(y, z), y, z])
