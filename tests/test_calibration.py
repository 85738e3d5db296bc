"""Calibration without the simulator: boards, detection, hand-eye on synthetic projections, the file format."""

import re
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from inril_robot.calibration.solve import METHODS, CalibrationError, invert, make_transform, pose_error, solve_hand_eye
from inril_robot.config import CameraConfig
from inril_robot.core.geometry import rotvec_to_matrix
from inril_robot.drivers.sim.placement import placement_from_calibration
from inril_robot.hardware.calibration_file import (
    CalibrationFile,
    CalibrationFileError,
    Extrinsics,
    Intrinsics,
    calibration_ref,
    load_calibration,
    save_calibration,
)
from inril_robot.vision.board import BoardError, BoardSpec, board_image, detect, write_pdf, write_png

SPEC = BoardSpec()
K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])


def test_board_spec_rejects_bad_values() -> None:
    with pytest.raises(BoardError, match="marker_length"):
        BoardSpec(marker_length=0.05)
    with pytest.raises(BoardError, match="dictionary"):
        BoardSpec(dictionary="DICT_NOPE")
    with pytest.raises(BoardError, match="markers"):
        BoardSpec(10, 12, dictionary="DICT_4X4_50")


def test_printables_have_the_exact_size(tmp_path: Path) -> None:
    data = write_pdf(SPEC, tmp_path / "board.pdf").read_bytes()
    assert b"/MediaBox [ 0 0 841.8897637795 595.2755905512 ]" in data  # A4 landscape: 200 mm does not fit across
    streams = [zlib.decompress(m) for m in re.findall(rb"stream\r?\n(.*?)endstream", data, re.S) if m.startswith(b"x")]
    w_pt, h_pt = 200 / 25.4 * 72, 160 / 25.4 * 72  # the image is drawn exactly 200 x 160 mm
    assert any(f"{w_pt:.10f} 0 0\n-{h_pt:.10f}".encode() in s for s in streams)
    png = write_png(SPEC, tmp_path / "board.png", dpi=254)  # 254 dpi = 10 px/mm: 40 mm squares are 400 px
    img = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    margin = 100  # 10 mm
    assert img.shape == (4 * 400 + 2 * margin, 5 * 400 + 2 * margin)
    with pytest.raises(BoardError, match="does not fit"):
        write_pdf(BoardSpec(8, 8, 0.05, 0.04), tmp_path / "big.pdf")


def test_detect_finds_every_corner_and_names_the_image_it_fails_on() -> None:
    img = board_image(SPEC, 80, margin_px=40)
    det = detect(img, SPEC)
    assert sorted(det.ids.tolist()) == list(range(SPEC.num_corners))
    expected = (det.object_points(SPEC)[:, :2] / SPEC.square_length) * 80 + 40 - 0.5
    assert np.abs(det.corners - expected).max() < 0.2
    with pytest.raises(BoardError, match="board not detected in image 7"):
        detect(np.full((200, 200), 255, np.uint8), SPEC, what="image 7")


def synthetic_views(mode: str, n: int, noise_px: float = 0.0, seed: int = 0):
    """Robot poses and exact (or noisy) corner detections for a known X and board."""
    from inril_robot.vision.board import Detection

    rng = np.random.default_rng(seed)
    flip = np.diag([1.0, -1.0, -1.0])  # tool z down
    if mode == "eye_in_hand":
        x = make_transform(rotvec_to_matrix(np.array([0.0, 0.0, 0.2])), [0.05, 0.0, -0.05])  # camera in TCP
        board = make_transform(flip, [0.35, 0.1, 0.0])  # face up on the table, viewed from above
    else:
        x = make_transform(rotvec_to_matrix(np.array([0.0, -2.2, 0.0])), [1.1, 0.0, 0.5])  # camera in base
        board = make_transform(rotvec_to_matrix(np.array([0.0, 2.2, 0.0])), [0.0, 0.0, 0.05])  # board in TCP
    poses, dets = [], []
    obj = SPEC.corner_points()
    for _ in range(n):
        rot = flip @ rotvec_to_matrix(rng.uniform(-0.3, 0.3, 3))
        tcp = make_transform(rot, np.array([0.45, 0.0, 0.35]) + rng.uniform(-0.05, 0.05, 3))
        t_cb = invert(x) @ invert(tcp) @ board if mode == "eye_in_hand" else invert(x) @ tcp @ board
        proj, _ = cv2.projectPoints(obj, cv2.Rodrigues(t_cb[:3, :3])[0], t_cb[:3, 3], K, np.zeros(5))
        poses.append(tcp)
        dets.append(
            Detection(
                proj.reshape(-1, 2) + rng.normal(0, noise_px, (len(obj), 2)) if noise_px else proj.reshape(-1, 2),
                np.arange(len(obj)),
            )
        )
    return poses, dets, x


@pytest.mark.parametrize("mode", ["eye_in_hand", "eye_to_hand"])
def test_hand_eye_recovers_a_synthetic_truth(mode: str) -> None:
    poses, dets, x = synthetic_views(mode, 10, noise_px=0.1)
    for method in METHODS:  # every linear method alone
        r = solve_hand_eye(mode, poses, dets, SPEC, K, np.zeros(5), method=method, refine=False, uncertainty=False)
        t_err, r_err = pose_error(r.transform, x)
        assert t_err < 0.005 and np.degrees(r_err) < 1.0, (method, t_err, r_err)
    r = solve_hand_eye(mode, poses, dets, SPEC, K, np.zeros(5))
    t_err, r_err = pose_error(r.transform, x)
    assert t_err < 0.001 and np.degrees(r_err) < 0.1
    assert r.reprojection_rms_px < 0.2 and not r.outliers
    assert 0 < r.std_position_m < 0.005 and set(r.method_comparison) == set(METHODS)


def test_hand_eye_flags_an_outlier_pose() -> None:
    poses, dets, _ = synthetic_views("eye_in_hand", 10, noise_px=0.1)
    poses[4] = poses[4] @ make_transform(np.eye(3), [0.01, 0.0, 0.0])  # a 1 cm error in one robot pose
    r = solve_hand_eye("eye_in_hand", poses, dets, SPEC, K, np.zeros(5), uncertainty=False)
    assert r.outliers == [4]


def test_hand_eye_refuses_bad_input() -> None:
    poses, dets, _ = synthetic_views("eye_in_hand", 6)
    with pytest.raises(CalibrationError, match="at least 3 robot poses"):
        solve_hand_eye("eye_in_hand", poses[:2], dets[:2], SPEC, K, np.zeros(5))
    same_axis = [make_transform(rotvec_to_matrix(np.array([0.0, 0.0, a])), [0.4, 0, 0.3]) for a in (0, 0.3, 0.6, 0.9)]
    with pytest.raises(CalibrationError, match="degenerate motion"):
        solve_hand_eye("eye_in_hand", same_axis, dets[:4], SPEC, K, np.zeros(5))
    translations_only = [make_transform(np.eye(3), [0.4 + 0.01 * i, 0, 0.3]) for i in range(4)]
    with pytest.raises(CalibrationError, match="degenerate motion"):
        solve_hand_eye("eye_in_hand", translations_only, dets[:4], SPEC, K, np.zeros(5))
    with pytest.raises(CalibrationError, match="6 robot poses but 5"):
        solve_hand_eye("eye_in_hand", poses, dets[:5], SPEC, K, np.zeros(5))


def calib_file(**update) -> CalibrationFile:
    intr = Intrinsics(width=640, height=480, fx=600.0, fy=600.0, cx=319.5, cy=239.5, source="device")
    ext = Extrinsics.from_matrix(make_transform(np.diag([1.0, -1.0, -1.0]), [0.5, 0.0, 1.0]), "base")
    return CalibrationFile(camera="front", intrinsics=intr, extrinsics=ext).model_copy(update=update)


def test_file_round_trip_and_reference(tmp_path: Path) -> None:
    path = save_calibration(calib_file(), tmp_path / "front.yaml")
    back = load_calibration(path)
    assert back == calib_file().model_copy(update={"created": back.created})
    ref = calibration_ref(path)
    assert ref.startswith(f"{path}#sha256:") and len(ref.split(":")[-1]) == 16


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("fx: 600.0", "fx: -1.0"), "intrinsics.fx"),
        (lambda t: t.replace("schema_version: 1", "schema_version: 9"), "schema_version 9"),
        (lambda t: t.replace("parent_frame: base", "parent_frame: tcp"), "extrinsics.parent_frame"),
        (lambda t: t + "bogus: 1\n", "bogus"),
        (lambda t: "[1, 2", "not valid YAML"),
    ],
)
def test_malformed_files_name_the_field(tmp_path: Path, edit, message: str) -> None:
    path = save_calibration(calib_file(), tmp_path / "front.yaml")
    path.write_text(edit(path.read_text()))
    with pytest.raises(CalibrationFileError, match=message):
        load_calibration(path)


def test_sim_placement_converts_frames_and_field_of_view() -> None:
    placed = placement_from_calibration(calib_file(), CameraConfig(name="front", width=128, height=96))
    assert np.allclose(placed.pos, [0.5, 0.0, 1.0])
    assert np.allclose(np.abs(placed.quat_wxyz), [1, 0, 0, 0])  # OpenCV looking down == MuJoCo's default camera
    assert placed.fovy_deg == pytest.approx(np.degrees(2 * np.arctan(240 / 600)))
    square = placement_from_calibration(calib_file(), CameraConfig(name="front", width=128, height=128))
    assert square.fovy_deg == pytest.approx(np.degrees(2 * np.arctan(240 / 600)))  # centre crop keeps the height
    assert any("centre crop" in n for n in square.notes)
    with pytest.raises(CalibrationFileError, match="wrist"):
        placement_from_calibration(calib_file(), CameraConfig(name="front", mount="wrist"))
