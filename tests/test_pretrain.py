"""Pre-training end to end: TensorBoard writer, checkpoints, the policy runner, the training loop, resume, CLI eval.

The key acceptance test pre-trains a Gaussian policy on 50 scripted `reach` demonstrations and requires >= 90%
success over 20 evaluation episodes, the whole test (demos included) in under two minutes on 2 CPU cores.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from inril_robot.cli import app
from inril_robot.config import RunConfig, load_config
from inril_robot.core.contract import Contract, ContractMismatch
from inril_robot.data import Dataset
from inril_robot.data.sampler import WindowSampler
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.policies.base import Policy
from inril_robot.learning.policies.factory import make_policy
from inril_robot.learning.policies.normalizer import Normalizer
from inril_robot.learning.policies.runner import PolicyRunner
from inril_robot.learning.pretrain import DemoWindows, PretrainError, policy_obs_keys, pretrain, run_contract
from inril_robot.reporting.tb import TBWriter
from inril_robot.runtime.collect import collect
from inril_robot.runtime.env import RobotEnv
from inril_robot.runtime.registry import make_teleop

runner = CliRunner()
TINY = [
    "policy.hidden=[32, 32]",
    "train.batch_size=32",
    "train.warmup_steps=5",
    "train.eval_episodes=2",
    "train.num_threads=2",
]


def record_demos(out: Path, task: str, episodes: int, overrides: list[str] | None = None) -> Dataset:
    """`episodes` successful scripted demonstrations (state observations), recorded the way `collect` does."""
    cfg = load_config(robot="sim", task=task, overrides=overrides or [])
    with RobotEnv(cfg) as env:
        result = collect(cfg, out, episodes, env, make_teleop(cfg, env))
    assert result.kept == episodes
    return Dataset(out)


def reach_cfg(policy: str = "gaussian", overrides: list[str] | None = None) -> RunConfig:
    return load_config(robot="sim", task="reach", algo=f"bc_{policy}", overrides=[*TINY, *(overrides or [])])


def make_gaussian(contract: Contract, **policy_overrides: object) -> tuple[Policy, RunConfig]:
    """A real Gaussian policy over `contract`'s low-dim observations, with made-up normaliser statistics."""
    cfg = load_config(
        robot="sim",
        task="reach",
        algo="bc_gaussian",
        overrides=["policy.hidden=[16]", *[f"policy.{k}={v}" for k, v in policy_overrides.items()]],
    )
    keys = policy_obs_keys(contract, "state")
    shapes = {k: tuple(contract.observations[k].shape) for k in keys}
    stats = {k: {"mean": [0.1] * int(np.prod(s)), "std": [0.5] * int(np.prod(s))} for k, s in shapes.items()}
    normalizer = Normalizer(stats, {"min": [-0.02] * 6 + [0.0], "max": [0.02] * 6 + [1.0]})
    return make_policy(cfg.policy, normalizer, shapes, contract.action_dim), cfg


@pytest.fixture(scope="module")
def reach_demos(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return record_demos(tmp_path_factory.mktemp("demos") / "reach", "reach", 3)


# ------------------------------------------------------------------------------------------------- TensorBoard
def read_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from every event file in `logdir`, read by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tb_writer_round_trip(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with TBWriter(tmp_path) as tb:
        tb.add_scalar("train/loss", 0.25, 1)
        tb.add_scalars({"eval/success": 0.9, "eval/ci_low": 0.7}, 10)
        tb.add_scalar("train/loss", -3.5, 2**40)
    with TBWriter(tmp_path) as tb:  # a second writer (a resumed run) keeps the first file
        tb.add_scalar("eval/success", 1.0, 20)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and all(f.startswith("events.out.tfevents.") for f in files)
    scalars = read_scalars(tmp_path)
    assert scalars["train/loss"] == [(1, 0.25), (2**40, -3.5)]
    assert [s for s, _ in scalars["eval/success"]] == [10, 20] and scalars["eval/ci_low"][0][1] == pytest.approx(0.7)
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert all(e.wall_time > 1.6e9 for e in acc.Scalars("train/loss"))


# ------------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_is_weights_only_atomic_and_refuses_another_contract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = reach_cfg()
    contract = run_contract(cfg)
    policy, _ = make_gaussian(contract, horizon=2, act_steps=2)
    path = ckpt.save_checkpoint(
        tmp_path / "a.pt",
        policy,
        contract=contract,
        run_cfg=cfg,
        step=7,
        extra={"note": "x"},
        ema_state_dict=policy.state_dict(),
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]  # no temporary file left behind
    raw = torch.load(path, weights_only=True)  # plain containers and tensors only
    assert raw["step"] == 7 and raw["format_version"] == ckpt.FORMAT_VERSION and raw["action_dim"] == 7
    assert raw["contract"]["horizon"] == 2 and raw["contract"]["act_steps"] == 2  # the policy's chunking
    assert "normalizer.action_min" in raw["state_dict"] and raw["obs_shapes"]["target_pos"] == [3]

    loaded = ckpt.load_checkpoint(path, expect_contract=contract)  # horizon/act_steps are the policy's own
    assert loaded.weights == "ema" and loaded.step == 7 and loaded.run_cfg == cfg
    assert loaded.weights_sha256 == raw["weights_sha256"]["ema"]
    obs = {k: torch.zeros(1, 1, *s) for k, s in policy.obs_shapes.items()}
    assert torch.equal(loaded.policy.predict(obs), policy.eval().predict(obs))

    other = load_config(robot="sim", task="reach", overrides=["robot.control_hz=20"])
    with pytest.raises(ContractMismatch, match="control_hz") as info:
        ckpt.load_checkpoint(path, expect_contract=run_contract(other))
    assert info.value.field == "control_hz" and "a.pt" in str(info.value)
    lift = load_config(robot="sim", task="lift")
    with pytest.raises(ContractMismatch, match=r"observations\."):
        ckpt.load_checkpoint(path, expect_contract=run_contract(lift))

    # a crash while writing leaves the previous checkpoint intact and no temporary file
    def broken_save(obj: object, f: object) -> None:
        f.write(b"partial")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(path, policy, contract=contract, run_cfg=cfg, step=8)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]
    assert ckpt.load_checkpoint(path).step == 7


def test_checkpoint_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ckpt.CheckpointError, match=r"not found.*missing\.pt"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(256))
    with pytest.raises(ckpt.CheckpointError, match=r"garbage\.pt.*corrupt"):
        ckpt.load_checkpoint(garbage)

    cfg = reach_cfg()
    contract = run_contract(cfg)
    policy, _ = make_gaussian(contract)
    good = ckpt.save_checkpoint(tmp_path / "good.pt", policy, contract=contract, run_cfg=cfg, step=1)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ckpt.CheckpointError, match=r"truncated\.pt"):
        ckpt.load_checkpoint(truncated)
    tampered = torch.load(good, weights_only=True)
    tampered["state_dict"]["mean_head.bias"] += 1.0
    torch.save(tampered, tmp_path / "tampered.pt")
    with pytest.raises(ckpt.CheckpointError, match=r"tampered\.pt.*sha256"):
        ckpt.load_checkpoint(tmp_path / "tampered.pt")


# ---------------------------------------------------------------------------------------------------- runner
def test_runner_executes_act_steps_of_each_chunk_and_restarts_per_episode() -> None:
    cfg = reach_cfg()
    contract = run_contract(cfg)
    policy, _ = make_gaussian(contract, horizon=4, act_steps=3, n_obs_steps=2)
    policy.eval()
    seen: list[dict[str, torch.Tensor]] = []
    predict = policy.predict

    def spy(
        obs: dict[str, torch.Tensor], deterministic: bool = True, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        seen.append(obs)
        return predict(obs, deterministic, generator)

    policy.predict = spy  # type: ignore[method-assign]
    run = PolicyRunner(policy, contract, deterministic=False, seed=3)
    env = SimpleNamespace(steps=0)

    def frame(i: int) -> dict[str, np.ndarray]:
        return {k: np.full(s.shape, i, dtype=s.dtype) for k, s in contract.observations.items()}

    actions = []
    for i in range(7):
        env.steps = i
        actions.append(run(env, frame(i)))
    assert run.predictions == 3  # steps 0, 3, 6: three actions of each four-step chunk are executed
    assert all(a.shape == (7,) and a.dtype == np.float64 and 0.0 <= a[6] <= 1.0 for a in actions)
    first, second = seen[0], seen[1]
    assert first["ee_pos"].shape == (1, 2, 3) and torch.all(first["ee_pos"] == 0)  # history filled with obs 0
    assert second["ee_pos"][0, :, 0].tolist() == [2.0, 3.0]  # history of the last two observations at step 3

    env.steps = 0  # a new episode the runner was not told about: history and queue start again
    again = run(env, frame(0))
    assert run.predictions == 4 and torch.all(seen[-1]["ee_pos"] == 0)
    # seeded per episode: episode seed 11 gives the same sampled actions twice
    run.reset(seed=11)
    a = [run(SimpleNamespace(steps=i), frame(i)) for i in range(4)]
    run.reset(seed=11)
    b = [run(SimpleNamespace(steps=i), frame(i)) for i in range(4)]
    assert np.array_equal(np.stack(a), np.stack(b)) and not np.array_equal(a[0], again)


# ------------------------------------------------------------------------------------------------ training data
def test_windows_align_history_and_chunk(reach_demos: Dataset) -> None:
    keys = ["ee_pos", "target_pos"]
    windows = DemoWindows(reach_demos, keys, n_obs_steps=2, horizon=3)
    assert len(windows) == reach_demos.num_steps  # every step is the current step of exactly one window
    per_window = WindowSampler(reach_demos, ["obs/ee_pos", "action/executed"], 3, history=2)  # not preloaded
    gathered = windows.sampler.windows(np.arange(len(windows)))  # the in-memory batch path
    checked = 0
    for j in range(len(windows)):
        w = per_window[j]
        position, t = windows.sampler.index[j]  # t: the current step
        episode = windows.sampler.episodes[int(position)]
        obs, act, n = episode.load("obs/ee_pos"), episode.load("action/executed"), episode.length
        assert np.array_equal(w["obs/ee_pos"][:2], obs[[max(t - 1, 0), t]])  # history ending at t
        assert np.array_equal(w["action/executed"][1:], act[np.minimum(np.arange(t, t + 3), n - 1)])  # from t on
        assert all(np.array_equal(gathered[k][j], a) for k, a in w.items())  # both paths read the same windows
        checked += 1
    obs, actions = windows.sample(5, np.random.default_rng(0))
    assert obs["ee_pos"].shape == (5, 2, 3) and actions.shape == (5, 3, 7) and actions.dtype == np.float32
    assert checked == len(windows)


# ------------------------------------------------------------------------------------------------ the training loop
def test_pretrain_writes_its_outputs_and_resumes_exactly(reach_demos: Dataset, tmp_path: Path) -> None:
    sets = ["train.steps=20", "train.eval_every=10", "train.checkpoint_every=10"]
    straight = pretrain(reach_cfg(overrides=sets), reach_demos, tmp_path / "straight", resume=False)
    out = tmp_path / "straight"
    for name in ("run.yaml", "metrics.csv", "curves.png", "last.pt", "last.train.pt", "best.pt"):
        assert (out / name).is_file(), name
    assert straight.step == 20 and straight.start_step == 0 and [e["step"] for e in straight.evals] == [10, 20]
    assert straight.evals[-1]["success"]["trials"] == 2
    tb = read_scalars(out)
    assert [s for s, _ in tb["eval/success"]] == [10, 20] and len(tb["train/loss"]) == 20
    assert torch.load(out / "last.train.pt", weights_only=True)["step"] == 20

    # a run killed at step 12 resumes from its step-10 checkpoint and ends where the uninterrupted run did
    crashed = tmp_path / "crashed"

    def crash(step: int, *_: object) -> None:
        if step == 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(reach_cfg(overrides=sets), reach_demos, crashed, resume=False, on_progress=crash)
    assert ckpt.read_checkpoint(crashed / "last.pt")["step"] == 10
    resumed = pretrain(reach_cfg(overrides=sets), reach_demos, crashed, resume=True)
    assert resumed.start_step == 10 and resumed.step == 20 and [e["step"] for e in resumed.evals] == [20]
    a, b = torch.load(out / "last.pt", weights_only=True), torch.load(crashed / "last.pt", weights_only=True)
    assert a["weights_sha256"] == b["weights_sha256"]  # raw and EMA weights bit-identical
    steps = [int(line.split(",")[0]) for line in (crashed / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps)) and steps[-1] == 20  # rows logged after the checkpoint were dropped

    longer = pretrain(reach_cfg(overrides=[*sets, "train.steps=25"]), reach_demos, crashed, resume=True)
    assert longer.start_step == 20 and longer.step == 25

    with pytest.raises(PretrainError, match="use --resume or a new --out"):
        pretrain(reach_cfg(overrides=sets), reach_demos, out, resume=False)
    with pytest.raises(PretrainError, match=r"policy\.hidden"):
        pretrain(reach_cfg(overrides=[*sets, "policy.hidden=[64]"]), reach_demos, out, resume=True)


def test_pretrain_refuses_a_dataset_that_lacks_what_the_run_observes(reach_demos: Dataset, tmp_path: Path) -> None:
    image = load_config(
        robot="sim", task="reach", cameras="sim_front", algo="bc_gaussian", overrides=[*TINY, "task.observation=image"]
    )
    with pytest.raises(ContractMismatch, match=r"observations\.front_rgb"):
        pretrain(image, reach_demos, tmp_path / "image", resume=False)
    with pytest.raises(ContractMismatch, match="control_hz"):
        pretrain(reach_cfg(overrides=["robot.control_hz=20"]), reach_demos, tmp_path / "hz", resume=False)
    with pytest.raises(PretrainError, match="task 'reach', not 'lift'"):
        pretrain(load_config(robot="sim", task="lift", algo="bc_gaussian"), reach_demos, tmp_path / "l", resume=False)


def test_image_policy_trains_on_camera_demos_and_evaluates(tmp_path: Path) -> None:
    small = ["cameras.front.width=32", "cameras.front.height=32"]
    cfg = load_config(robot="sim", task="reach", cameras="sim_front", overrides=small)
    with RobotEnv(cfg) as env:  # recorded in state mode: object state is stored beside the images
        collect(cfg, tmp_path / "demos", 2, env, make_teleop(cfg, env))
    demos = Dataset(tmp_path / "demos")
    run_cfg = load_config(
        robot="sim",
        task="reach",
        cameras="sim_front",
        algo="bc_gaussian",
        overrides=[
            *small,
            *TINY,
            "task.observation=image",
            "task.max_steps=5",
            "train.steps=4",
            "train.eval_every=4",
            "policy.image.channels=[8]",
            "policy.image.feature_dim=16",
        ],
    )
    result = pretrain(run_cfg, demos, tmp_path / "run", resume=False)
    loaded = ckpt.load_checkpoint(result.last_checkpoint, expect_contract=run_contract(run_cfg))
    assert set(loaded.policy.obs_shapes) == {"ee_pos", "ee_quat", "gripper_width", "front_rgb"}  # no target_pos
    assert result.evals[-1]["predictions"] == result.evals[-1]["env_steps"] > 0  # horizon 1: one per step


# ------------------------------------------------------------------------------------------------------ the CLI
def invoke(*args: str) -> tuple[int, dict, str]:
    result = runner.invoke(app, [*args, "--json"])
    lines = result.stdout.strip().splitlines()
    payload = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    return result.exit_code, payload, result.output


def test_cli_pretrain_then_eval_is_deterministic_for_a_seed(reach_demos: Dataset, tmp_path: Path) -> None:
    out = tmp_path / "run"
    sets = [x for s in [*TINY, "train.eval_every=0", "policy.diffusion.train_steps=10"] for x in ("--set", s)]
    code, payload, output = invoke(
        "pretrain",
        "--dataset",
        str(reach_demos.root),
        "--policy",
        "diffusion",
        "--task",
        "reach",
        "--out",
        str(out),
        "--steps",
        "20",
        *sets,
    )
    assert code == 0, output
    assert payload["step"] == 20 and payload["weights"] == "ema"

    ckpt_path = str(out / "last.pt")
    args = (
        "eval",
        "--checkpoint",
        ckpt_path,
        "--robot",
        "sim",
        "--task",
        "reach",
        "--episodes",
        "3",
        "--seed",
        "5",
        "--set",
        "task.max_steps=15",
    )
    first, second = invoke(*args), invoke(*args)
    assert first[0] == 0 and second[0] == 0, first[2]
    keep = ("success", "per_episode", "mean_return", "mean_length", "weights_sha256", "step", "weights")
    assert {k: first[1][k] for k in keep} == {k: second[1][k] for k in keep}
    assert first[1]["step"] == 20 and len(first[1]["weights_sha256"]) == 64
    raw = invoke(
        "eval",
        "--checkpoint",
        ckpt_path,
        "--task",
        "reach",
        "--episodes",
        "1",
        "--raw-weights",
        "--set",
        "task.max_steps=5",
    )
    assert raw[0] == 0 and raw[1]["weights"] == "raw" and raw[1]["weights_sha256"] != first[1]["weights_sha256"]

    video = tmp_path / "eval.mp4"  # a state policy: the video camera is added for the video only
    code, payload, output = invoke(
        "eval", "--checkpoint", ckpt_path, "--episodes", "1", "--video", str(video), "--set", "task.max_steps=10"
    )
    assert code == 0 and video.stat().st_size > 0 and payload["video"] == str(video), output

    code, _, output = invoke("eval", "--checkpoint", ckpt_path, "--episodes", "1", "--set", "robot.control_hz=20")
    assert code == 2 and "control_hz" in output
    code, _, output = invoke("eval", "--checkpoint", ckpt_path, "--task", "lift", "--episodes", "1")
    assert code == 2 and "task" in output
    code, _, output = invoke("eval", "--checkpoint", str(tmp_path / "nope.pt"), "--episodes", "1")
    assert code == 2 and "nope.pt" in output
    code, _, output = invoke(
        "pretrain", "--dataset", str(reach_demos.root), "--task", "lift", "--out", str(tmp_path / "x")
    )
    assert code == 2 and "reach" in output and "lift" in output
    code, _, output = invoke(
        "pretrain",
        "--dataset",
        str(reach_demos.root),
        "--policy",
        "diffusion",
        "--out",
        str(out),
        "--steps",
        "20",
        *sets,
    )
    assert code == 2 and "--resume" in output


# ------------------------------------------------------------------------------------------ acceptance: reach BC
@pytest.mark.timeout(300)
def test_gaussian_bc_on_50_reach_demos_succeeds(tmp_path: Path) -> None:
    """The acceptance test: >= 90% success over 20 evaluation episodes, all of it in under two minutes (2 cores)."""
    started = time.perf_counter()
    demos = record_demos(tmp_path / "reach50", "reach", 50)
    collected = time.perf_counter() - started
    cfg = load_config(
        robot="sim",
        task="reach",
        algo="bc_gaussian",
        overrides=[
            "train.steps=600",
            "train.batch_size=256",
            "train.lr=0.001",
            "train.warmup_steps=50",
            "train.eval_every=300",
            "train.eval_episodes=20",
            "train.checkpoint_every=300",
            "train.num_threads=2",
        ],
    )
    result = pretrain(cfg, demos, tmp_path / "run", resume=False)
    final = result.evals[-1]["success"]
    elapsed = time.perf_counter() - started
    print(
        f"\nreach BC: {len(demos)} demos ({demos.num_steps} steps) in {collected:.1f}s; "
        f"{result.step} steps at {result.samples_per_s:,.0f} samples/s; success {final['successes']}/20 "
        f"[{final['ci95_low']:.2f}, {final['ci95_high']:.2f}]; total {elapsed:.1f}s"
    )
    assert final["trials"] == 20 and final["rate"] >= 0.9
    # ~10-50 s here; the time is printed, not asserted (shared machines are noisy), and the timeout guards it


# ------------------------------------------------------------------------------------- report: noisy lift (slow)
@pytest.mark.slow
@pytest.mark.parametrize("policy", ["gaussian", "diffusion"])
def test_report_bc_on_noisy_lift_demos(policy: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Not a pass/fail bar: what BC reaches on 50 lift demos recorded with expert_noise=0.5 (printed)."""
    root = tmp_path_factory.getbasetemp() / "lift_noisy50"
    demos = Dataset(root) if root.exists() else record_demos(root, "lift", 50, ["task.expert_noise=0.5"])
    cfg = load_config(robot="sim", task="lift", algo=f"bc_{policy}", overrides=["task.expert_noise=0.5"])
    result = pretrain(cfg, demos, tmp_path_factory.mktemp(f"lift_{policy}"), resume=False)
    for e in result.evals:
        s = e["success"]
        print(
            f"\nlift {policy} step {e['step']}: {s['successes']}/{s['trials']} [{s['ci95_low']:.2f}, "
            f"{s['ci95_high']:.2f}] mean length {e['mean_length']:.1f}"
        )
    assert result.step == cfg.train.steps


# ------------------------------------------------------------------------------ slow: image-conditioned diffusion
@pytest.mark.slow
def test_image_conditioned_diffusion_trains_on_rendered_demos(tmp_path: Path) -> None:
    """A diffusion policy on two rendered cameras (front + wrist, 64 px) learns reach from 30 rendered demos."""
    cams = ["cameras.front.width=64", "cameras.front.height=64", "cameras.wrist.width=64", "cameras.wrist.height=64"]
    cfg = load_config(robot="sim", task="reach", cameras="sim_front_wrist", overrides=cams)
    with RobotEnv(cfg) as env:
        collect(cfg, tmp_path / "demos", 30, env, make_teleop(cfg, env))
    demos = Dataset(tmp_path / "demos")
    run_cfg = load_config(
        robot="sim",
        task="reach",
        cameras="sim_front_wrist",
        algo="bc_diffusion",
        overrides=[
            *cams,
            "task.observation=image",
            "train.steps=1500",
            "train.batch_size=64",
            "train.eval_every=1500",
            "train.eval_episodes=10",
            "train.checkpoint_every=1500",
            "policy.horizon=4",
            "policy.act_steps=2",
        ],
    )
    result = pretrain(run_cfg, demos, tmp_path / "run", resume=False)
    final = result.evals[-1]["success"]
    with open(Path(result.out) / "metrics.csv") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f) if row.get("loss")]
    print(
        f"\nimage diffusion reach: loss {losses[0]:.3f} -> {losses[-1]:.3f}; "
        f"success {final['successes']}/{final['trials']} [{final['ci95_low']:.2f}, {final['ci95_high']:.2f}]"
    )
    assert losses[-1] < 0.5 * losses[0]
    loaded = ckpt.load_checkpoint(result.last_checkpoint, expect_contract=run_contract(run_cfg))
    assert {"front_rgb", "wrist_rgb"} <= set(loaded.policy.obs_shapes)
