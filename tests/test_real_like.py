"""The real-like sim mode (issue 19, `--set cell=real-like`): only what a real cell provides reaches the policy, the
dataset and the bridge — cameras and proprioception — and reward comes from the operator's verdict or a success
detector on the observation. End to end: collect -> pretrain -> finetune --bridge (a real `serve` process) -> eval.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from inril_robot.cli import app
from inril_robot.config import RunConfig, load_config
from inril_robot.core.errors import ConfigError
from inril_robot.data.store import Dataset
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.runtime.cell import CellError
from inril_robot.runtime.env import RobotEnv

runner = CliRunner()
CAMERA = ["cameras.front.width=32", "cameras.front.height=32"]  # rendered at 32 px: mechanics, not learning
REAL_LIKE = ["cell.mode=real-like", "task.observation=image", "task.max_steps=40", *CAMERA]
CELL_KEYS = {"ee_pos", "ee_quat", "gripper_width", "front_rgb"}  # what the real-like cell provides
SEEN: list[set[str]] = []  # the observation keys every detector call received


def lifted_in_hand(cfg: RunConfig):
    """A success detector that a real cell has without training: the gripper holds something (partly closed) and the
    hand is 10 cm up. It sees only the observation, as a learned image classifier would."""

    def detect(obs: dict[str, np.ndarray]) -> float:
        SEEN.append(set(obs))
        width, height = float(obs["gripper_width"][0]), float(obs["ee_pos"][2])
        return float(0.01 < width < 0.07 and height > 0.14)

    return detect


DETECTOR = ["reward.source=detector", f"reward.detector={__name__}:lifted_in_hand"]


def sets(overrides: list[str]) -> list[str]:
    return [a for s in overrides for a in ("--set", s)]


def test_shorthand_and_refusals() -> None:
    cfg = load_config(robot="sim", task="lift", overrides=["cell=real-like"])
    assert cfg.cell.mode == "real-like" and cfg.reward.source == "operator"  # a real cell's default
    assert load_config(robot="sim", task="lift").reward.source == "sim"
    with pytest.raises(CellError, match=r"privileged simulator state \(cube_pos, cube_quat\).*task.observation=image"):
        RobotEnv(cfg)  # the lift preset observes state
    with pytest.raises(CellError, match=r"task\.reward=dense"):
        RobotEnv(
            load_config(robot="sim", task="lift", cameras="sim_front", overrides=[*REAL_LIKE, "task.reward=dense"])
        )
    with pytest.raises(ConfigError, match=r"reward\.source=detector needs reward\.detector"):
        load_config(robot="sim", task="lift", overrides=["cell.mode=real-like", "reward.source=detector"])
    with pytest.raises(ConfigError, match=r"reward\.source=sim reads the simulator's success.*reward\.source=operator"):
        load_config(robot="sim", task="lift", overrides=["cell.mode=real-like", "reward.source=sim"])


def test_settings_that_moved_to_reward_are_refused_by_their_new_name_and_old_files_still_load() -> None:
    for old, new in [("cell.success=detector", "reward.source"), ("cell.detector=m:f", "reward.detector")]:
        with pytest.raises(ConfigError, match=rf"cell\.{old.split('.')[1].split('=')[0]} moved to {new}"):
            load_config(robot="sim", task="lift", overrides=["cell.mode=real-like", old])
    with pytest.raises(ConfigError, match=r"cell\.threshold moved to reward\.threshold"):
        load_config(robot="sim", task="lift", overrides=["cell.threshold=0.7"])
    # a run config written before the move (what old checkpoints and run.yaml hold): defaults, real-like
    old = load_config(robot="sim", task="lift").model_dump(mode="json")
    old["cell"] = {"mode": "real-like", "success": "operator", "detector": None, "threshold": None}
    old["reward"] = {"source": "sim", "detector": None}
    migrated = RunConfig.model_validate(old)
    assert migrated.cell.mode == "real-like" and migrated.reward.source == "operator"


@pytest.mark.timeout(120)
def test_observations_and_reward_come_from_the_cell() -> None:
    cfg = load_config(robot="sim", task="lift", cameras="sim_front", overrides=[*REAL_LIKE, *DETECTOR])
    SEEN.clear()
    with RobotEnv(cfg) as env:
        assert set(env.contract.observations) == CELL_KEYS
        assert env.task.privileged_keys == {"cube_pos", "cube_quat"}
        obs, _ = env.reset(seed=0)
        success = False
        for _ in range(cfg.task.max_steps):
            obs, reward, success, truncated, _ = env.step(env.expert_action())
            assert set(obs) == set(env.contract.observations)
            assert reward == float(success) == float(env.success_source.last_probability >= 0.5)
            if success or truncated:
                break
        truth = env.task.success(*env._latest)  # the simulator's verdict, for this test only
    assert success and truth  # the scripted expert lifts the cube; the detector saw it from the observation alone
    assert SEEN and all(keys == set(env.contract.observations) for keys in SEEN)


def run_chain(tmp_path: Path, bridge: bool) -> None:
    """collect -> pretrain -> (serve + finetune --bridge) -> eval, each command as a user runs it, real-like."""
    demos, pre, ft = tmp_path / "demos", tmp_path / "pre", tmp_path / "ft"
    result = runner.invoke(
        app,
        ["collect", "--task", "lift", "--cameras", "sim_front", "--episodes", "2", "--out", str(demos), "--json"]
        + sets(REAL_LIKE),
    )
    assert result.exit_code == 0, result.output
    dataset = Dataset(demos)
    arrays = {k for e in dataset.episodes for k in e.array_keys()}
    assert {k for k in arrays if k.startswith("obs/")} == {f"obs/{k}" for k in CELL_KEYS}  # no cube_pos on disk
    assert not any("cube" in k for k in arrays) and set(dataset.contract.observations) == CELL_KEYS
    assert all(e.success for e in dataset.episodes)  # the scripted operator's verdict

    evals = ["train.eval_every=10", "train.eval_episodes=1"] if bridge else ["train.eval_every=0"]
    result = runner.invoke(
        app,
        ["pretrain", "--dataset", str(demos), "--out", str(pre), "--steps", "5", "--cameras", "sim_front", "--json"]
        + sets([*REAL_LIKE, *DETECTOR, "train.batch_size=16", *evals]),
    )
    assert result.exit_code == 0, result.output
    checkpoint = pre / "last.pt"
    assert set(ckpt.load_checkpoint(checkpoint).contract.observations) == CELL_KEYS

    if bridge:
        fine_tune(checkpoint, demos, ft)
        checkpoint = ft / "server" / "last.pt"
    SEEN.clear()  # eval takes the checkpoint's cell: real-like, reward from the detector
    result = runner.invoke(app, ["eval", "--checkpoint", str(checkpoint), "--episodes", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["episodes"] == 1
    assert SEEN and all(keys == CELL_KEYS for keys in SEEN)  # eval's success came from the detector too


def fine_tune(checkpoint: Path, demos: Path, ft: Path) -> None:
    ft_sets = [
        "finetune.episodes_per_iteration=2",
        "finetune.ppo.minibatch_size=16",
        "finetune.ppo.epochs=1",
        "finetune.inril.il_batch_size=16",
    ]
    SEEN.clear()
    result = runner.invoke(
        app,
        ["finetune", "--robot", "sim", "--bridge", "--checkpoint", str(checkpoint), "--demos", str(demos)]
        + ["--out", str(ft), "--speed", "0", "--episodes", "2", "--json", *sets([*REAL_LIKE, *DETECTOR, *ft_sets])],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["episodes"] == 2 and payload["stopped"] is None
    assert SEEN and all(keys == CELL_KEYS for keys in SEEN)  # the detector gave the reward, from what the cell has
    recorded = {k for e in Dataset(ft / "episodes").episodes for k in e.array_keys() if k.startswith("obs/")}
    assert recorded == {f"obs/{k}" for k in CELL_KEYS}


@pytest.mark.timeout(120)
def test_collect_pretrain_eval_real_like(tmp_path: Path) -> None:
    run_chain(tmp_path, bridge=False)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_collect_pretrain_finetune_bridge_eval_real_like(tmp_path: Path) -> None:
    run_chain(tmp_path, bridge=True)


@pytest.mark.timeout(60)
def test_a_detectors_own_threshold_decides_unless_reward_threshold_is_set() -> None:
    from inril_robot.runtime.cell import SuccessSource
    from inril_robot.tasks import make_task

    class Detector:
        threshold = 0.9  # what `detector train` stores: chosen for precision

        def __call__(self, obs: dict[str, np.ndarray]) -> float:
            return 0.8

    def success(overrides: list[str]) -> bool:
        cfg = load_config(
            robot="sim", task="lift", cameras="sim_front", overrides=["cell.mode=real-like", *DETECTOR, *overrides]
        )
        source = SuccessSource(cfg, make_task(cfg.task), detector=Detector())
        return source({}, None, None)[0]  # type: ignore[arg-type]

    assert not success([])  # 0.8 < the detector's 0.9
    assert success(["reward.threshold=0.7"])  # an explicit setting wins


def never(cfg: RunConfig):
    """A success detector that never fires (for the truth-vs-reward test)."""
    return lambda obs: 0.0


@pytest.mark.timeout(120)
def test_fine_tuning_envs_take_reward_from_the_detector_and_report_the_simulators_verdict() -> None:
    from inril_robot.learning.rl.vec_env import HistoryEnv

    cfg = load_config(
        robot="sim",
        task="lift",
        cameras="sim_front",
        overrides=[*REAL_LIKE, "reward.source=detector", f"reward.detector={__name__}:never"],
    )
    env = HistoryEnv(cfg, sorted(CELL_KEYS), 1)
    env.reset(seed=0)
    results = []
    for _ in range(cfg.task.max_steps):
        results.append(env.step(env.env.expert_action()[None]))
        if results[-1].terminated or results[-1].truncated:
            break
    env.close()
    assert not any(r.terminated for r in results) and sum(r.reward for r in results) == 0.0  # the detector's
    assert results[-1].truncated and any(r.success for r in results)  # the simulator saw the expert lift the cube


def always(cfg: RunConfig):
    return lambda obs: 1.0


@pytest.mark.timeout(120)
def test_evaluation_episodes_end_on_the_simulators_success_not_the_detectors() -> None:
    """A detector that fires early ends a training episode at once (reward 1, the simulator's verdict: not yet); an
    evaluation episode in simulation runs on until the simulator's own success, so it measures the policy."""
    from inril_robot.learning.rl.vec_env import VecEnv

    cfg = load_config(
        robot="sim",
        task="lift",
        cameras="sim_front",
        overrides=[*REAL_LIKE, "reward.source=detector", f"reward.detector={__name__}:always"],
    )
    with VecEnv(cfg, 1, sorted(CELL_KEYS), 1, subprocess=False) as vec:
        env = vec._local[0]
        vec.reset({0: 0})
        first = vec.step({0: env.env.expert_action()[None]})[0]
        assert first.terminated and first.reward == 1.0 and not first.success and first.steps == 1
        vec.judge_by_truth(True)
        vec.reset({0: 0})
        for _ in range(cfg.task.max_steps):
            result = vec.step({0: env.env.expert_action()[None]})[0]
            if result.terminated or result.truncated:
                break
        assert result.terminated and result.success and env.env.steps > 1
        vec.judge_by_truth(False)
        vec.reset({0: 0})
        assert vec.step({0: env.env.expert_action()[None]})[0].terminated
