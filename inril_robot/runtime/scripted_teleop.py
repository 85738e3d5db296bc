"""The task's scripted expert, presented as a teleop: demonstrations in simulation without an operator."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from inril_robot.hardware import Teleop, TeleopCommand


class ExpertSource(Protocol):
    """What the scripted teleop needs from `inril_robot.runtime.env.RobotEnv`: drivers never import the env layer."""

    def expert_action(self) -> np.ndarray: ...


class ScriptedTeleop(Teleop):
    """`read()` is `env.expert_action()` as a command: delta pose and an absolute gripper on every read.

    It never keeps or discards: in simulation the collect loop decides by success. The expert needs object poses,
    so this works on the simulated robot only, after `env.reset()`.
    """

    def __init__(self, env: ExpertSource) -> None:
        self.env = env

    def read(self) -> TeleopCommand:
        action = self.env.expert_action()
        return TeleopCommand(delta_pos=action[:3].copy(), delta_rot=action[3:6].copy(), gripper=float(action[6]))
