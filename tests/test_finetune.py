"""Fine-tuning end to end in simulation: the run folder, exact resume, the CLI, and the parallel env processes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from inril_robot.cli import app
from inril_robot.config import RunConfig, load_config
from inril_robot.data import Dataset
from inril_robot.learning.inril.finetune import FinetuneError, finetune
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.pretrain import pretrain
from inril_robot.learning.rl.vec_env import HistoryEnv, VecEnv
from tests.test_pretrain import reach_cfg, record_demos

runner = CliRunner()
FAST = [
    "finetune.episodes_per_iteration=4",
    "finetune.eval_episodes=3",
    "finetune.eval_every=1",
    "finetune.num_envs=2",
    "finetune.subprocess_envs=false",
    "finetune.ppo.minibatch_size=32",
    "finetune.ppo.epochs=2",
    "finetune.ppo.critic_warmup_iterations=1",
    "finetune.inril.il_every=2",
    "finetune.inril.il_batch_size=32",
    "task.max_steps=20",
    "finetune.ppo.target_kl=null",
]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Dataset]:
    root = tmp_path_factory.mktemp("finetune")
    demos = record_demos(root / "demos", "reach", 3)
    result = pretrain(reach_cfg(overrides=["train.steps=40", "train.eval_every=0"]), demos, root / "pre", resume=False)
    return Path(result.last_checkpoint), demos


def ft_cfg(*overrides: str) -> RunConfig:
    return load_config(robot="sim", task="reach", overrides=[*FAST, *overrides])


def test_finetune_writes_a_complete_run_folder(pretrained: tuple[Path, Dataset], tmp_path: Path) -> None:
    checkpoint, demos = pretrained
    events: list[dict] = []
    result = finetune(ft_cfg("finetune.env_steps=100"), checkpoint, demos, tmp_path / "run", on_progress=events.append)
    assert result.env_steps >= 100 and result.iterations >= 2
    assert result.pretrained is not None and result.pretrained["iteration"] == 0
    for name in ("last.pt", "last.train.pt", "best.pt", "metrics.csv", "curves.png", "run.yaml"):
        assert (tmp_path / "run" / name).is_file(), name
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(result.iterations + 1))
    assert rows[-1]["il_steps"] not in ("", "0")  # IL stepped in (m = 2)
    loaded = ckpt.load_checkpoint(tmp_path / "run" / "last.pt")
    assert loaded.step == result.env_steps and loaded.extra["algo"] == "ppo"
    assert any(e["event"] == "iteration" for e in events) and any(e["event"] == "steps" for e in events)


def test_resume_continues_exactly_as_an_uninterrupted_run(pretrained: tuple[Path, Dataset], tmp_path: Path) -> None:
    checkpoint, demos = pretrained
    cfg = ft_cfg("finetune.env_steps=230", "finetune.inril.il_every=auto", "finetune.inril.adaptive.every_k=2")
    straight = finetune(cfg, checkpoint, demos, tmp_path / "straight")
    first = finetune(cfg, checkpoint, demos, tmp_path / "split", max_iterations=2)
    assert first.iterations == 2 and first.env_steps < straight.env_steps
    with pytest.raises(FinetuneError, match="not empty"):
        finetune(cfg, checkpoint, demos, tmp_path / "split")
    resumed = finetune(cfg, checkpoint, demos, tmp_path / "split", resume=True)
    assert resumed.start_iteration == 2
    assert (resumed.iterations, resumed.env_steps) == (straight.iterations, straight.env_steps)
    a = ckpt.safe_torch_load(tmp_path / "straight" / "last.train.pt")
    b = ckpt.safe_torch_load(tmp_path / "split" / "last.train.pt")
    for part in ("policy", "critic"):
        for key, value in a["learner"][part].items():
            assert torch.equal(value, b["learner"][part][key]), f"{part}.{key}"
    assert a["learner"]["schedule"] == b["learner"]["schedule"]
    assert torch.equal(a["sampler"], b["sampler"]) and a["episodes"] == b["episodes"]
    assert [e["success_rate"] for e in straight.evals] == [e["success_rate"] for e in resumed.evals]


def test_resume_refuses_a_changed_configuration(pretrained: tuple[Path, Dataset], tmp_path: Path) -> None:
    checkpoint, demos = pretrained
    finetune(ft_cfg("finetune.env_steps=30"), checkpoint, demos, tmp_path / "run", max_iterations=1)
    with pytest.raises(FinetuneError, match=r"finetune\.inril\.il_every"):
        finetune(
            ft_cfg("finetune.env_steps=30", "finetune.inril.il_every=7"),
            checkpoint,
            demos,
            tmp_path / "run",
            resume=True,
        )


def test_finetune_refuses_what_cannot_run(pretrained: tuple[Path, Dataset], tmp_path: Path) -> None:
    checkpoint, demos = pretrained
    with pytest.raises(FinetuneError, match="--demos"):
        finetune(ft_cfg(), checkpoint, None, tmp_path / "a")
    with pytest.raises(FinetuneError, match="diffusion"):
        finetune(ft_cfg("finetune.algo=dppo"), checkpoint, demos, tmp_path / "b")


def test_residual_ppo_and_rl_only_run(pretrained: tuple[Path, Dataset], tmp_path: Path) -> None:
    checkpoint, demos = pretrained
    res = finetune(
        ft_cfg("finetune.env_steps=40", "finetune.algo=residual-ppo", "finetune.inril.separation=residual"),
        checkpoint,
        demos,
        tmp_path / "res",
    )
    loaded = ckpt.load_checkpoint(res.last_checkpoint)
    assert loaded.policy.cfg.residual is not None  # exported as base + residual head, loadable by eval
    rl = finetune(ft_cfg("finetune.env_steps=40", "finetune.inril.il_every=0"), checkpoint, None, tmp_path / "rl")
    with open(Path(rl.out) / "metrics.csv") as f:
        assert all(r["il_steps"] in ("", "0") for r in csv.DictReader(f))


def test_cli_finetune_json(pretrained: tuple[Path, Dataset], tmp_path: Path) -> None:
    checkpoint, demos = pretrained
    out = tmp_path / "cli"
    result = runner.invoke(
        app,
        [
            "finetune",
            "--robot",
            "sim",
            "--checkpoint",
            str(checkpoint),
            "--demos",
            str(demos.root),
            "--out",
            str(out),
            "--algo",
            "ppo",
            "--il-every",
            "2",
            "--separation",
            "orthogonal",
            "--env-steps",
            "40",
            "--json",
            *[a for s in FAST for a in ("--set", s)],
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["separation"] == "orthogonal" and payload["env_steps"] >= 40
    bad = runner.invoke(
        app,
        [
            "finetune",
            "--robot",
            "sim",
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(tmp_path / "x"),
            "--il-every",
            "sometimes",
        ],
    )
    assert bad.exit_code == 2 and "il-every" in bad.output


def test_vec_env_processes_match_in_process_envs() -> None:
    cfg = load_config(robot="sim", task="reach")
    keys = ["ee_pos", "ee_quat", "gripper_width", "target_pos"]
    chunk = np.tile(np.array([0.01, 0.0, -0.005, 0.0, 0.0, 0.0, 0.0]), (3, 1))
    local = HistoryEnv(cfg, keys, 2)
    first = local.reset(seed=7)
    step = local.step(chunk)
    local.close()
    assert first["ee_pos"].shape == (2, 3) and np.array_equal(first["ee_pos"][0], first["ee_pos"][1])
    with VecEnv(cfg, 2, keys, 2, subprocess=True) as vec:
        remote = vec.reset({0: 7, 1: 8})
        result = vec.step({0: chunk, 1: chunk})
    for key in keys:
        np.testing.assert_array_equal(remote[0][key], first[key])
        np.testing.assert_array_equal(result[0].obs[key], step.obs[key])
    assert result[0].steps == 3 and result[0].reward == step.reward
    assert not np.array_equal(remote[1]["target_pos"], remote[0]["target_pos"])  # another seed, another scene


def test_dppo_finetunes_a_diffusion_checkpoint(pretrained: tuple[Path, Dataset], tmp_path: Path) -> None:
    _, demos = pretrained
    pre = pretrain(
        reach_cfg("diffusion", ["train.steps=20", "train.eval_every=0", "policy.horizon=4", "policy.act_steps=2"]),
        demos,
        tmp_path / "pre",
        resume=False,
    )
    result = finetune(
        ft_cfg("finetune.env_steps=120", "finetune.algo=dppo", "finetune.dppo.ft_steps=2"),
        Path(pre.last_checkpoint),
        demos,
        tmp_path / "dppo",
    )
    loaded = ckpt.load_checkpoint(result.last_checkpoint)
    assert loaded.policy.cfg.diffusion.finetuned_steps == 2  # the frozen early steps travel with the checkpoint
    with open(Path(result.out) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert any(r["il_steps"] not in ("", "0") for r in rows) and result.env_steps >= 120
