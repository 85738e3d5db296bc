"""Dataset tools: episode rendering (MP4 / PNG contact sheet) and the FurnitureBench importer."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from inril_robot.core.contract import Contract, ObsSpec
from inril_robot.core.geometry import quat_to_matrix, rotvec_to_matrix
from inril_robot.data import Dataset, DatasetWriter
from inril_robot.data.furniture_bench import (
    UnsafePickleError,
    convert_action,
    import_furniture_bench,
    load_pickle,
)
from inril_robot.data.view import MIN_VIDEO_HEIGHT, STRIP_HEIGHT, render_episode

SIZE = 32
STEPS = 20
CAMERA_CONTRACT = Contract(
    observations={
        "ee_pos": ObsSpec(shape=(3,), dtype="float32"),
        "wrist_rgb": ObsSpec(shape=(SIZE, SIZE, 3), dtype="uint8"),
        "front_rgb": ObsSpec(shape=(SIZE, SIZE, 3), dtype="uint8"),
    },
    cameras={"wrist": (SIZE, SIZE), "front": (SIZE, SIZE)},
)
STATE_CONTRACT = Contract(observations={"ee_pos": ObsSpec(shape=(3,), dtype="float32")})


def image(t: int, channel: int) -> np.ndarray:
    """A gradient with a moving bright square: distinct per step and per camera."""
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    img[..., channel] = np.linspace(0, 255, SIZE, dtype=np.uint8)[None, :]
    x = (2 * t) % (SIZE - 6)
    img[10:16, x : x + 6] = 255
    return img


def write_dataset(root: Path, contract: Contract, steps: int = STEPS) -> Dataset:
    with DatasetWriter(root, contract, task="lift") as writer:
        ep = writer.begin_episode(seed=3)
        for t in range(steps):
            obs: dict[str, np.ndarray] = {"ee_pos": np.array([t, 0, 0], np.float32) / 100}
            if contract.cameras:
                obs["wrist_rgb"], obs["front_rgb"] = image(t, 0), image(t, 2)
            phase = 2 * np.pi * t / steps
            proposed = np.array(
                [
                    0.01 * np.sin(phase),
                    0.01 * np.cos(phase),
                    0.002,
                    0.05,
                    -0.05,
                    0.1 * np.sin(phase),
                    float(t > steps // 2),
                ],
                np.float32,
            )
            executed = proposed * np.array([0.5, 0.5, 0.5, 1, 1, 1, 1], np.float32)
            ep.add_step(
                obs, proposed, executed, float(t == steps - 1), t == steps - 1, "policy", intervention=5 <= t < 8
            )
        ep.commit(success=True)
    return Dataset(root)


@pytest.fixture(scope="module")
def camera_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return write_dataset(tmp_path_factory.mktemp("cams"), CAMERA_CONTRACT)


@pytest.fixture(scope="module")
def state_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return write_dataset(tmp_path_factory.mktemp("state"), STATE_CONTRACT)


def assert_is_picture(path: Path) -> np.ndarray:
    img = cv2.imread(str(path))
    assert img is not None, f"{path} is not a readable image"
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 10, "the image is (almost) one colour"
    return img


# ------------------------------------------------------------------------------------------------- rendering
def test_mp4_has_every_step_cameras_and_action_strip(camera_dataset: Dataset, tmp_path: Path) -> None:
    out = render_episode(camera_dataset, 0, tmp_path / "ep.mp4")
    assert out == tmp_path / "ep.mp4" and out.stat().st_size > 0
    cap = cv2.VideoCapture(str(out))
    assert cap.isOpened()
    scale = -(-MIN_VIDEO_HEIGHT // SIZE)  # tiles upscaled by an integer factor to at least MIN_VIDEO_HEIGHT
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == STEPS
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == STEPS
    assert frames[0].shape == (SIZE * scale + STRIP_HEIGHT, 2 * SIZE * scale, 3)
    strip_first, strip_last = (f[SIZE * scale :].astype(int) for f in (frames[0], frames[-1]))
    assert np.abs(strip_first - strip_last).max() > 100, "the cursor in the action strip should move"


def test_png_contact_sheet(camera_dataset: Dataset, tmp_path: Path) -> None:
    out = render_episode(camera_dataset, 0, tmp_path / "sheet.PNG", max_frames=6)
    assert_is_picture(out)


def test_state_only_dataset_renders_plots_but_no_video(state_dataset: Dataset, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no cameras.*\.png"):
        render_episode(state_dataset, 0, tmp_path / "ep.mp4")
    assert not (tmp_path / "ep.mp4").exists()
    assert_is_picture(render_episode(state_dataset, 0, tmp_path / "ep.png"))


def test_unknown_suffix_is_refused(camera_dataset: Dataset, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.mp4.*\.png"):
        render_episode(camera_dataset, 0, tmp_path / "ep.gif")


# -------------------------------------------------------------------------------------- FurnitureBench import
FB_STEPS = 12
FB_SIZE = 48
Z90 = np.array([0.0, 0.0, np.sin(np.pi / 4), np.cos(np.pi / 4)])  # 90 degrees about z, xyzw
GRIPPER = [-1.0, 1.0, 0.0, 1.5]  # -> 0, 1, 0.5, 1 (clipped)


def fb_episode(seed: int, rewards_end: float = 0.0, **keys: Any) -> dict[str, Any]:
    """An episode in FurnitureBench's pickle layout: one more observation than actions."""
    rng = np.random.default_rng(seed)
    observations = [
        {
            "robot_state": {
                "ee_pos": rng.normal(size=3).astype(np.float32),
                "ee_quat": np.array([0, 0, 0, 1], np.float32),
                "ee_pos_vel": rng.normal(size=3).astype(np.float32),
                "ee_ori_vel": rng.normal(size=3).astype(np.float32),
                "gripper_width": np.array([0.065], np.float32),
                "joint_positions": rng.normal(size=7).astype(np.float32),
                "joint_velocities": np.zeros(7, np.float32),
                "joint_torques": np.zeros(7, np.float32),
            },
            "color_image1": rng.integers(0, 256, (FB_SIZE, FB_SIZE, 3), dtype=np.uint8),
            "color_image2": rng.integers(0, 256, (FB_SIZE, FB_SIZE, 3), dtype=np.uint8),
            "parts_poses": rng.normal(size=35).astype(np.float32),
        }
        for _ in range(FB_STEPS + 1)
    ]
    actions = [np.array([0.01, -0.02, 0.003, *Z90, GRIPPER[t % 4]], np.float32) for t in range(FB_STEPS)]
    rewards = [0.0] * (FB_STEPS - 1) + [rewards_end]
    skills = [int(t == 5) for t in range(FB_STEPS)]
    return {
        "observations": observations,
        "actions": actions,
        "rewards": rewards,
        "skills": skills,
        "furniture": "one_leg",
        **keys,
    }


def dump(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path


@pytest.fixture
def fb_source(tmp_path: Path) -> Path:
    src = tmp_path / "furniture"
    dump(src / "a.pkl", fb_episode(0, success=True, error=False, error_description=""))
    dump(src / "b.pkl", fb_episode(1))  # no success key, no reward: failure
    dump(src / "day2" / "c.pkl", fb_episode(2, rewards_end=1.0))  # subfolder; no success key, rewarded: success
    return src


def test_import_converts_furniture_bench_episodes(fb_source: Path, tmp_path: Path) -> None:
    report = import_furniture_bench(fb_source, tmp_path / "ds")
    assert (report.episodes, report.steps, report.skipped) == (3, 3 * FB_STEPS, [])
    ds = Dataset(tmp_path / "ds")
    assert ds.info["imported_from"] == "furniture_bench" and ds.info["source"] == str(fb_source.resolve())
    assert ds.contract.cameras == {"wrist": (FB_SIZE, FB_SIZE), "front": (FB_SIZE, FB_SIZE)}
    assert ds.contract.observations["robot_state"].shape == (14,) and ds.contract.control_hz == 10
    by_name = {ep.meta["notes"]: ep for ep in ds.episodes}
    assert sorted(by_name) == ["a.pkl", "b.pkl", "c.pkl"]
    assert [by_name[n].success for n in ("a.pkl", "b.pkl", "c.pkl")] == [True, False, True]

    ep, source = by_name["a.pkl"], fb_episode(0)
    assert ep.length == FB_STEPS and ep.meta["furniture"] == "one_leg" and ep.meta["skills"][5] == 1
    assert ep.meta["seed"] is None and (ep.load("control") == 1).all()  # human (teleoperated)
    actions = ep.load("action/executed")
    np.testing.assert_array_equal(actions, ep.load("action/proposed"))
    np.testing.assert_allclose(actions[0, :3], [0.01, -0.02, 0.003], atol=1e-7)
    np.testing.assert_allclose(actions[0, 3:6], [0, 0, np.pi / 2], atol=1e-6)  # EE at identity: frames agree
    np.testing.assert_allclose(actions[:4, 6], [0.0, 1.0, 0.5, 1.0])
    wrist, front = ep.load("obs/wrist_rgb"), ep.load("obs/front_rgb")
    for t in (0, FB_STEPS - 1):  # the final (13th) observation is dropped: images pair with their action's step
        assert wrist[t].tobytes() == source["observations"][t]["color_image1"].tobytes()
        assert front[t].tobytes() == source["observations"][t]["color_image2"].tobytes()
    state = source["observations"][3]["robot_state"]
    expected = np.concatenate([state[k] for k in ("ee_pos", "ee_quat", "ee_pos_vel", "ee_ori_vel", "gripper_width")])
    np.testing.assert_array_equal(ep.load("obs/robot_state")[3], expected)
    np.testing.assert_array_equal(ep.load("obs/gripper_width")[3], np.float32([0.065]))
    assert ep.load("done").tolist() == [False] * (FB_STEPS - 1) + [True]


def test_rotation_is_moved_from_end_effector_to_base_frame() -> None:
    ee_down = np.array([1.0, 0.0, 0.0, 0.0])  # 180 degrees about x: the gripper pointing down
    action = convert_action(np.array([0, 0, 0, *Z90, -1.0]), ee_down)
    np.testing.assert_allclose(action[3:6], [0, 0, -np.pi / 2], atol=1e-9)  # tool z is base -z
    # Same goal orientation as FurnitureBench's controller: q_goal = q_ee * q_delta, i.e. R_ee @ R_delta.
    r_ee = quat_to_matrix(np.array([0.2, -0.4, 0.1, 0.9]))
    delta = np.array([0.1, 0.05, -0.2, 0.97])
    ours = rotvec_to_matrix(convert_action(np.array([0, 0, 0, *delta, 1.0]), np.array([0.2, -0.4, 0.1, 0.9]))[3:6])
    np.testing.assert_allclose(ours @ r_ee, r_ee @ quat_to_matrix(delta), atol=1e-9)


def test_import_resizes_images(fb_source: Path, tmp_path: Path) -> None:
    report = import_furniture_bench(fb_source / "a.pkl", tmp_path / "small", image_size=24)
    assert report.episodes == 1
    ds = Dataset(tmp_path / "small")
    assert ds.contract.cameras == {"wrist": (24, 24), "front": (24, 24)}
    assert ds.episodes[0].load("obs/front_rgb").shape == (FB_STEPS, 24, 24, 3)


class Payload:
    """Unpickling this runs a shell command: the restricted unpickler must refuse it first."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_unsafe_and_malformed_pickles_are_skipped(fb_source: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = fb_episode(3)
    evil["observations"][0]["robot_state"]["ee_pos"] = Payload(marker)
    dump(fb_source / "evil.pkl", evil)
    no_actions = fb_episode(4)
    del no_actions["actions"]
    dump(fb_source / "no_actions.pkl", no_actions)
    bad_shape = fb_episode(5)
    bad_shape["observations"][2]["robot_state"]["ee_quat"] = np.zeros(3, np.float32)
    dump(fb_source / "bad_shape.pkl", bad_shape)

    with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*forbidden global .*system"):
        load_pickle(fb_source / "evil.pkl")
    report = import_furniture_bench(fb_source, tmp_path / "ds")
    assert not marker.exists(), "the payload ran"
    assert report.episodes == 3
    reasons = {path.name: reason for path, reason in report.skipped}
    assert sorted(reasons) == ["bad_shape.pkl", "evil.pkl", "no_actions.pkl"]
    assert "forbidden global" in reasons["evil.pkl"] and "system" in reasons["evil.pkl"]
    assert "'actions'" in reasons["no_actions.pkl"]
    assert "observations[2]" in reasons["bad_shape.pkl"] and "'ee_quat'" in reasons["bad_shape.pkl"]
    assert sorted(ep.meta["notes"] for ep in Dataset(tmp_path / "ds").episodes) == ["a.pkl", "b.pkl", "c.pkl"]


def test_reimport_appends(fb_source: Path, tmp_path: Path) -> None:
    import_furniture_bench(fb_source, tmp_path / "ds")
    report = import_furniture_bench(fb_source / "day2", tmp_path / "ds")
    assert report.indices == [3]
    ds = Dataset(tmp_path / "ds")
    assert len(ds) == 4 and ds.num_steps == 4 * FB_STEPS
    with pytest.raises(ValueError, match="contract mismatch"):  # other image size: refused by the writer
        import_furniture_bench(fb_source, tmp_path / "ds", image_size=24)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_restricted_unpickler_reads_numpy_pickles_of_every_protocol(tmp_path: Path, protocol: int) -> None:
    data = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.float32(2.5), "b": b"xy", "set": {1, 2}}
    raw = pickle.dumps(data, protocol=protocol)
    variants = [raw]
    if protocol < 4:  # text GLOBAL opcodes: the numpy 1 module names can be swapped in without re-framing
        variants.append(raw.replace(b"numpy._core", b"numpy.core"))
    for variant in variants:
        path = tmp_path / "data.pkl"
        path.write_bytes(variant)
        out = load_pickle(path)
        np.testing.assert_array_equal(out["a"], data["a"])
        assert (out["s"], out["b"], out["set"]) == (2.5, b"xy", {1, 2})
