"""eval's files: eval.json and per-episode H.264 videos with an overlay in the checkpoint's run folder; a file that
is not a checkpoint is one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

import inril_robot.drivers.sim  # noqa: F401 - GL backend before mujoco
from inril_robot.cli import app
from inril_robot.config import load_config
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.policies.factory import make_policy
from inril_robot.learning.policies.normalizer import Normalizer
from inril_robot.learning.pretrain import policy_obs_keys, run_contract
from inril_robot.reporting.video import VideoWriter, overlay

runner = CliRunner()


@pytest.fixture(scope="module")
def reach_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Gaussian state policy with random weights (what eval writes does not depend on how well it does)."""
    cfg = load_config(robot="sim", task="reach", algo="bc_gaussian")
    contract = run_contract(cfg)
    shapes = {k: tuple(contract.observations[k].shape) for k in policy_obs_keys(contract, "state")}
    stats = {k: {"mean": [0.0] * s[0], "std": [1.0] * s[0]} for k, s in shapes.items()}
    policy = make_policy(
        cfg.policy,
        Normalizer(stats, {"min": [-0.02] * 6 + [0.0], "max": [0.02] * 6 + [1.0]}),
        shapes,
        contract.action_dim,
    )
    run = tmp_path_factory.mktemp("run")
    return ckpt.save_checkpoint(run / "last.pt", policy, contract=contract, run_cfg=cfg, step=7)


def decode(path: Path) -> tuple[str, list[np.ndarray]]:
    with av.open(str(path)) as container:
        codec = container.streams.video[0].codec_context.name
        return codec, [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.mark.timeout(120)
def test_eval_writes_eval_json_and_episode_videos(reach_checkpoint: Path) -> None:
    result = runner.invoke(
        app,
        [
            "eval",
            "--checkpoint",
            str(reach_checkpoint),
            "--episodes",
            "2",
            "--videos",
            "--video-episodes",
            "2",
            "--video-size",
            "96",
            "--set",
            "task.max_steps=6",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    folder = reach_checkpoint.parent / "eval" / "last"
    saved = json.loads((folder / "eval.json").read_text())
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert saved == printed
    assert saved["episodes"] == 2 and saved["step"] == 7 and len(saved["per_episode"]) == 2
    assert saved["episode_videos"] == [str(folder / "episode_000.mp4"), str(folder / "episode_001.mp4")]
    codec, frames = decode(folder / "episode_001.mp4")
    assert codec == "h264"
    length = saved["per_episode"][1]["length"]
    assert len(frames) == 1 + length - 1 + 10  # reset frame, one per step, the last held for a second at 10 Hz
    assert frames[0].shape == (96, 96, 3)
    assert frames[0].std() > 5  # a rendered scene, not a blank frame


def test_overlay_marks_only_the_corner() -> None:
    frame = np.full((120, 160, 3), 200, np.uint8)
    marked = overlay(frame, ["episode 3 (seed 3)  SUCCESS", "step 12/50  reward 1.00  return 1.00"])
    assert (marked[:20, :60] != 200).any()
    assert (marked[80:] == 200).all()
    assert (frame == 200).all()  # the input is left as it was


def test_video_writer_h264_odd_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    with VideoWriter(tmp_path / "v.mp4", fps=10) as writer:
        for _ in range(5):
            writer.add(rng.integers(0, 255, (33, 47, 3), dtype=np.uint8))
    codec, frames = decode(tmp_path / "v.mp4")
    assert codec == "h264" and len(frames) == 5 and frames[0].shape == (34, 48, 3)


@pytest.mark.parametrize("content", [b"hello\n", b'{"not": "a checkpoint"}', b"PK\x03\x04 truncated zip"])
def test_non_checkpoint_file_is_one_clear_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    result = runner.invoke(app, ["eval", "--checkpoint", str(path), "--episodes", "1"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "model.pt is not an inril-robot checkpoint" in lines[0], result.output
    assert "weights_only=False" not in result.output and "Traceback" not in result.output


@pytest.mark.timeout(60)
def test_eval_on_the_arm_needs_execute_and_a_loadable_detector(reach_checkpoint: Path) -> None:
    result = runner.invoke(app, ["eval", "--checkpoint", str(reach_checkpoint), "--robot", "franka"])
    assert result.exit_code == 2 and "add --execute" in result.output, result.output
    result = runner.invoke(
        app, ["eval", "--checkpoint", str(reach_checkpoint), "--robot", "franka", "--execute", "--detector", "nope"]
    )
    assert result.exit_code == 2 and "reward.detector 'nope' is neither a detector file" in result.output, result.output


def test_on_the_arm_the_envs_own_detector_decides_and_below_threshold_leaves_it_to_the_operator() -> None:
    """`reward.source=detector` on a real arm: the step's success is the detector's; no injected callable needed.
    Below its threshold it has no opinion, so at the time limit the operator is asked (never a silent failure)."""
    from types import SimpleNamespace

    from inril_robot.runtime.rollout import RobotCell, _cell_outcome

    asked: list[str] = []
    loop = SimpleNamespace(
        env=SimpleNamespace(cfg=SimpleNamespace(task=SimpleNamespace(max_steps=10))),
        decide=lambda say, question: asked.append(question) or False,
    )
    cell = RobotCell(teleop=None)
    assert _cell_outcome(cell, loop, {}, True, 3, detected=True) == (True, "detector", True)  # type: ignore[arg-type]
    assert _cell_outcome(cell, loop, {}, False, 3, detected=False) == (False, "", False)  # type: ignore[arg-type]
    assert not asked
    assert _cell_outcome(cell, loop, {}, True, 10, detected=False) == (False, "operator", True)  # type: ignore[arg-type]
    assert asked == ["episode over after 10 steps: success?"]
