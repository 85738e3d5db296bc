"""Find driver implementations by name (`--robot sim|franka`, camera kinds), importing them only when asked.

The core depends on `inril_robot.hardware` interfaces; the `drivers` package depends on the core, never the
reverse, so drivers are named here as import paths.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from inril_robot.config import RunConfig
from inril_robot.core.errors import InrilError
from inril_robot.hardware import Camera, Robot, Teleop
from inril_robot.hardware.scene import SceneObject
from inril_robot.runtime.shadow import ShadowRobot

if TYPE_CHECKING:
    from inril_robot.runtime.env import RobotEnv

ROBOTS: dict[str, str] = {
    "sim": "inril_robot.drivers.sim.robot:SimRobot",
    "franka": "inril_robot.drivers.franka.robot:FrankaRobot",
}
CAMERAS: dict[str, str] = {
    "sim": "inril_robot.drivers.sim.camera:SimCamera",
    "realsense": "inril_robot.drivers.realsense:RealSenseCamera",
}
TELEOPS: dict[str, str] = {
    "scripted": "inril_robot.runtime.scripted_teleop:ScriptedTeleop",
    "keyboard": "inril_robot.drivers.keyboard:KeyboardTeleop",
    "spacemouse": "inril_robot.drivers.spacemouse:SpaceMouseTeleop",
}
INSTALL_HINT = {
    "sim": "pip install 'inril-robot[sim]'",
    "franka": "pip install 'inril-robot[franka]'",
    "realsense": "pip install 'inril-robot[camera]'",
    "spacemouse": "pip install 'inril-robot[teleop]'",
}


class DriverUnavailable(RuntimeError, InrilError):
    """The requested driver is unknown or its optional dependencies are not installed."""


def load(table: dict[str, str], kind: str, what: str) -> Any:
    if kind not in table:
        raise DriverUnavailable(f"no {what} driver {kind!r} in this version; available: {', '.join(table)}")
    module_name, _, attr = table[kind].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        hint = INSTALL_HINT.get(kind, "")
        raise DriverUnavailable(f"the {kind} {what} driver needs {e.name or e}: {hint}") from e
    return getattr(module, attr)


def make_robot(cfg: RunConfig, objects: list[SceneObject], execute: bool = False) -> Robot:
    """The configured robot. A real robot is wrapped in `ShadowRobot` (it holds) unless `execute` is given."""
    cls = load(ROBOTS, cfg.robot.kind, "robot")
    if cfg.robot.kind == "sim":
        return cls(cfg.robot, cfg.safety, objects=objects, cameras=cfg.cameras)
    robot = cls(cfg.robot, cfg.safety)
    return robot if execute else ShadowRobot(robot)


def make_cameras(cfg: RunConfig, robot: Robot) -> list[Camera]:
    cameras = []
    for cam in cfg.cameras:
        cls = load(CAMERAS, cam.kind, "camera")
        if cam.kind == "sim":
            world = getattr(robot, "sim", None)
            if world is None:
                raise DriverUnavailable(f"camera {cam.name!r} is simulated but the robot is {cfg.robot.kind!r}")
            cameras.append(cls(cam, world))
        else:
            cameras.append(cls(cam))
    return cameras


def make_teleop(cfg: RunConfig, env: RobotEnv | None = None) -> Teleop:
    """The operator input of `cfg.teleop.kind`. The scripted expert drives `env` (simulation only).

    Raises `DriverUnavailable` for an unknown kind, a missing package or a scripted expert without the simulator,
    and `inril_robot.hardware.TeleopUnavailable` (its message ends with the fix) when the terminal or device is
    missing.
    """
    kind = cfg.teleop.kind
    cls = load(TELEOPS, kind, "teleop")
    if kind == "scripted":
        if env is None or cfg.robot.kind != "sim":
            raise DriverUnavailable(
                "the scripted teleop is the task's expert, which needs the simulator's object "
                "poses: use --robot sim, or --teleop keyboard / spacemouse"
            )
        return cls(env)
    return cls(cfg.teleop)
