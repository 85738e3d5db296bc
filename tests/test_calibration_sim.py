"""Ground truth in simulation: a ChArUco board rendered by MuJoCo, the arm moved through the safety envelope, the
recovered extrinsics within 5 mm / 1 degree and the intrinsics within 1% of the simulated camera's."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from inril_robot.calibration.capture import capture_views, plan_poses
from inril_robot.calibration.run import TILT, WRIST_PIVOT, calibration_config
from inril_robot.calibration.simtruth import camera_truth, intrinsics_truth
from inril_robot.calibration.solve import calibrate_intrinsics, pose_error, solve_hand_eye
from inril_robot.cli import app
from inril_robot.core.geometry import quat_to_matrix
from inril_robot.hardware.calibration_file import load_calibration
from inril_robot.runtime.env import RobotEnv
from inril_robot.vision.board import BoardSpec

POS_BOUND, ROT_BOUND_DEG, INTR_BOUND = 0.005, 1.0, 0.01
SPEC = BoardSpec()


@pytest.mark.parametrize(("camera", "mode", "poses"), [("front", "eye_to_hand", 12), ("wrist", "eye_in_hand", 8)])
def test_ground_truth_bounds(sim_cfg, camera: str, mode: str, poses: int) -> None:
    cfg, cam = calibration_config(sim_cfg("reach", cameras="sim_front_wrist"), camera, SPEC)
    with RobotEnv(cfg) as env:
        _, info = env.reset(seed=0)
        home = info["state"]
        plan = plan_poses(
            home.ee_pos,
            quat_to_matrix(home.ee_quat),
            poses,
            cfg.safety,
            pivot_distance=WRIST_PIVOT if mode == "eye_in_hand" else 0.0,
            tilt=TILT[mode],
        )
        cap = capture_views(env, camera, SPEC, plan)
        truth = camera_truth(env.robot.sim, camera)
        k_true = intrinsics_truth(env.robot.sim, camera, cam.width, cam.height)
    assert len(cap.detections) >= poses - 1, cap.skipped
    intr = calibrate_intrinsics(cap.detections, SPEC, (cam.width, cam.height))
    k = intr.camera_matrix
    for est, true in (
        (k[0, 0], k_true[0, 0]),
        (k[1, 1], k_true[1, 1]),
        (k[0, 2], k_true[0, 2]),
        (k[1, 2], k_true[1, 2]),
    ):
        assert abs(est / true - 1) < INTR_BOUND, (k, k_true)
    for k_used in (k_true, k):  # with the camera's own intrinsics, and with the ones just calibrated
        r = solve_hand_eye(
            mode,
            cap.t_base_tcp,
            cap.detections,
            SPEC,
            k_used,
            np.zeros(5) if k_used is k_true else intr.distortion,
            uncertainty=False,
        )
        t_err, r_err = pose_error(r.transform, truth)
        print(f"{mode}: {t_err * 1000:.3f} mm, {np.degrees(r_err):.4f} deg ({r.method})")
        assert t_err < POS_BOUND and np.degrees(r_err) < ROT_BOUND_DEG
        assert not r.outliers


def test_cli_hand_eye_writes_a_file_the_sim_camera_then_uses(tmp_path: Path, sim_cfg) -> None:
    out = tmp_path / "front.yaml"
    result = CliRunner().invoke(
        app,
        ["calibrate", "hand-eye", "--robot", "sim", "--camera", "front", "--poses", "6", "--out", str(out), "--json"],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["truth_error"]["position_mm"] < 5 and payload["truth_error"]["rotation_deg"] < 1
    calib = load_calibration(out)
    assert calib.extrinsics is not None and calib.extrinsics.parent_frame == "base"
    assert len(calib.residuals.per_pose) == 6 and calib.uncertainty.position_m > 0

    # a sim camera placed by the file: its pose is the file's, its field of view the file's
    cfg = sim_cfg(
        "reach",
        cameras="sim_front",
        overrides=[f"cameras.front.calibration={out}", "cameras.front.pos=[0.0, 0.0, 2.0]"],
    )
    with RobotEnv(cfg) as env:
        obs, _ = env.reset(seed=0)
        t_err, r_err = pose_error(camera_truth(env.robot.sim, "front"), calib.extrinsics.matrix())
        assert t_err < 1e-6 and r_err < 1e-6  # cameras.front.pos is ignored: the file wins
        k = env.cameras[0].intrinsics  # issue 19: it renders the file's capture mode, the pipeline crops + resizes
        assert (k.width, k.height, k.fy) == (calib.intrinsics.width, calib.intrinsics.height, calib.intrinsics.fy)
        k_policy = env.pipelines["front"].intrinsics(k)
        assert k_policy.fy == pytest.approx(calib.intrinsics.fy * 128 / calib.intrinsics.height, rel=1e-6)
        assert obs["front_rgb"].shape == (128, 128, 3)


def test_board_scene_is_off_by_default(sim_cfg) -> None:
    with RobotEnv(sim_cfg("lift")) as env:
        assert env.robot.sim.model.ntex == 0 or "calibration_board" not in [
            env.robot.sim.model.texture(i).name for i in range(env.robot.sim.model.ntex)
        ]
