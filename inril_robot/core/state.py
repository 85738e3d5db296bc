"""What the arm reports each control step: the one value the envelope, the tasks and every driver share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RobotState:
    time: float  # seconds, the driver's clock (sim time in simulation)
    ee_pos: np.ndarray  # (3,) TCP position [m]
    ee_quat: np.ndarray  # (4,) TCP orientation, xyzw
    ee_vel: np.ndarray  # (6,) TCP linear [m/s] and angular [rad/s] velocity
    joint_pos: np.ndarray  # (7,) [rad]
    joint_vel: np.ndarray  # (7,) [rad/s]
    gripper_width: float  # distance between the fingers [m]
    ee_wrench: np.ndarray  # (6,) estimated external force [N] and torque [Nm] at the TCP, base frame

    def proprio(self) -> dict[str, np.ndarray]:
        """The proprioceptive observation keys every task shares.

        `ee_quat` is given in the hemisphere of the tool-down orientation (x >= 0), not with w >= 0 as `ee_quat`
        itself: tool-down has w = 0, so w >= 0 would flip the observed sign on numerical noise at the home pose."""
        quat = self.ee_quat if self.ee_quat[0] >= 0 else -self.ee_quat
        return {
            "ee_pos": self.ee_pos.astype(np.float32),
            "ee_quat": quat.astype(np.float32),
            "gripper_width": np.array([self.gripper_width], dtype=np.float32),
        }
