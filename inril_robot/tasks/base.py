"""What a task is: the objects it needs, how an episode starts, when it succeeds, and how an expert solves it.

Tasks know nothing about MuJoCo: they describe their objects declaratively (`SceneObject`) and read object poses
as plain arrays, so the same reward/success code scores a simulated run and, where poses are known, a real one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from inril_robot.config import RandomizationConfig, TaskConfig
from inril_robot.core.geometry import quat_to_matrix, rotation_error, top_down_rotation, wrap_angle
from inril_robot.core.state import RobotState
from inril_robot.hardware.scene import ObjectPose, Objects, SceneObject


@dataclass
class Expert:
    """A scripted expert's running state; tasks turn (robot state, object poses) into actions with `toward`.

    `noise` adds Gaussian noise to the translation, as a fraction of `max_step`, so demonstrations can be made
    deliberately suboptimal (IL should leave RL room to improve).
    """

    noise: float
    max_step: float
    max_rot_step: float
    rng: np.random.Generator
    phase: int = 0
    counter: int = 0
    memory: dict[str, Any] = field(default_factory=dict)

    def toward(
        self,
        state: RobotState,
        target: np.ndarray,
        gripper: float,
        yaw: float | None = None,
        gain: float = 1.0,
        max_step: float | None = None,
    ) -> np.ndarray:
        """Action moving the TCP towards `target` (capped), turning a top-down gripper to closing-axis `yaw`."""
        cap = self.max_step if max_step is None else min(max_step, self.max_step)
        delta = gain * (np.asarray(target, dtype=np.float64) - state.ee_pos)
        norm = float(np.linalg.norm(delta))
        if norm > cap:
            delta *= cap / norm
        if self.noise > 0:
            delta = delta + self.rng.normal(0.0, self.noise * self.max_step, 3)
        current = quat_to_matrix(state.ee_quat)
        if yaw is None:
            yaw = closing_axis_yaw(current)
        rot = rotation_error(top_down_rotation(yaw), current)
        angle = float(np.linalg.norm(rot))
        if angle > self.max_rot_step:
            rot *= self.max_rot_step / angle
        return np.concatenate([delta, rot, [gripper]])

    def set_phase(self, phase: int) -> None:
        self.phase, self.counter = phase, 0


APPROACH, DESCEND, CLOSE = range(3)  # the grasp phases every picking expert starts with; tasks number theirs after


def grasp_phase_action(
    expert: Expert,
    state: RobotState,
    grasp: np.ndarray,
    yaw: float,
    tolerance: float,
    close_steps: int = 5,
    clearance: float = 0.08,
) -> np.ndarray | None:
    """Approach `clearance` above `grasp`, descend, close for `close_steps` steps. None once the grasp is done."""
    if expert.phase == APPROACH:
        above = grasp + [0.0, 0.0, clearance]
        if np.linalg.norm(state.ee_pos[:2] - above[:2]) < tolerance and abs(state.ee_pos[2] - above[2]) < 0.03:
            expert.set_phase(DESCEND)
        return expert.toward(state, above, gripper=0.0, yaw=yaw)
    if expert.phase == DESCEND:
        if np.linalg.norm(state.ee_pos - grasp) < tolerance:
            expert.set_phase(CLOSE)
        return expert.toward(state, grasp, gripper=0.0, yaw=yaw)
    if expert.phase == CLOSE and expert.counter <= close_steps:
        return expert.toward(state, grasp, gripper=1.0, yaw=yaw)
    return None


def closing_axis_yaw(rot: np.ndarray) -> float:
    """Yaw of the gripper's closing (y) axis in the base frame."""
    return float(np.arctan2(rot[1, 1], rot[0, 1]))


def grasp_yaw(state: RobotState, object_yaw: float, symmetry: float = np.pi / 2) -> float:
    """Closing-axis yaw perpendicular to a face of an object with `symmetry`, nearest the current gripper yaw."""
    current = closing_axis_yaw(quat_to_matrix(state.ee_quat))
    return current + wrap_angle(object_yaw - current, symmetry)


class Task(ABC):
    name: str
    #: privileged object-state observation keys and their shapes (sim / motion capture only)
    state_keys: ClassVar[dict[str, tuple[int, ...]]] = {}

    def __init__(self, cfg: TaskConfig) -> None:
        self.cfg = cfg

    @property
    def privileged_keys(self) -> frozenset[str]:
        """Observation keys only the simulator knows (issue 19): a real-like cell never observes or records them."""
        return frozenset(self.state_keys)

    @abstractmethod
    def scene_objects(self) -> list[SceneObject]: ...

    @abstractmethod
    def sample_initial(self, rng: np.random.Generator) -> Objects:
        """Randomised initial poses of every scene object for a new episode."""

    @abstractmethod
    def success(self, state: RobotState, objects: Objects) -> bool: ...

    @abstractmethod
    def dense_reward(self, state: RobotState, objects: Objects) -> float:
        """A shaped reward in [0, 1) for `reward: dense`; success adds 1."""

    @abstractmethod
    def expert_action(self, expert: Expert, state: RobotState, objects: Objects) -> np.ndarray: ...

    @abstractmethod
    def object_observation(self, objects: Objects) -> dict[str, np.ndarray]: ...

    @property
    def reward_range(self) -> tuple[float, float]:
        """[low, high] of one step's reward: sparse 0/1; dense adds a shaped term in [0, 1)."""
        return (0.0, 1.0) if self.cfg.reward == "sparse" else (0.0, 2.0)

    def reward(self, state: RobotState, objects: Objects) -> float:
        succeeded = float(self.success(state, objects))
        if self.cfg.reward == "sparse":
            return succeeded
        return succeeded + self.dense_reward(state, objects)

    def make_expert(self, rng: np.random.Generator, max_step: float, max_rot_step: float) -> Expert:
        return Expert(noise=self.cfg.expert_noise, max_step=max_step, max_rot_step=max_rot_step, rng=rng)

    def sample_xy(self, rng: np.random.Generator, center: tuple[float, float], half: float | None = None) -> np.ndarray:
        half = self.cfg.object_range if half is None else half
        return np.asarray(center) + rng.uniform(-half, half, 2)


def yaw_of(quat_xyzw: np.ndarray) -> float:
    x, y, z, w = quat_xyzw
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def jitter_objects(
    poses: Objects, cfg: RandomizationConfig, rng: np.random.Generator, movable: Collection[str] | None = None
) -> Objects:
    """The poses with U(-object_pos, object_pos) added to the x and y of each movable object (all when None)."""
    if cfg.object_pos <= 0:
        return dict(poses)
    out: Objects = {}
    for name, pose in poses.items():
        if movable is None or name in movable:
            pos = pose.pos.copy()
            pos[:2] += rng.uniform(-cfg.object_pos, cfg.object_pos, 2)
            pose = ObjectPose(pos, pose.quat.copy())
        out[name] = pose
    return out
