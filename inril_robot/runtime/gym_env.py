"""Gymnasium interface: `InrilGymEnv` wraps `RobotEnv` on the simulated robot, one registered id per task.

    import gymnasium, inril_robot                 # importing the package registers the ids
    env = gymnasium.make("inril_robot/Lift-v0", observation="image", image_size=64)

Ids: ``inril_robot/{Reach,Lift,Push,Peg}-v0``. Keyword arguments: ``observation`` ("state": proprio + privileged
object state; "image": proprio + the ``front`` and ``wrist`` cameras of the ``sim_front_wrist`` preset, each
``image_size`` square), ``action_scale``, ``seed``, ``render_mode`` ("rgb_array" or None) and ``overrides``
(``--set``-style ``"a.b=value"`` strings applied last).

Actions follow Gymnasium/SB3 conventions: by default (``action_scale="normalized"``) a ``Box(-1, 1, (7,))`` where
-1..1 maps to -max..+max of the safety limits: ``dx, dy, dz`` times ``safety.max_step`` [m] (0.02 m in the sim
preset), the rotation vector times ``safety.max_rot_step`` [rad] (0.1 rad), and the gripper -1..1 to 0 (open) ..
1 (closed). ``action_scale="physical"`` takes the robot's own units (the contract: metres, radians, gripper 0..1).
Episodes end with terminated = success, truncated = the task's time limit (registered as ``max_episode_steps``;
pass ``max_episode_steps=`` to ``gymnasium.make`` with an overridden ``task.max_steps``). ``info["is_success"]``
is the success flag SB3's callbacks read. Observation boxes are finite (+-10 in SI units: no quantity on a table
top comes near), so ``check_env`` has nothing to warn about. An env that is not closed is closed at exit.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any, Literal

import gymnasium
import numpy as np
from gymnasium import spaces

from inril_robot.config import CameraConfig, RunConfig, load_config, preset_path, read_yaml
from inril_robot.core.contract import Contract
from inril_robot.core.state import RobotState
from inril_robot.hardware import Camera
from inril_robot.runtime.env import RobotEnv
from inril_robot.runtime.registry import make_cameras, make_robot
from inril_robot.tasks import make_task

ENTRY_POINT = "inril_robot.runtime.gym_env:InrilGymEnv"
ENV_IDS: dict[str, str] = {
    "reach": "inril_robot/Reach-v0",
    "lift": "inril_robot/Lift-v0",
    "push": "inril_robot/Push-v0",
    "peg": "inril_robot/Peg-v0",
}
IMAGE_CAMERAS = "sim_front_wrist"  # camera preset of observation="image"
RENDER_CAMERAS = "sim_front"  # camera preset whose first camera render() uses in state mode


def camera_names(preset: str) -> list[str]:
    return [str(c["name"]) for c in read_yaml(preset_path("cameras", preset)).get("cameras", [])]


def size_overrides(preset: str, size: int) -> list[str]:
    """``--set`` overrides making every camera of `preset` size x size pixels."""
    return [f"cameras.{name}.{dim}={size}" for name in camera_names(preset) for dim in ("width", "height")]


FLOAT_BOUND = 10.0  # [SI units]: positions in metres, unit quaternions, gripper widths all lie well inside


def observation_space(contract: Contract) -> spaces.Dict:
    """Box(-10, 10) for float observations, Box(0, 255, uint8) for images, in the contract's shapes."""
    out: dict[str, spaces.Space[Any]] = {}
    for key, spec in contract.observations.items():
        dtype = np.dtype(spec.dtype)
        if np.issubdtype(dtype, np.floating):
            out[key] = spaces.Box(-FLOAT_BOUND, FLOAT_BOUND, shape=spec.shape, dtype=dtype)
        elif np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            out[key] = spaces.Box(info.min, info.max, shape=spec.shape, dtype=dtype)
        else:
            out[key] = spaces.MultiBinary(list(spec.shape))
    return spaces.Dict(out)


def action_space(cfg: RunConfig) -> spaces.Box:
    """Delta TCP translation [m] and rotation vector [rad] per step, bounded by the safety limits; gripper 0..1."""
    s = cfg.safety
    high = np.array([s.max_step] * 3 + [s.max_rot_step] * 3 + [1.0], dtype=np.float32)
    low = np.concatenate([-high[:6], [0.0]]).astype(np.float32)
    return spaces.Box(low, high, dtype=np.float32)


def normalized_to_physical(action: np.ndarray, physical: spaces.Box) -> np.ndarray:
    """[-1, 1] per dimension -> [low, high] of the physical action box (clipped to [-1, 1] first)."""
    a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    return physical.low + (a + 1.0) * 0.5 * (physical.high - physical.low)


def _plain_info(info: dict[str, Any]) -> dict[str, Any]:
    """`RobotEnv`'s info with the `RobotState` as a plain dict (of arrays and floats), as Gymnasium tools expect,
    and `is_success` (the key SB3 and gymnasium-robotics read) beside `success`."""
    state = info.get("state")
    info = {**info, "is_success": bool(info.get("success", False))}
    if isinstance(state, RobotState):
        info["state"] = dataclasses.asdict(state)
    return info


class InrilGymEnv(gymnasium.Env[dict[str, np.ndarray], np.ndarray]):
    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}  # noqa: RUF012 - gymnasium's API

    def __init__(
        self,
        task: str = "lift",
        observation: Literal["state", "image"] = "state",
        image_size: int = 96,
        action_scale: Literal["normalized", "physical"] = "normalized",
        seed: int | None = None,
        render_mode: Literal["rgb_array"] | None = None,
        overrides: list[str] | tuple[str, ...] = (),
    ) -> None:
        if observation not in ("state", "image"):
            raise ValueError(f"observation must be 'state' or 'image', got {observation!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        if action_scale not in ("normalized", "physical"):
            raise ValueError(f"action_scale must be 'normalized' or 'physical', got {action_scale!r}")
        self.render_mode = render_mode
        cameras = IMAGE_CAMERAS if observation == "image" else "none"
        settings = [f"task.observation={observation}"]
        if observation == "image":
            settings += size_overrides(IMAGE_CAMERAS, image_size)
        if seed is not None:
            settings.append(f"seed={seed}")
        self.cfg = load_config(robot="sim", task=task, cameras=cameras, overrides=[*settings, *overrides])

        # State mode has no cameras; a render camera is added to the scene only when asked for, and it never
        # appears in the observations (the contract is built from self.cfg).
        self._render_cameras: list[Camera] = []
        robot = None
        render_cfg = None
        if render_mode == "rgb_array" and not self.cfg.cameras:
            preset = read_yaml(preset_path("cameras", RENDER_CAMERAS))["cameras"][0]
            camera = CameraConfig.model_validate({**preset, "width": image_size, "height": image_size})
            render_cfg = self.cfg.model_copy(update={"cameras": [camera]})
            robot = make_robot(render_cfg, make_task(self.cfg.task).scene_objects())
        self.env = RobotEnv(self.cfg, robot=robot)
        if render_cfg is not None:
            self._render_cameras = make_cameras(render_cfg, self.env.robot)
            for cam in self._render_cameras:
                cam.start()

        self.metadata = {**self.metadata, "render_fps": self.cfg.robot.control_hz}
        self.observation_space = observation_space(self.env.contract)
        self.physical_action_space = action_space(self.cfg)
        self.action_scale = action_scale
        self.action_space = (
            self.physical_action_space
            if action_scale == "physical"
            else spaces.Box(-1.0, 1.0, shape=self.physical_action_space.shape, dtype=np.float32)
        )
        # closes the renderer's GL context before interpreter teardown (else EGL errors print at exit)
        self._finalizer = weakref.finalize(self, _close_all, self.env, self._render_cameras)

    # ------------------------------------------------------------------------------------------------ API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        obs, info = self.env.reset(seed=seed)
        return obs, _plain_info(info)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self.action_scale == "normalized":
            action = normalized_to_physical(action, self.physical_action_space)
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, _plain_info(info)

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """The first camera's current image (uint8 HxWx3), or None when render_mode is None."""
        if self.render_mode is None:
            return None
        cameras = self.env.cameras or self._render_cameras
        return cameras[0].read_latest(max_age_s=float("inf")).image.copy()

    def close(self) -> None:
        self._finalizer()  # runs once: a second close() (or the one at exit) does nothing


def _close_all(env: RobotEnv, render_cameras: list[Camera]) -> None:
    for cam in render_cameras:
        cam.stop()
    render_cameras.clear()
    env.close()


def register_envs() -> None:
    """Register ``inril_robot/<Task>-v0`` for every task, with the task preset's time limit as
    ``max_episode_steps``; ids already registered are left as they are."""
    for task, env_id in ENV_IDS.items():
        if env_id in gymnasium.registry:
            continue
        max_steps = int(read_yaml(preset_path("tasks", task))["task"]["max_steps"])
        gymnasium.register(id=env_id, entry_point=ENTRY_POINT, kwargs={"task": task}, max_episode_steps=max_steps)
