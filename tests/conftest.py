"""Shared fixtures. `drivers.sim` is imported first: it picks MuJoCo's GL backend, which must happen before mujoco
is imported anywhere (MuJoCo reads MUJOCO_GL once, on first import)."""

import drivers.sim  # noqa: I001  (must stay first: selects the GL backend before mujoco is imported)

from collections.abc import Callable, Iterator

import pytest

from inril_robot.config import RunConfig, load_config
from inril_robot.env import RobotEnv

SimCfg = Callable[..., RunConfig]
MakeEnv = Callable[..., RobotEnv]


@pytest.fixture(scope="session")
def gl_backend() -> str:
    return drivers.sim.GL_BACKEND


@pytest.fixture(scope="session")
def sim_cfg() -> SimCfg:
    """`sim_cfg(task, cameras=None, overrides=())` -> the simulated robot's RunConfig for `task`."""

    def build(task: str = "lift", cameras: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
        return load_config(robot="sim", task=task, cameras=cameras, overrides=overrides)

    return build


@pytest.fixture
def make_env(sim_cfg: SimCfg) -> Iterator[MakeEnv]:
    """`make_env(task, cameras=None, overrides=())` -> a connected RobotEnv, closed when the test ends."""
    envs: list[RobotEnv] = []

    def build(task: str = "lift", cameras: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RobotEnv:
        env = RobotEnv(sim_cfg(task, cameras, overrides))
        envs.append(env)
        return env

    yield build
    for env in envs:
        env.close()


@pytest.fixture(scope="module")
def lift_env(sim_cfg: SimCfg) -> Iterator[RobotEnv]:
    """One state-only lift env shared by a module (tests reset it themselves)."""
    env = RobotEnv(sim_cfg("lift"))
    yield env
    env.close()
