"""Shadow mode: the default on a real robot. Everything runs — policy, envelope, logging — but the arm holds.

`ShadowRobot` wraps any `Robot`: `apply()` records the action it was given and commands `hold()` instead, so a dry
run on the real arm exercises the same code path as a live one without moving it. Commands that move the real arm
take `--execute` to opt out (ResiP's real-robot scripts use the same convention).
"""

from __future__ import annotations

import numpy as np

from inril_robot.core.state import RobotState
from inril_robot.hardware import Robot


class ShadowRobot(Robot):
    def __init__(self, inner: Robot, keep_last: int = 10_000) -> None:
        self.inner = inner
        self.keep_last = keep_last
        self.shadow_actions: list[np.ndarray] = []

    def connect(self) -> None:
        self.inner.connect()

    def state(self) -> RobotState:
        return self.inner.state()

    def apply(self, action: np.ndarray) -> None:
        self.shadow_actions.append(np.array(action, dtype=np.float64))
        if len(self.shadow_actions) > self.keep_last:
            del self.shadow_actions[: -self.keep_last]
        self.inner.hold()

    def hold(self) -> None:
        self.inner.hold()

    def home(self) -> None:
        """Homing moves the arm, so in shadow mode it is skipped: the episode starts wherever the arm is."""

    def stop(self) -> None:
        self.inner.stop()

    def recover(self) -> None:
        self.inner.recover()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> object:
        # sim-only scene access (set_objects, object_poses, sim) passes through, so a shadow run in sim still scores
        return getattr(self.inner, name)
