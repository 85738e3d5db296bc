"""push: push a cube across the table until it is within 3 cm of a target spot (the gripper stays closed)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from inril_robot.core.state import RobotState
from inril_robot.hardware.scene import TABLE_TOP_Z, Geom, ObjectPose, Objects, SceneObject
from inril_robot.tasks.base import Expert, Task, grasp_yaw

CUBE_HALF = 0.025
SUCCESS_DISTANCE = 0.03
PUSH_HEIGHT = TABLE_TOP_Z + 0.02  # TCP height while pushing
STANDOFF = CUBE_HALF + 0.03  # TCP distance behind the cube centre before a push
REPOSITION, LOWER, PUSH = range(3)


class Push(Task):
    name = "push"
    state_keys: ClassVar[dict[str, tuple[int, ...]]] = {"cube_pos": (3,), "cube_quat": (4,), "target_pos": (3,)}

    def scene_objects(self) -> list[SceneObject]:
        cube = Geom("box", (CUBE_HALF,) * 3, rgba=(0.15, 0.35, 0.85, 1.0))
        spot = Geom("cylinder", (SUCCESS_DISTANCE, 0.001), rgba=(0.1, 0.9, 0.2, 0.5), collides=False)
        return [
            SceneObject("cube", (cube,), movable=True, mass=0.2, friction=0.6),
            SceneObject("target", (spot,), movable=False),
        ]

    def sample_initial(self, rng: np.random.Generator) -> Objects:
        cx, cy = self.sample_xy(rng, (0.5, -0.08))
        tx, ty = self.sample_xy(rng, (0.5, 0.10))
        return {
            "cube": ObjectPose.at(cx, cy, TABLE_TOP_Z + CUBE_HALF, yaw=rng.uniform(-np.pi / 4, np.pi / 4)),
            "target": ObjectPose.at(tx, ty, TABLE_TOP_Z + 0.001),
        }

    def _distance(self, objects: Objects) -> float:
        return float(np.linalg.norm(objects["cube"].pos[:2] - objects["target"].pos[:2]))

    def success(self, state: RobotState, objects: Objects) -> bool:
        return self._distance(objects) < SUCCESS_DISTANCE

    def dense_reward(self, state: RobotState, objects: Objects) -> float:
        cube = objects["cube"].pos
        reach = 1.0 - np.tanh(10.0 * np.linalg.norm(state.ee_pos - cube))
        return float(0.3 * reach + 0.69 * (1.0 - np.tanh(5.0 * self._distance(objects))))

    def expert_action(self, expert: Expert, state: RobotState, objects: Objects) -> np.ndarray:
        cube, target = objects["cube"].pos, objects["target"].pos
        direction = target[:2] - cube[:2]
        direction /= max(np.linalg.norm(direction), 1e-6)
        behind = np.append(cube[:2] - STANDOFF * direction, PUSH_HEIGHT)
        tcp_xy = state.ee_pos[:2]
        # lateral offset of the TCP from the cube-target line, and how far behind the cube it is
        rel = tcp_xy - cube[:2]
        along = float(rel @ direction)
        lateral = float(abs(rel[0] * direction[1] - rel[1] * direction[0]))
        # closing axis along the push (fingers side by side); the hand is symmetric under a half turn, so take the
        # nearest equivalent yaw: never wind joint 7 towards its limit
        yaw = grasp_yaw(state, float(np.arctan2(direction[1], direction[0])), symmetry=np.pi)
        if expert.phase == PUSH and (lateral > 0.012 or along > -CUBE_HALF):
            expert.set_phase(REPOSITION)
        if expert.phase == REPOSITION:
            hover = behind + [0.0, 0.0, 0.07]
            far = np.linalg.norm(state.ee_pos[:2] - hover[:2])
            if far < 0.008:
                expert.set_phase(LOWER)
            if far > 0.02 and state.ee_pos[2] < hover[2] - 0.02:  # rise first: never sweep through the cube
                return expert.toward(state, np.append(tcp_xy, hover[2]), gripper=1.0, yaw=yaw)
            return expert.toward(state, hover, gripper=1.0, yaw=yaw)
        if expert.phase == LOWER:
            if abs(state.ee_pos[2] - PUSH_HEIGHT) < 0.008:
                expert.set_phase(PUSH)
            return expert.toward(state, behind, gripper=1.0, yaw=yaw)
        goal = np.append(target[:2] - (CUBE_HALF + 0.01) * direction, PUSH_HEIGHT)
        # steer: aim at the point behind the cube on the line to the target, then along it
        aim = np.append(cube[:2] - (CUBE_HALF + 0.005) * direction, PUSH_HEIGHT)
        waypoint = goal if lateral < 0.006 else aim + np.append(0.01 * direction, 0.0)
        return expert.toward(state, waypoint, gripper=1.0, yaw=yaw, max_step=0.015)

    def object_observation(self, objects: Objects) -> dict[str, np.ndarray]:
        return {
            "cube_pos": objects["cube"].pos.astype(np.float32),
            "cube_quat": objects["cube"].quat.astype(np.float32),
            "target_pos": objects["target"].pos.astype(np.float32),
        }
