"""Real-robot defaults that can be exercised here: shadow mode holds the arm; excessive contact force stops it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from inril_robot.config import load_config
from inril_robot.runtime.env import RobotEnv
from inril_robot.runtime.registry import make_robot
from inril_robot.runtime.shadow import ShadowRobot
from inril_robot.tasks import make_task

MakeEnv = Callable[..., RobotEnv]


def test_shadow_mode_runs_the_loop_but_the_arm_holds() -> None:
    cfg = load_config(robot="sim", task="reach")
    inner = make_robot(cfg, make_task(cfg.task).scene_objects())
    env = RobotEnv(cfg, robot=ShadowRobot(inner))
    try:
        _, info = env.reset(seed=0)
        start = info["state"].ee_pos.copy()
        for _ in range(5):
            _, _, _, _, info = env.step(np.array([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
        assert np.linalg.norm(info["state"].ee_pos - start) < 2e-3  # held, not moved 10 cm
        assert len(env.robot.shadow_actions) == 5 and env.robot.shadow_actions[0][0] == pytest.approx(0.02)
    finally:
        env.close()


def test_a_real_robot_is_shadowed_unless_execute(monkeypatch: pytest.MonkeyPatch) -> None:
    from inril_robot.runtime import registry

    monkeypatch.setitem(registry.ROBOTS, "franka", "inril_robot.drivers.sim.robot:SimRobot")
    cfg = load_config(robot="franka", task="reach")

    class Recorder:
        def __init__(self, *args: object) -> None:
            self.args = args

    monkeypatch.setattr(registry, "load", lambda *a: Recorder)
    assert isinstance(make_robot(cfg, []), ShadowRobot)
    assert isinstance(make_robot(cfg, [], execute=True), Recorder)


def test_excessive_contact_force_stops_the_arm(make_env: MakeEnv) -> None:
    env = make_env("reach", overrides=["safety.workspace_min=[0.25,-0.35,-0.05]", "safety.max_contact_force=20"])
    env.reset(seed=0)
    info: dict = {}
    truncated = False
    for _ in range(40):  # drive the fingertips down into the table
        _, _, _, truncated, info = env.step(np.array([0.0, 0.0, -0.02, 0.0, 0.0, 0.0, 1.0]))
        if info["stopped"]:
            break
    assert info["stopped"] and "max_contact_force" in info["stopped"] and truncated
    with pytest.raises(RuntimeError, match="stopped"):
        env.step(np.zeros(7))
    env.reset(seed=1)  # home() clears the stop
    env.step(np.zeros(7))


@pytest.mark.timeout(120)
def test_shadow_mode_demonstrations_are_marked_and_refused_by_learning(tmp_path: object) -> None:
    """collect without --execute on a real robot records steps the arm never executed: they are stored with control
    "none", the episodes marked shadow, and every learner that reads demonstrations refuses the dataset."""
    from pathlib import Path

    from inril_robot.data.store import CONTROL_CODES, Dataset, DatasetError
    from inril_robot.hardware import Teleop, TeleopCommand
    from inril_robot.learning.pretrain import check_dataset_fits
    from inril_robot.runtime.collect import collect
    from inril_robot.runtime.env import build_contract

    class Pushes(Teleop):
        def __init__(self) -> None:
            self.reads = 0

        def read(self) -> TeleopCommand:
            self.reads += 1
            return TeleopCommand(keep=True) if self.reads % 4 == 0 else TeleopCommand(delta_pos=np.array([0.01, 0, 0]))

    cfg = load_config(robot="sim", task="reach", overrides=["teleop.kind=keyboard"])
    env = RobotEnv(cfg, robot=ShadowRobot(make_robot(cfg, make_task(cfg.task).scene_objects())))
    out = Path(str(tmp_path)) / "demos"
    try:
        result = collect(cfg, out, 1, env, Pushes(), pace=False)
    finally:
        env.close()
    assert result.kept == 1
    dataset = Dataset(out)
    episode = dataset.episodes[0]
    assert episode.meta["shadow"] is True and (episode.load("control") == CONTROL_CODES["none"]).all()
    with pytest.raises(DatasetError, match=r"shadow-mode episodes.*--execute"):
        check_dataset_fits(dataset, build_contract(cfg, env.task))
