"""lift: grasp a 5 cm cube lying anywhere in a square region, at any yaw, and lift it 10 cm."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from inril_robot.core.state import RobotState
from inril_robot.hardware.scene import TABLE_TOP_Z, Geom, ObjectPose, Objects, SceneObject
from inril_robot.tasks.base import APPROACH, CLOSE, Expert, Task, grasp_phase_action, grasp_yaw, yaw_of

CUBE_HALF = 0.025
LIFT_HEIGHT = 0.10
LIFT = CLOSE + 1


class Lift(Task):
    name = "lift"
    state_keys: ClassVar[dict[str, tuple[int, ...]]] = {"cube_pos": (3,), "cube_quat": (4,)}

    def scene_objects(self) -> list[SceneObject]:
        cube = Geom("box", (CUBE_HALF,) * 3, rgba=(0.85, 0.15, 0.15, 1.0))
        return [SceneObject("cube", (cube,), movable=True, mass=0.1, friction=1.2)]

    def sample_initial(self, rng: np.random.Generator) -> Objects:
        x, y = self.sample_xy(rng, (0.5, 0.0))
        return {"cube": ObjectPose.at(x, y, TABLE_TOP_Z + CUBE_HALF, yaw=rng.uniform(-np.pi / 4, np.pi / 4))}

    def success(self, state: RobotState, objects: Objects) -> bool:
        return bool(objects["cube"].pos[2] > TABLE_TOP_Z + CUBE_HALF + LIFT_HEIGHT)

    def dense_reward(self, state: RobotState, objects: Objects) -> float:
        cube = objects["cube"].pos
        reach = 1.0 - np.tanh(10.0 * np.linalg.norm(state.ee_pos - cube))
        height = np.clip((cube[2] - TABLE_TOP_Z - CUBE_HALF) / LIFT_HEIGHT, 0.0, 1.0)
        return float(0.5 * reach + 0.49 * height)

    def expert_action(self, expert: Expert, state: RobotState, objects: Objects) -> np.ndarray:
        cube = objects["cube"]
        expert.counter += 1
        if expert.phase < LIFT:
            grasp = cube.pos + [0.0, 0.0, 0.005]
            action = grasp_phase_action(expert, state, grasp, grasp_yaw(state, yaw_of(cube.quat)), tolerance=0.008)
            if action is not None:
                return action
            expert.set_phase(LIFT)
        target = np.array([cube.pos[0], cube.pos[1], TABLE_TOP_Z + CUBE_HALF + LIFT_HEIGHT + 0.06])
        if state.gripper_width < 0.01:  # closed on nothing: the cube slipped, start over
            expert.set_phase(APPROACH)
            return expert.toward(state, state.ee_pos + [0, 0, 0.02], gripper=0.0)
        return expert.toward(state, target, gripper=1.0)

    def object_observation(self, objects: Objects) -> dict[str, np.ndarray]:
        cube = objects["cube"]
        return {"cube_pos": cube.pos.astype(np.float32), "cube_quat": cube.quat.astype(np.float32)}
