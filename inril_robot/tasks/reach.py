"""reach: bring the TCP within 2 cm of a target point that changes every episode."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from inril_robot.core.state import RobotState
from inril_robot.hardware.scene import Geom, ObjectPose, Objects, SceneObject
from inril_robot.tasks.base import Expert, Task

SUCCESS_DISTANCE = 0.02


class Reach(Task):
    name = "reach"
    state_keys: ClassVar[dict[str, tuple[int, ...]]] = {"target_pos": (3,)}

    def scene_objects(self) -> list[SceneObject]:
        marker = Geom("sphere", (0.015,), rgba=(0.1, 0.9, 0.2, 0.6), collides=False)
        return [SceneObject("target", (marker,), movable=False)]

    def sample_initial(self, rng: np.random.Generator) -> Objects:
        r = self.cfg.object_range
        pos = np.array([0.5, 0.0, 0.2]) + rng.uniform([-r, -r, -r / 2], [r, r, r])
        return {"target": ObjectPose(pos, np.array([0.0, 0.0, 0.0, 1.0]))}

    def _distance(self, state: RobotState, objects: Objects) -> float:
        return float(np.linalg.norm(state.ee_pos - objects["target"].pos))

    def success(self, state: RobotState, objects: Objects) -> bool:
        return self._distance(state, objects) < SUCCESS_DISTANCE

    def dense_reward(self, state: RobotState, objects: Objects) -> float:
        return float(1.0 - np.tanh(5.0 * self._distance(state, objects)))

    def expert_action(self, expert: Expert, state: RobotState, objects: Objects) -> np.ndarray:
        return expert.toward(state, objects["target"].pos, gripper=0.0)

    def object_observation(self, objects: Objects) -> dict[str, np.ndarray]:
        return {"target_pos": objects["target"].pos.astype(np.float32)}
