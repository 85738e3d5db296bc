"""The task's scripted expert, presented as a teleop: demonstrations in simulation without an operator."""

from __future__ import annotations

from typing import TYPE_CHECKING

from inril_robot.hardware import Teleop, TeleopCommand

if TYPE_CHECKING:
    from inril_robot.env import RobotEnv


class ScriptedTeleop(Teleop):
    """`read()` is `env.expert_action()` as a command: delta pose and an absolute gripper on every read.

    It never keeps or discards: in simulation the collect loop decides by success. The expert needs object poses,
    so this works on the simulated robot only, after `env.reset()`.
    """

    def __init__(self, env: RobotEnv) -> None:
        self.env = env

    def read(self) -> TeleopCommand:
        action = self.env.expert_action()
        return TeleopCommand(delta_pos=action[:3].copy(), delta_rot=action[3:6].copy(), gripper=float(action[6]))
