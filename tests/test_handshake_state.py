"""A state checkpoint offered to a robot that cannot observe the task's objects is refused at the bridge's handshake,
naming the missing keys, never a crash (issue 19; before: the server welcomed it, then the agent died with
`KeyError: 'target_pos'` at its first observation).

Real ZMQ sockets over loopback, a real server and agent. The robot is the simulated arm in shadow mode behind a wrapper
that hides the simulator's object poses: what a Franka without a pose source looks like to the env (no Franka here).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from inril_robot.bridge.agent import AgentOptions, RobotAgent
from inril_robot.bridge.learning import ServerLearner
from inril_robot.bridge.server import PolicyServer
from inril_robot.config import load_config
from inril_robot.runtime.env import RobotEnv
from inril_robot.runtime.registry import make_robot
from inril_robot.runtime.shadow import ShadowRobot
from inril_robot.tasks import make_task
from tests.test_bridge import served


class NoObjectPoses(ShadowRobot):
    """The simulated arm in shadow mode (as a real Franka without --execute) without the simulator's scene access:
    to the env it looks like a real arm with no source of object poses."""

    def __getattr__(self, name: str) -> object:
        if name in ("object_poses", "set_objects", "sim"):
            raise AttributeError(name)
        return getattr(self.inner, name)


def blind_env() -> RobotEnv:
    cfg = load_config(robot="sim", task="reach")
    return RobotEnv(cfg, robot=NoObjectPoses(make_robot(cfg, make_task(cfg.task).scene_objects())))


@pytest.mark.timeout(300)
def test_state_policy_refused_at_handshake_naming_missing_keys(
    small_reach_policy: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint, demos = small_reach_policy
    cfg = load_config(robot="sim", task="reach")
    learner = ServerLearner(cfg, checkpoint, demos, tmp_path / "srv", mode="off")
    log: list[str] = []
    said: list[str] = []
    with served(learner, log) as server, blind_env() as env:
        assert "target_pos" not in env.contract.observations
        options = AgentOptions(server=server.endpoint, episodes=1, speed=0)
        result = RobotAgent(cfg, env, options, say=said.append).run()
        counts = dict(server.counts)
    assert result.episodes == 0 and result.env_steps == 0
    assert result.stopped is not None and "refused this robot (contract)" in result.stopped
    assert "cannot provide: target_pos" in result.stopped, result.stopped
    assert counts["refused"] == 1 and counts.get("welcomed", 0) == 0
    assert any("target_pos" in line for line in log)


@pytest.mark.timeout(300)
def test_agent_refuses_a_welcome_it_cannot_observe(
    small_reach_policy: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that welcomes anyway (an older server): the agent checks the welcome's keys itself and stops with
    the same reason before the first episode."""
    checkpoint, demos = small_reach_policy
    cfg = load_config(robot="sim", task="reach")
    monkeypatch.setattr(PolicyServer, "_contract_refusal", lambda self, hello: None)
    learner = ServerLearner(cfg, checkpoint, demos, tmp_path / "srv", mode="off")
    with served(learner) as server, blind_env() as env:
        result = RobotAgent(cfg, env, AgentOptions(server=server.endpoint, episodes=1, speed=0)).run()
    assert result.episodes == 0 and result.stopped is not None
    assert "cannot provide: target_pos" in result.stopped, result.stopped


@pytest.mark.timeout(300)
def test_same_checkpoint_welcomed_where_poses_exist(small_reach_policy: tuple[Path, Path], tmp_path: Path) -> None:
    """Control: the same checkpoint and server accept the simulated arm, which observes `target_pos`."""
    checkpoint, demos = small_reach_policy
    cfg = load_config(robot="sim", task="reach", overrides=["task.max_steps=3"])
    learner = ServerLearner(cfg, checkpoint, demos, tmp_path / "srv", mode="off")
    with served(learner) as server, RobotEnv(cfg) as env:
        result = RobotAgent(cfg, env, AgentOptions(server=server.endpoint, episodes=1, speed=0)).run()
    assert result.stopped is None and result.episodes == 1
