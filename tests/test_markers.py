"""Marker poses (issue 19): detection and PnP on synthetic and rendered frames, fusion, age and lost flags, and the
env observing estimated poses under the keys a state policy reads."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inril_robot.config import load_config
from inril_robot.core.geometry import rotvec_to_matrix
from inril_robot.hardware.scene import Geom, SceneObject
from inril_robot.runtime.env import RobotEnv
from inril_robot.runtime.marker_state import MarkerLost
from inril_robot.vision.markers import (
    CameraModel,
    MarkerError,
    MarkerTracker,
    box_face_markers,
    marker_frame,
    marker_image,
    pose_error,
    printed_side,
    with_markers,
)

DICT = "DICT_APRILTAG_36h11"
K = np.array([[600.0, 0.0, 319.5], [0.0, 600.0, 239.5], [0.0, 0.0, 1.0]])


def render_marker(marker_id: int, size: float, cam_from_marker: np.ndarray) -> np.ndarray:
    """A 640x480 grey image of one printed marker (quiet zone included) at `cam_from_marker`, by homography."""
    img = marker_image(DICT, marker_id, px_per_cell=20)
    side = size * 10 / 8  # 36h11: 8 cells, plus one white cell each side
    s = side / 2
    corners3 = np.array([[-s, s, 0], [s, s, 0], [s, -s, 0], [-s, -s, 0]])
    cam = (cam_from_marker[:3, :3] @ corners3.T).T + cam_from_marker[:3, 3]
    px = (K @ cam.T).T
    px = px[:, :2] / px[:, 2:]
    h, w = img.shape
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32) - 0.5
    warp = cv2.getPerspectiveTransform(src, px.astype(np.float32))
    return cv2.warpPerspective(img, warp, (640, 480), borderValue=128, flags=cv2.INTER_AREA)


def pose(rotvec: list[float], t: list[float]) -> np.ndarray:
    """camera <- object: turned by `rotvec` from facing the camera (object +z towards it)."""
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rotvec_to_matrix(np.array(rotvec)) @ np.diag([1.0, -1.0, -1.0]), t
    return out


CUBE = SceneObject("cube", (Geom("box", (0.025,) * 3),))


@pytest.mark.timeout(30)
def test_layout_fits_the_faces_and_refuses_what_does_not() -> None:
    markers = box_face_markers((0.025,) * 3, 7, 0.04, DICT)
    assert [m.marker_id for m in markers] == [7, 8, 9, 10, 11]
    for m in markers:
        frame = marker_frame(m)
        assert np.isclose(np.abs(frame[:3, 3]).max(), 0.025)  # on a face
        assert np.allclose(frame[:3, 2], frame[:3, 3] / 0.025)  # z out of the face
    assert printed_side(markers[0]) == pytest.approx(0.05)
    with pytest.raises(MarkerError, match="does not fit"):
        box_face_markers((0.025,) * 3, 0, 0.045, DICT)
    cube, other = with_markers([CUBE, SceneObject("table", (Geom("box", (1, 1, 1)),), movable=False)], 0, 0.04, DICT)
    assert len(cube.markers) == 5 and other.markers == ()


@pytest.mark.timeout(30)
def test_single_marker_pose_from_a_synthetic_frame() -> None:
    marker = box_face_markers((0.025,) * 3, 3, 0.04, DICT)[4]  # the top face
    obj = SceneObject("cube", CUBE.geoms, markers=(marker,))
    truth = pose([0.3, -0.2, 0.4], [0.02, -0.01, 0.45])  # camera <- object
    image = render_marker(marker.marker_id, 0.04, truth @ marker_frame(marker))
    cam = CameraModel("cam", K, np.zeros(0), np.eye(4))
    tracker = MarkerTracker([obj], {"cam": cam}, DICT)
    est = tracker.update({"cam": (image, 1.0)})["cube"]
    pos_err, rot_err = pose_error(est.pose, _object_pose(truth))
    assert pos_err < 0.003 and np.degrees(rot_err) < 3.0, (pos_err, np.degrees(rot_err))
    assert est.cameras == ("cam",) and est.markers == 1 and not est.lost and est.age_s == 0.0


def _object_pose(t: np.ndarray):
    from inril_robot.core.geometry import matrix_to_quat
    from inril_robot.hardware.scene import ObjectPose

    q = matrix_to_quat(t[:3, :3])
    return ObjectPose(t[:3, 3], q if q[3] >= 0 else -q)


@pytest.mark.timeout(30)
def test_unseen_object_keeps_its_pose_ages_and_is_flagged_lost() -> None:
    marker = box_face_markers((0.025,) * 3, 0, 0.04, DICT)[4]
    obj = SceneObject("cube", CUBE.geoms, markers=(marker,))
    truth = pose([0.1, 0.0, 0.0], [0.0, 0.0, 0.5])
    seen = render_marker(marker.marker_id, 0.04, truth @ marker_frame(marker))
    blank = np.full((480, 640), 128, np.uint8)
    tracker = MarkerTracker([obj], {"cam": CameraModel("cam", K, np.zeros(0), np.eye(4))}, DICT, max_age_s=0.5)
    assert tracker.update({"cam": (blank, 0.0)}) == {}  # never seen: no pose at all
    first = tracker.update({"cam": (seen, 1.0)})["cube"]
    later = tracker.update({"cam": (blank, 1.3)})["cube"]
    assert not later.lost and later.age_s == pytest.approx(0.3) and np.allclose(later.pose.pos, first.pose.pos)
    assert tracker.update({"cam": (blank, 1.6)})["cube"].lost
    assert not tracker.update({"cam": (seen, 1.7)})["cube"].lost
    # a marker of another object (unknown id) is ignored
    assert set(tracker.update({"cam": (render_marker(40, 0.04, truth), 1.8)})) == {"cube"}


@pytest.mark.timeout(60)
def test_dictionary_and_duplicate_ids_are_refused() -> None:
    with pytest.raises(MarkerError, match="unknown aruco dictionary"):
        marker_image("DICT_NOPE", 0)
    a = SceneObject("a", CUBE.geoms, markers=box_face_markers((0.025,) * 3, 0, 0.04, DICT))
    b = SceneObject("b", CUBE.geoms, markers=box_face_markers((0.025,) * 3, 4, 0.04, DICT))
    with pytest.raises(MarkerError, match="marker id 4 is on both a and b"):
        MarkerTracker([a, b], {}, DICT)


@pytest.mark.timeout(180)
def test_env_observes_marker_poses_rendered_by_the_sim() -> None:
    """lift with markers: the cube's pose comes from two rendered 640x480 cameras, within 2 mm / 3 degrees of the
    truth, under the keys the state policy reads; the contract is the one without markers."""
    cfg = load_config(robot="sim", task="lift", overrides=["markers.enabled=true"])
    plain = load_config(robot="sim", task="lift")
    with RobotEnv(cfg) as env:
        for seed in (0, 1):
            obs, _ = env.reset(seed=seed)
            truth = env.robot.object_poses()["cube"]  # type: ignore[attr-defined]
            est = env.marker_source.estimates["cube"]  # type: ignore[union-attr]
            pos_err, rot_err = pose_error(est.pose, truth)
            assert pos_err < 0.002 and np.degrees(rot_err) < 3.0, (seed, pos_err, np.degrees(rot_err))
            assert {"marker_front", "marker_side"} <= set(est.cameras) and not est.lost
            assert np.allclose(obs["cube_pos"], est.pose.pos.astype(np.float32))
        obs, *_ = env.step(np.zeros(7))
        assert obs["cube_pos"].dtype == np.float32 and obs["cube_quat"].shape == (4,)
        contract = env.contract
    from inril_robot.runtime.env import build_contract
    from inril_robot.tasks import make_task

    assert contract == build_contract(plain, make_task(plain.task))


@pytest.mark.timeout(120)
def test_markers_never_seen_at_reset_is_a_clear_error() -> None:
    cam = "{name: marker_up, width: 320, height: 240, pos: [0.5, 0.0, 1.0], lookat: [0.5, 0.0, 2.0]}"
    cfg = load_config(robot="sim", task="lift", overrides=["markers.enabled=true", f"markers.cameras=[{cam}]"])
    with RobotEnv(cfg) as env, pytest.raises(MarkerLost, match="no camera has seen the markers of cube"):
        env.reset(seed=0)


@pytest.mark.timeout(30)
def test_real_camera_calibration_from_its_file(tmp_path) -> None:
    """A real marker camera is placed by its calibration file; no extrinsics or another size is refused by name."""
    from inril_robot.config import CameraConfig
    from inril_robot.hardware.calibration_file import CalibrationFile, Extrinsics, Intrinsics, save_calibration
    from inril_robot.runtime.marker_state import camera_model

    intr = Intrinsics(width=640, height=480, fx=600.0, fy=600.0, cx=319.5, cy=239.5, distortion=[0.1, 0, 0, 0])
    ext = Extrinsics(parent_frame="base", position=(1.0, 0.2, 0.5), quaternion_xyzw=(0.0, 0.0, 0.0, 1.0))
    path = save_calibration(CalibrationFile(camera="front", intrinsics=intr, extrinsics=ext), tmp_path / "f.yaml")
    cfg = CameraConfig(name="front", kind="realsense", width=640, height=480, calibration=str(path))
    model = camera_model(cfg, camera=None)  # type: ignore[arg-type]
    assert np.allclose(model.matrix, K) and model.parent == "base" and model.distortion[0] == 0.1
    assert np.allclose(model.parent_from_camera[:3, 3], (1.0, 0.2, 0.5))
    with pytest.raises(MarkerError, match="calibrated at 640x480, streams 1280x720"):
        camera_model(cfg.model_copy(update={"width": 1280, "height": 720}), camera=None)  # type: ignore[arg-type]
    bare = save_calibration(CalibrationFile(camera="front", intrinsics=intr), tmp_path / "bare.yaml")
    with pytest.raises(MarkerError, match="has no extrinsics"):
        camera_model(cfg.model_copy(update={"calibration": str(bare)}), camera=None)  # type: ignore[arg-type]
    with pytest.raises(MarkerError, match="a real camera needs a calibration file"):
        camera_model(cfg.model_copy(update={"calibration": None}), camera=object())  # type: ignore[arg-type]


@pytest.mark.timeout(60)
def test_markers_print_writes_the_sims_markers(tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from inril_robot.cli import app
    from inril_robot.vision.markers import detect, make_detector

    result = CliRunner().invoke(app, ["markers", "print", "--out", str(tmp_path), "--dpi", "150", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [m["id"] for m in payload["markers"]] == [0, 1, 2, 3, 4]
    img = cv2.imread(payload["markers"][2]["file"], cv2.IMREAD_GRAYSCALE)
    assert [d.marker_id for d in detect(img, make_detector(DICT))] == [2]


@pytest.mark.timeout(30)
def test_two_cameras_resolve_a_single_squares_flip() -> None:
    """One small tilted marker, seen by two cameras: each view alone keeps both IPPE candidates; the joint fit over
    both views lands on the true pose."""
    marker = box_face_markers((0.025,) * 3, 0, 0.04, DICT)[4]
    obj = SceneObject("cube", CUBE.geoms, markers=(marker,))
    base_from_obj = np.eye(4)
    base_from_obj[:3, :3], base_from_obj[:3, 3] = rotvec_to_matrix(np.array([0.0, 0.0, 0.4])), (0.5, 0.0, 0.025)
    cams, frames = {}, {}
    for name, cam_pose in (
        ("a", pose([0.25, 0.0, 0.0], [0.0, 0.0, 0.6])),
        ("b", pose([-0.2, 0.3, 0.0], [0.05, -0.03, 0.55])),
    ):
        base_from_cam = base_from_obj @ np.linalg.inv(cam_pose)  # cam_pose: camera <- object
        cams[name] = CameraModel(name, K, np.zeros(0), base_from_cam)
        frames[name] = (render_marker(marker.marker_id, 0.04, cam_pose @ marker_frame(marker)), 1.0)
    tracker = MarkerTracker([obj], cams, DICT)
    views = tracker.views(tracker.detect({k: img for k, (img, _) in frames.items()}))["cube"]
    assert len(views) == 2 and all(len(v.candidates) == 2 for v in views)
    est = tracker.update(frames)["cube"]
    pos_err, rot_err = pose_error(est.pose, _object_pose(base_from_obj))
    assert pos_err < 0.002 and np.degrees(rot_err) < 2.0, (pos_err, np.degrees(rot_err))


# ---------------------------------------------------------------- occluded markers, lone squares (synthetic corners)
CAM_POSE = np.eye(4)  # base <- camera: 0.5 m above the cube at the origin, looking straight down...
CAM_POSE[:3, :3], CAM_POSE[:3, 3] = np.diag([1.0, -1.0, -1.0]), (0.0, 0.0, 0.5)
TILTED = np.eye(4)  # ... and one looking at it from the side and above, so three faces are seen
TILTED[:3, :3] = rotvec_to_matrix(np.array([0.0, 0.0, np.pi / 4])) @ rotvec_to_matrix(np.array([-2.2, 0.0, 0.0]))
TILTED[:3, 3] = TILTED[:3, :3] @ np.array([0.0, 0.0, -0.45])


def _corners(markers, base_from_obj: np.ndarray, base_from_cam: np.ndarray, faces: tuple[int, ...]):
    """Exact projected corners (OpenCV detection order) of the chosen faces' markers."""
    from inril_robot.vision.markers import Detection, corner_points

    out = []
    for i in faces:
        m = markers[i]
        obj = (marker_frame(m) @ np.c_[corner_points(m.size), np.ones(4)].T).T
        cam = (np.linalg.inv(base_from_cam) @ base_from_obj @ obj.T).T[:, :3]
        px = (K @ cam.T).T
        out.append(Detection(m.marker_id, px[:, :2] / px[:, 2:]))
    return out


def _cube_at(x: float, yaw: float = 0.3) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3], t[:3, 3] = rotvec_to_matrix(np.array([0.0, 0.0, yaw])), (x, 0.0, 0.0)
    return t


@pytest.mark.timeout(30)
def test_a_partly_hidden_marker_is_left_out_of_the_pose() -> None:
    """Three faces seen; a finger over one marker shifts two of its corners by 4 px. The marker is rejected (its
    corners fit no square, or the pose from the other two misses them) and the pose stays sub-millimetre; used, the
    shifted corners would pull it by millimetres."""
    import inril_robot.vision.markers as mk

    markers = box_face_markers((0.025,) * 3, 0, 0.04, DICT)
    obj = SceneObject("cube", CUBE.geoms, markers=markers)
    truth = _cube_at(0.0)
    dets = _corners(markers, truth, TILTED, (0, 2, 4))
    assert len(dets) == 3
    hidden = dets[0].corners.copy()
    hidden[1:3] += (4.0, 2.0)  # the two right corners: the finger's edge is taken for the marker's
    dets[0] = mk.Detection(dets[0].marker_id, hidden)
    cams = {"cam": CameraModel("cam", K, np.zeros(0), TILTED)}
    tracker = MarkerTracker([obj], cams, DICT)
    est = tracker.update_detections({"cam": (dets, 1.0)})["cube"]
    pos_err, rot_err = pose_error(est.pose, _object_pose(truth))
    assert pos_err < 0.001 and np.degrees(rot_err) < 0.5, (pos_err, np.degrees(rot_err))
    assert est.markers == 2 and [r.marker_id for r in tracker.rejected] == [dets[0].marker_id], tracker.rejected

    # the same corners with the checks off (every marker used): the shift pulls the pose
    off = {"SQUARE_PX": 1e9, "MARKER_OUTLIER_PX": 1e9}
    saved = {k: getattr(mk, k) for k in off}
    try:
        for k, v in off.items():
            setattr(mk, k, v)
        tracker = MarkerTracker([obj], cams, DICT)
        naive = tracker.update_detections({"cam": (dets, 1.0)})["cube"]
    finally:
        for k, v in saved.items():
            setattr(mk, k, v)
    assert naive.markers == 3 and pose_error(naive.pose, _object_pose(truth))[0] > 2 * pos_err


@pytest.mark.timeout(30)
def test_a_lone_ambiguous_square_only_confirms_a_nearby_pose_and_otherwise_lets_it_age() -> None:
    """Seen from above, the top marker alone cannot tell its tilt (IPPE's two solutions fit alike): with no
    previous pose it gives none; after a pose from three faces it updates the pose when one of its tilts is near
    that pose; when the object has jumped far from it (or the square is a flip away) the estimate keeps the last
    pose and ages until lost."""
    markers = box_face_markers((0.025,) * 3, 0, 0.04, DICT)
    obj = SceneObject("cube", CUBE.geoms, markers=markers)
    cams = {"top": CameraModel("top", K, np.zeros(0), CAM_POSE), "side": CameraModel("side", K, np.zeros(0), TILTED)}
    tracker = MarkerTracker([obj], cams, DICT, max_age_s=0.5)

    def lone(base_from_obj: np.ndarray, t: float):
        return tracker.update_detections(
            {"top": (_corners(markers, base_from_obj, CAM_POSE, (4,)), t), "side": ([], t)}
        ).get("cube")

    truth = _cube_at(0.0)
    assert lone(truth, 0.0) is None and tracker.rejected[0].reason == "lone ambiguous square"
    full = tracker.update_detections({"top": ([], 0.1), "side": (_corners(markers, truth, TILTED, (0, 2, 4)), 0.1)})[
        "cube"
    ]
    assert full.markers == 3 and pose_error(full.pose, _object_pose(truth))[0] < 1e-3
    moved = _cube_at(0.005)  # 5 mm on: a tilt of the square is near the last pose
    est = lone(moved, 0.2)
    assert est.age_s == 0.0 and est.markers == 1 and pose_error(est.pose, _object_pose(moved))[0] < 1e-3
    jumped = _cube_at(0.0)  # lifted 6 cm in one step: nothing near the last pose, no update
    jumped[2, 3] = 0.06
    est = lone(jumped, 0.3)
    assert est.age_s == pytest.approx(0.1) and not est.lost and np.allclose(est.pose.pos, moved[:3, 3], atol=1e-3)
    assert lone(jumped, 0.8).lost


@pytest.mark.timeout(30)
def test_bench_chunks_cover_the_seeds_in_order_and_pair_up() -> None:
    """`bench markers --workers`: an arm's episodes split into consecutive chunks (episode i keeps seed + i) merge
    back in order, with their marker statistics pooled; separate runs pair up by their per-episode successes."""
    from inril_robot.bench.markers import MarkerStats, _chunks, _merge, paired_counts

    chunks = _chunks(100, 3)
    assert chunks == [(0, 33), (33, 34), (67, 33)] and _chunks(2, 5) == [(0, 1), (1, 1)]
    a, b = MarkerStats(), MarkerStats()
    a.errors["fresh"].add(0.001, 0.01)
    b.errors["fresh"].add(0.003, 0.03)
    b.lost_steps, b.steps, a.steps = 1, 2, 2
    successes, wall, stats = _merge([([True, False], 5.0, a), ([False], 7.0, b)])
    assert successes == [True, False, False] and wall == 7.0
    assert (
        stats is not None
        and stats.errors["fresh"].position_m == [0.001, 0.003]
        and stats.summary()["lost_fraction"] == 0.25
    )
    pairs = paired_counts({"a": [1, 1, 0, 0], "b": [1, 0, 1, 0], "c": [0, 0, 0, 1]})
    assert pairs["a_vs_b"] == {"only_first": 1, "only_second": 1, "both": 1} and set(pairs) == {
        "a_vs_b",
        "b_vs_c",
        "a_vs_c",
    }
