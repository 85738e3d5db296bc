"""peg: pick up a square peg standing on the table and insert it into a square hole in a fixture.

The long-horizon, contact-rich task: grasp, lift, carry, align (using where the peg is in the hand, not where the
hand is), and insert with 4 mm of clearance per side.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from inril_robot.core.geometry import quat_to_matrix
from inril_robot.core.state import RobotState
from inril_robot.hardware.scene import TABLE_TOP_Z, Geom, ObjectPose, Objects, SceneObject
from inril_robot.tasks.base import (
    APPROACH,
    CLOSE,
    Expert,
    Task,
    closing_axis_yaw,
    grasp_phase_action,
    grasp_yaw,
    yaw_of,
)

PEG_HALF_WIDTH = 0.012
PEG_HALF_HEIGHT = 0.04
HOLE_HALF_WIDTH = PEG_HALF_WIDTH + 0.004
FIXTURE_HEIGHT = 0.04
WALL = 0.03  # wall thickness of the fixture
INSERTED_DEPTH = 0.02  # success: the peg's bottom is this far below the fixture's top
ALIGN_TOLERANCE = 0.003
LIFT, CARRY, INSERT, RELEASE = range(CLOSE + 1, CLOSE + 5)


def fixture_geoms() -> tuple[Geom, ...]:
    h = FIXTURE_HEIGHT / 2
    outer = HOLE_HALF_WIDTH + WALL
    colour = (0.35, 0.35, 0.4, 1.0)
    offset = HOLE_HALF_WIDTH + WALL / 2
    return (
        Geom("box", (outer, WALL / 2, h), pos=(0.0, offset, h), rgba=colour),
        Geom("box", (outer, WALL / 2, h), pos=(0.0, -offset, h), rgba=colour),
        Geom("box", (WALL / 2, HOLE_HALF_WIDTH, h), pos=(offset, 0.0, h), rgba=colour),
        Geom("box", (WALL / 2, HOLE_HALF_WIDTH, h), pos=(-offset, 0.0, h), rgba=colour),
    )


class Peg(Task):
    name = "peg"
    state_keys: ClassVar[dict[str, tuple[int, ...]]] = {"peg_pos": (3,), "peg_quat": (4,), "hole_pos": (3,)}

    def scene_objects(self) -> list[SceneObject]:
        peg = Geom("box", (PEG_HALF_WIDTH, PEG_HALF_WIDTH, PEG_HALF_HEIGHT), rgba=(0.9, 0.6, 0.1, 1.0))
        return [
            SceneObject("peg", (peg,), movable=True, mass=0.05, friction=1.0),
            SceneObject("fixture", fixture_geoms(), movable=False, friction=0.3),
        ]

    def sample_initial(self, rng: np.random.Generator) -> Objects:
        px, py = self.sample_xy(rng, (0.48, -0.10))
        hx, hy = self.sample_xy(rng, (0.55, 0.12))
        return {
            "peg": ObjectPose.at(px, py, TABLE_TOP_Z + PEG_HALF_HEIGHT, yaw=rng.uniform(-np.pi / 4, np.pi / 4)),
            "fixture": ObjectPose.at(hx, hy, TABLE_TOP_Z),
        }

    def _insertion(self, objects: Objects) -> tuple[float, float]:
        """(xy misalignment, depth of the peg's bottom below the fixture's top) [m]."""
        peg, hole = objects["peg"].pos, objects["fixture"].pos
        misalignment = float(np.linalg.norm(peg[:2] - hole[:2]))
        depth = float(hole[2] + FIXTURE_HEIGHT - (peg[2] - PEG_HALF_HEIGHT))
        return misalignment, depth

    def success(self, state: RobotState, objects: Objects) -> bool:
        misalignment, depth = self._insertion(objects)
        return misalignment < HOLE_HALF_WIDTH and depth > INSERTED_DEPTH

    def dense_reward(self, state: RobotState, objects: Objects) -> float:
        misalignment, depth = self._insertion(objects)
        reach = 1.0 - np.tanh(10.0 * np.linalg.norm(state.ee_pos - objects["peg"].pos))
        align = 1.0 - np.tanh(10.0 * misalignment)
        insert = np.clip(depth / INSERTED_DEPTH, 0.0, 1.0) * (misalignment < HOLE_HALF_WIDTH)
        return float(0.2 * reach + 0.4 * align + 0.39 * insert)

    def expert_action(self, expert: Expert, state: RobotState, objects: Objects) -> np.ndarray:
        peg, hole = objects["peg"], objects["fixture"].pos
        expert.counter += 1
        if expert.phase < LIFT:
            grasp = peg.pos + [0.0, 0.0, PEG_HALF_HEIGHT - 0.02]
            action = grasp_phase_action(expert, state, grasp, grasp_yaw(state, yaw_of(peg.quat)), tolerance=0.006)
            if action is not None:
                return action
            expert.set_phase(LIFT)

        if state.gripper_width < 0.005 and expert.phase != RELEASE:  # lost the peg: start over
            expert.set_phase(APPROACH)
            return expert.toward(state, state.ee_pos + [0, 0, 0.03], gripper=0.0)
        # square peg into square hole: turn so the peg's faces line up with the hole's (yaw 0 mod 90 deg)
        yaw_fix = -((yaw_of(peg.quat) + np.pi / 4) % (np.pi / 2) - np.pi / 4)
        yaw = closing_axis_yaw(quat_to_matrix(state.ee_quat)) + yaw_fix
        offset = state.ee_pos - peg.pos  # where the peg sits in the hand, re-measured every step
        carry_z = hole[2] + FIXTURE_HEIGHT + 0.03 + PEG_HALF_HEIGHT
        if expert.phase == LIFT:
            if peg.pos[2] > carry_z - 0.01:
                expert.set_phase(CARRY)
            return expert.toward(state, np.append(state.ee_pos[:2], carry_z) + [0, 0, offset[2]], 1.0, yaw=yaw)
        if expert.phase == CARRY:
            target = np.append(hole[:2], carry_z) + offset
            if np.linalg.norm(peg.pos[:2] - hole[:2]) < ALIGN_TOLERANCE and abs(yaw_fix) < 0.05:
                expert.set_phase(INSERT)
            return expert.toward(state, target, gripper=1.0, yaw=yaw, max_step=0.015)
        if expert.phase == INSERT:
            bottom_z = hole[2] + FIXTURE_HEIGHT - INSERTED_DEPTH - 0.01 + PEG_HALF_HEIGHT
            target = np.append(hole[:2], bottom_z) + offset
            if peg.pos[2] < bottom_z + 0.004 or expert.counter > 30:
                expert.set_phase(RELEASE)
            return expert.toward(state, target, gripper=1.0, yaw=yaw, max_step=0.01)
        return expert.toward(state, state.ee_pos + [0.0, 0.0, 0.01], gripper=0.0)

    def object_observation(self, objects: Objects) -> dict[str, np.ndarray]:
        return {
            "peg_pos": objects["peg"].pos.astype(np.float32),
            "peg_quat": objects["peg"].quat.astype(np.float32),
            "hole_pos": objects["fixture"].pos.astype(np.float32),
        }
