"""Shared fixtures. `drivers.sim` is imported first: it picks MuJoCo's GL backend, which must happen before mujoco
is imported anywhere (MuJoCo reads MUJOCO_GL once, on first import)."""

import inril_robot.drivers.sim  # noqa: I001  (must stay first: selects the GL backend before mujoco is imported)

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inril_robot.config import RunConfig, load_config
from inril_robot.runtime.env import RobotEnv

SimCfg = Callable[..., RunConfig]
MakeEnv = Callable[..., RobotEnv]


@pytest.fixture(scope="session")
def gl_backend() -> str:
    return inril_robot.drivers.sim.GL_BACKEND


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


@pytest.fixture(scope="session")
def small_reach_policy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, demonstrations folder): a briefly trained reach policy and the 3 demos it was trained on, for
    tests that need a real policy and dataset but not a good one (the bridge under hostile input, data integrity,
    protocol conformance)."""
    from inril_robot.learning.pretrain import pretrain
    from tests.test_pretrain import reach_cfg, record_demos

    root = tmp_path_factory.mktemp("small_reach")
    demos = record_demos(root / "demos", "reach", 3)
    result = pretrain(reach_cfg(overrides=["train.steps=40", "train.eval_every=0"]), demos, root / "pre", resume=False)
    return Path(result.last_checkpoint), demos.root
