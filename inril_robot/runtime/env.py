"""`RobotEnv`: one task on one robot with its cameras, the same loop in simulation and on the real arm.

reset() homes the arm and (in simulation) places the task's objects; step(action) checks the action against the
contract, passes it through the safety envelope (from the state of the latest observation and the last executed
gripper command), applies the executed action for one control period and returns observation, reward, terminated
(success), truncated (time limit) and info (`executed_action`, `safety_events`, `state`, `success`, `stopped`,
`gripper_age_s`). Safety events include what bounded the driver's commanded reference (`safety.bound_reference`).
Every caller — sim runs, evaluation, collection, Gymnasium users — gets the envelope by construction. Observation
noise and action latency come from `RunConfig.randomization`.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from inril_robot.config import RunConfig
from inril_robot.core.contract import Contract, ObsSpec, image_key
from inril_robot.core.safety import apply_envelope
from inril_robot.core.state import RobotState
from inril_robot.hardware import Camera, Robot
from inril_robot.hardware.calibration_file import capture_size
from inril_robot.hardware.scene import Objects
from inril_robot.runtime.cell import SuccessSource, check_cell, real_like
from inril_robot.runtime.marker_state import MarkerStateSource, scene_objects
from inril_robot.runtime.registry import make_cameras, make_robot
from inril_robot.tasks import make_task
from inril_robot.tasks.base import Expert, Task, jitter_objects
from inril_robot.vision.pipeline import ImagePipeline

GRIPPER_AT_HOME = 0.0  # home() opens the gripper: the gripper-rate limit of the first step starts from open
PROPRIO_KEYS: dict[str, tuple[int, ...]] = {"ee_pos": (3,), "ee_quat": (4,), "gripper_width": (1,)}


# declared value ranges: positions (metres) within 10 m of the base, unit quaternions (with slack for noise); a reading
# outside is a broken sensor or a forged message, refused at the bridge before it reaches a network
POSITION_RANGE = (-10.0, 10.0)
QUATERNION_RANGE = (-1.5, 1.5)


def _spec(key: str, shape: tuple[int, ...]) -> ObsSpec:
    return ObsSpec(shape=shape, dtype="float32", range=QUATERNION_RANGE if key.endswith("_quat") else POSITION_RANGE)


def build_contract(cfg: RunConfig, task: Task, object_state: bool = True) -> Contract:
    """The contract of `cfg`'s task. `object_state` False: this robot has no source of the task's object poses (a
    real arm without markers), so its contract does not declare them, and a state policy is refused at the bridge's
    handshake naming the keys instead of failing at the first observation."""
    observations = {k: _spec(k, s) for k, s in PROPRIO_KEYS.items()}
    if cfg.task.observation == "state" and object_state:
        observations.update({k: _spec(k, s) for k, s in task.state_keys.items()})
    for cam in cfg.cameras:
        observations[image_key(cam.name)] = ObsSpec(shape=(cam.height, cam.width, 3), dtype="uint8")
    return Contract(
        control_hz=cfg.robot.control_hz,
        observations=observations,
        cameras={cam.name: (cam.height, cam.width) for cam in cfg.cameras},
        reward_range=task.reward_range,
    )


class RobotEnv:
    def __init__(
        self,
        cfg: RunConfig,
        robot: Robot | None = None,
        cameras: list[Camera] | None = None,
        execute: bool = False,
    ) -> None:
        """`execute`: let a real robot move (otherwise it runs in shadow mode and holds). Simulation always moves."""
        self.cfg = cfg
        self.task = make_task(cfg.task)
        objects = scene_objects(cfg, self.task.scene_objects())
        check_cell(cfg, self.task, object_state_source=cfg.markers.enabled)
        self.success_source = SuccessSource(cfg, self.task)  # a detector that cannot load is refused before the arm
        self.robot = robot or make_robot(cfg, objects, execute=execute)
        self.robot.connect()
        self.cameras = cameras if cameras is not None else make_cameras(cfg, self.robot)
        for cam in self.cameras:
            cam.start()
        # issue 19: object state from fiducial markers (a real cell's source) instead of the simulator's truth
        self.marker_source = MarkerStateSource(cfg, objects, self.robot) if cfg.markers.enabled else None
        # issue 19: capture -> crop -> resize, the same for rendered and RealSense frames
        self.pipelines = {
            c.name: ImagePipeline.build(c.name, capture_size(c), (c.width, c.height), c.crop) for c in cfg.cameras
        }
        self.contract = build_contract(cfg, self.task, object_state=self.provides_object_state)
        self.rng = np.random.default_rng(cfg.seed)
        self.steps = 0
        self.stopped: str | None = None  # why step() stopped the arm (cleared when reset() homes it)
        self.last_capture_times: dict[str, float] = {}
        self.expert: Expert | None = None
        self._latest: tuple[RobotState, Objects | None] | None = None  # what reset/step last read from the robot
        self._gripper = GRIPPER_AT_HOME  # the last executed gripper command
        self._latency: deque[np.ndarray] = deque()

    # ------------------------------------------------------------------------------------------------- loop
    def reset(self, seed: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.robot.home()
        self.stopped = None
        if hasattr(self.robot, "set_objects"):
            if self.cfg.randomization.enabled and hasattr(self.robot, "randomize"):
                self.robot.randomize(self.cfg.randomization, self.rng)
            objects = self.task.sample_initial(self.rng)
            if self.cfg.randomization.object_pos > 0:
                movable = {o.name for o in self.task.scene_objects() if o.movable}
                objects = jitter_objects(objects, self.cfg.randomization, self.rng, movable)
            self.robot.set_objects(objects)
        self.steps = 0
        self.expert = self.task.make_expert(self.rng, self.cfg.safety.max_step, self.cfg.safety.max_rot_step)
        self._latency = deque(self._hold_action() for _ in range(self.cfg.randomization.action_latency_steps))
        self._gripper = GRIPPER_AT_HOME
        if self.marker_source is not None:
            self.marker_source.reset()
        state, objects = self._latest = self._read()
        sim_success = False if objects is not None else None
        return self._observe(state, objects), {"success": False, "sim_success": sim_success, "state": state}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._latest is None:
            raise RuntimeError("call reset() before step()")
        action = self.contract.check_action(action)
        if self._latency:
            self._latency.append(action)
            action = self._latency.popleft()
        envelope = apply_envelope(
            action,
            self._latest[0],
            self.cfg.safety,
            control_hz=self.cfg.robot.control_hz,
            previous_gripper=self._gripper,
        )
        self.robot.apply(envelope.action)
        # a driver that tracks a commanded reference bounds it too (safety.bound_reference) and says what it changed
        events = envelope.events + tuple(getattr(self.robot, "last_reference_events", ()))
        self._gripper = float(envelope.action[6])
        self.steps += 1
        state, objects = self._latest = self._read()
        obs = self._observe(state, objects)
        success, reward = self.success_source(obs, state, objects)
        # the simulator's own verdict whoever decides (reward.source), so evaluations in simulation measure the truth
        sim_success = bool(self.task.success(state, objects)) if objects is not None else None
        truncated = self.steps >= self.cfg.task.max_steps and not success
        info: dict[str, Any] = {
            "success": success,
            "sim_success": sim_success,
            "state": state,
            "stopped": None,
            "executed_action": envelope.action,
            "safety_events": events,
            # how old the gripper width in `state` is (the Franka reads it in its own thread)
            "gripper_age_s": getattr(self.robot, "gripper_width_age", None),
        }
        force = float(np.linalg.norm(state.ee_wrench[:3]))
        if force > self.cfg.safety.max_contact_force:
            # the envelope already holds on excessive force; here the arm is stopped and the episode ends
            self.robot.stop()
            self.stopped = info["stopped"] = (
                f"contact force {force:.1f} N > max_contact_force {self.cfg.safety.max_contact_force} N"
            )
            truncated = not success
        return obs, float(reward), success, truncated, info

    def observe(self) -> dict[str, np.ndarray]:
        """A fresh observation without stepping (e.g. after holding): reads the robot and cameras as reset/step do,
        and the safety envelope then works from this state."""
        if self._latest is None:
            raise RuntimeError("call reset() before observe()")
        state, objects = self._latest = self._read()
        return self._observe(state, objects)

    def expert_action(self) -> np.ndarray:
        """The scripted expert's action from the state of the latest observation (simulation: needs object poses)."""
        if self.expert is None or self._latest is None:
            raise RuntimeError("call reset() before asking the scripted expert for an action")
        state, objects = self._latest
        if objects is None:
            raise RuntimeError("the scripted expert needs object poses, which only the simulator provides")
        return self.task.expert_action(self.expert, state, objects)

    def close(self) -> None:
        for cam in self.cameras:
            cam.stop()
        if self.marker_source is not None:
            self.marker_source.close()
        self.robot.close()

    @property
    def provides_object_state(self) -> bool:
        """Whether observations can carry the task's object poses (markers, or the simulator's truth)."""
        if self.marker_source is not None:
            return True
        return hasattr(self.robot, "object_poses") and not real_like(self.cfg)  # a real-like cell has no sim truth

    # ---------------------------------------------------------------------------------------------- helpers
    def _hold_action(self) -> np.ndarray:
        return np.zeros(self.contract.action_dim)

    def _read(self) -> tuple[RobotState, Objects | None]:
        state = self.robot.state()
        objects = self.robot.object_poses() if hasattr(self.robot, "object_poses") else None
        return state, objects

    def _observe(self, state: RobotState, objects: Objects | None) -> dict[str, np.ndarray]:
        obs = state.proprio()
        if self.cfg.task.observation == "state" and self.marker_source is not None:
            obs.update(self.task.object_observation(self.marker_source.object_poses(state)))
        elif self.cfg.task.observation == "state" and objects is not None and not real_like(self.cfg):
            obs.update(self.task.object_observation(objects))
        noise = self.cfg.randomization.obs_noise
        if noise > 0:
            for key, value in obs.items():
                obs[key] = (value + self.rng.normal(0.0, noise, value.shape)).astype(np.float32)
        for cam in self.cameras:
            frame = cam.read_latest(max_age_s=1.0 / self.cfg.robot.control_hz + 0.05)
            pipeline = self.pipelines.get(cam.name)
            obs[image_key(cam.name)] = pipeline(frame.image) if pipeline is not None else frame.image
            self.last_capture_times[cam.name] = frame.timestamp
        return obs

    def __enter__(self) -> RobotEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
