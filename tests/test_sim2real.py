"""sim2real: randomisation knobs added for transfer, sim pre-training export, and the sim-to-sim gap command."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from inril_robot.calibration.solve import make_transform
from inril_robot.cli import app
from inril_robot.data.store import Dataset
from inril_robot.hardware.calibration_file import CalibrationFile, Extrinsics, Intrinsics, Uncertainty, save_calibration
from inril_robot.learning.policies.checkpoint import read_checkpoint
from inril_robot.runtime.env import RobotEnv
from inril_robot.sim2real.pretrain import sim_config, sim_pretrain


def front_calibration(path: Path, sigma_m: float = 0.004, sigma_rad: float = 0.01) -> Path:
    look_down = make_transform(np.diag([1.0, -1.0, -1.0]), [0.5, 0.0, 1.0])
    return save_calibration(
        CalibrationFile(
            camera="front",
            intrinsics=Intrinsics(width=128, height=128, fx=110.0, fy=110.0, cx=63.5, cy=63.5),
            extrinsics=Extrinsics.from_matrix(look_down, "base"),
            uncertainty=Uncertainty(position_m=sigma_m, rotation_rad=sigma_rad),
        ),
        path,
    )


def test_control_rate_jitter_varies_the_physics_time_per_action(sim_cfg) -> None:
    cfg = sim_cfg("reach", overrides=["randomization.control_rate_jitter=0.3"])
    with RobotEnv(cfg) as env:
        periods = set()
        for seed in range(6):
            env.reset(seed=seed)
            t0 = env.robot.sim.data.time
            env.step(np.zeros(7))
            periods.add(round(env.robot.sim.data.time - t0, 4))
        assert len(periods) > 1 and all(0.07 - 1e-9 <= p <= 0.13 + 1e-9 for p in periods)
    with RobotEnv(sim_cfg("reach")) as env:  # off by default: exactly 1 / control_hz
        env.reset(seed=0)
        t0 = env.robot.sim.data.time
        env.step(np.zeros(7))
        assert env.robot.sim.data.time - t0 == pytest.approx(0.1)


def test_calibrated_camera_jitter_scales_with_the_file_uncertainty(tmp_path: Path, sim_cfg) -> None:
    path = front_calibration(tmp_path / "front.yaml")
    offsets = {}
    for k in (1.0, 3.0):
        cfg = sim_cfg(
            "reach",
            cameras="sim_front",
            overrides=[f"cameras.front.calibration={path}", f"randomization.camera_calibration_sigmas={k}"],
        )
        with RobotEnv(cfg) as env:
            world = env.robot.sim
            cam = world.model.camera("front").id
            nominal = world.nominal["cam_pos"][cam].copy()
            offsets[k] = [
                np.linalg.norm(world.model.cam_pos[cam] - nominal) for seed in range(30) if env.reset(seed=seed)
            ]
    rms1, rms3 = (float(np.sqrt(np.mean(np.square(offsets[k])))) for k in (1.0, 3.0))
    assert rms1 == pytest.approx(0.004, rel=0.35) and rms3 == pytest.approx(0.012, rel=0.35)


def test_sim_pretrain_exports_a_checkpoint_for_the_real_robot(tmp_path: Path) -> None:
    calib = front_calibration(tmp_path / "front.yaml")
    cfg = sim_config(
        "reach",
        "sim_front",
        "light",
        [
            "train.steps=20",
            "train.eval_every=0",
            "train.checkpoint_every=20",
            "train.batch_size=32",
            f"cameras.front.calibration={calib}",
            "cameras.front.width=32",
            "cameras.front.height=32",
        ],
    )
    assert cfg.safety.max_step == 0.01  # the real robot's envelope, not the sim preset's
    hooked = []
    result = sim_pretrain(cfg, tmp_path / "run", demos=2, eval_episodes=1, finetune=hooked.append)
    assert hooked == [Path(result.checkpoint)]
    assert result.real_robot_issues and "task.observation=state" in result.real_robot_issues[-1]
    assert len(result.real_robot_issues) == 1  # otherwise the contract matches --robot franka's
    extra = read_checkpoint(result.checkpoint)["extra"]
    assert extra["target_robot"] == "franka" and extra["calibration"]["front"].startswith(f"{calib}#sha256:")
    assert Dataset(tmp_path / "run" / "demos").info["calibration"].startswith(f"front={calib}#sha256:")


def test_bench_sim2sim_writes_the_table(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "sim2sim",
            "--task",
            "reach",
            "--demos",
            "1",
            "--steps",
            "5",
            "--episodes",
            "1",
            "--out",
            str(tmp_path),
            "--json",
            "--set",
            "train.batch_size=16",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert [(c["trained_on"], c["evaluated_on"]) for c in payload["cells"]] == [
        ("nominal", "nominal"),
        ("nominal", "randomised"),
        ("randomised", "nominal"),
        ("randomised", "randomised"),
    ]
    assert "| trained on |" in (tmp_path / "sim2sim.md").read_text()
    assert (tmp_path / "sim2sim.csv").read_text().startswith("trained_on,evaluated_on,successes,trials,rate")
