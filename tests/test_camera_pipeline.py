"""The camera pipeline (issue 19): capture -> crop -> resize, the same code for rendered and RealSense frames.

- the pipeline itself: centred and explicit crops, refusals, the output image's intrinsics;
- a calibrated sim camera renders at the calibration's resolution with its fx, fy, cx, cy (a point lands where
  OpenCV projects it), and the env stores the pipeline's output;
- a rendered capture pushed through a pyrealsense2 software device and read by `RealSenseCamera` gives the policy
  exactly the image the simulated camera gives it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from inril_robot.config import CameraConfig
from inril_robot.hardware import CameraIntrinsics, Frame
from inril_robot.hardware.calibration_file import CalibrationFile, Extrinsics, Intrinsics, save_calibration
from inril_robot.hardware.scene import ObjectPose
from inril_robot.runtime.env import RobotEnv
from inril_robot.vision.pipeline import CropBox, ImagePipeline, PipelineError

CAPTURE = (640, 480)
FX, FY, CX, CY = 600.0, 610.0, 331.0, 228.0  # deliberately off-centre principal point


def capture_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (CAPTURE[1], CAPTURE[0], 3), dtype=np.uint8)


def test_centred_crop_then_resize() -> None:
    p = ImagePipeline.build("front", CAPTURE, (64, 64))
    assert p.crop == CropBox(80, 0, 480, 480)
    image = capture_image()
    out = p(image)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert np.array_equal(out, cv2.resize(image[:, 80:560], (64, 64), interpolation=cv2.INTER_AREA))
    tall = ImagePipeline.build("wrist", (480, 640), (96, 64))  # portrait capture, landscape output: crop rows
    assert tall.crop == CropBox(0, 160, 480, 320)
    assert ImagePipeline.build("x", (64, 64), (64, 64)).identity


def test_explicit_crop_and_refusals() -> None:
    p = ImagePipeline.build("front", CAPTURE, (84, 84), crop=(200, 100, 252, 252))
    image = capture_image(1)
    assert np.array_equal(p(image), cv2.resize(image[100:352, 200:452], (84, 84), interpolation=cv2.INTER_AREA))
    with pytest.raises(PipelineError, match=r"camera 'front': crop .* outside the 640x480 capture"):
        ImagePipeline.build("front", CAPTURE, (84, 84), crop=(500, 0, 200, 200))
    with pytest.raises(PipelineError, match=r"expected a 640x480 RGB uint8 frame .* got shape \(480, 848, 3\)"):
        p(np.zeros((480, 848, 3), np.uint8))
    with pytest.raises(ValidationError, match="outside the 640x480 capture"):
        CameraConfig(name="front", capture=(640, 480), crop=(600, 0, 100, 100))


def test_output_intrinsics_follow_the_crop_and_resize() -> None:
    """A 3-D point projects with the output intrinsics where the crop + resize moves its capture projection."""
    k = CameraIntrinsics(*CAPTURE, FX, FY, CX, CY)
    p = ImagePipeline.build("front", CAPTURE, (96, 72), crop=(40, 30, 560, 420))
    out = p.intrinsics(k)
    points = np.random.default_rng(2).uniform([-0.3, -0.2, 0.5], [0.3, 0.2, 1.5], (50, 3))

    def project(k: CameraIntrinsics) -> np.ndarray:
        return (points[:, :2] / points[:, 2:]) * [k.fx, k.fy] + [k.cx, k.cy]

    sx, sy = 96 / 560, 72 / 420  # pixel centres: (u + 0.5) scales, minus the crop origin
    expected = (project(k) - [40, 30] + 0.5) * [sx, sy] - 0.5
    assert np.allclose(project(out), expected)
    with pytest.raises(PipelineError, match="intrinsics are for 320x240"):
        p.intrinsics(CameraIntrinsics(320, 240, FX, FY, CX, CY))


def calibration(tmp_path: Path, cx: float = CX, cy: float = CY) -> str:
    """A world camera 0.8 m above the table looking straight down (OpenCV z = -world z, x = world x)."""
    down = np.eye(4)
    down[:3, :3] = np.diag([1.0, -1.0, -1.0])
    down[:3, 3] = [0.5, 0.0, 0.8]
    calib = CalibrationFile(
        camera="front",
        intrinsics=Intrinsics(width=CAPTURE[0], height=CAPTURE[1], fx=FX, fy=FY, cx=cx, cy=cy, source="device"),
        extrinsics=Extrinsics.from_matrix(down, "base"),
    )
    return str(save_calibration(calib, tmp_path / f"front_{cx}_{cy}.yaml"))


def lift_env(sim_cfg, calib: str, **camera) -> RobotEnv:
    cam = CameraConfig(name="front", calibration=calib, width=64, height=64, **camera)
    return RobotEnv(sim_cfg("lift", overrides=["task.observation=image"]).model_copy(update={"cameras": [cam]}))


def red_centroid(image: np.ndarray) -> np.ndarray:
    """Centre of the largest red blob (the cube; the arm's hand has small red marks)."""
    r, g, b = (image[..., i].astype(int) for i in range(3))
    mask = ((r > g + 60) & (r > b + 60)).astype(np.uint8)
    _, _, stats, centroids = cv2.connectedComponentsWithStats(mask)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    assert stats[largest, cv2.CC_STAT_AREA] > 200, "the cube is not in view"
    return centroids[largest]


@pytest.mark.timeout(120)
def test_calibrated_sim_camera_renders_the_real_capture(sim_cfg, tmp_path: Path) -> None:
    env = lift_env(sim_cfg, calibration(tmp_path))
    try:
        obs, _ = env.reset(seed=0)
        cam = env.cameras[0]
        assert cam.intrinsics == CameraIntrinsics(*CAPTURE, FX, FY, CX, CY)
        env.robot.set_objects({"cube": ObjectPose.at(0.55, -0.06, 0.025)})  # off the optical axis, in view
        frame = cam.read_latest(max_age_s=1.0)
        assert frame.image.shape == (480, 640, 3)  # rendered at the calibration's capture size
        # the top face's centre lands where OpenCV's pinhole model puts it (the visible side pulls it ~1 px inwards)
        top = np.array([0.55 - 0.5, 0.06, 0.8 - 0.05])  # in the OpenCV camera frame (y = -world y)
        expected = top[:2] / top[2] * [FX, FY] + [CX, CY]
        assert np.linalg.norm(red_centroid(frame.image) - expected) < 2.0  # a flipped cx, cy would be ~23 px off
        # the env stores what the policy sees: the centred 480x480 crop resized to 64x64
        obs = env.observe()
        assert obs["front_rgb"].shape == (64, 64, 3)
        assert np.array_equal(obs["front_rgb"], env.pipelines["front"](frame.image))
        assert env.contract.cameras == {"front": (64, 64)}
    finally:
        env.close()


class PushedRealSense:
    """A pyrealsense2 software device streaming one fixed RGB image at 640x480, 30 fps (a stand-in for a D435,
    which this machine does not have)."""

    def __init__(self, image: np.ndarray) -> None:
        import pyrealsense2 as rs

        self.rs, self.image = rs, np.ascontiguousarray(image)
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.serial_number, "000000019019")
        self.sensor = self.device.add_sensor("Color")
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = (
            rs.stream.color, 0, 0, CAPTURE[0], CAPTURE[1], 30, 3, rs.format.rgb8,
        )  # fmt: skip
        k = rs.intrinsics()
        k.width, k.height, k.fx, k.fy, k.ppx, k.ppy = *CAPTURE, FX, FY, CX, CY
        vs.intrinsics = k
        self.profile = self.sensor.add_video_stream(vs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)

    def _feed(self) -> None:
        n = 0
        while not self._stop.wait(1 / 30):
            frame = self.rs.software_video_frame()
            frame.pixels, frame.stride, frame.bpp = self.image, CAPTURE[0] * 3, 3
            frame.timestamp, frame.domain, frame.frame_number = (
                time.time() * 1e3,
                self.rs.timestamp_domain.global_time,
                n,
            )
            frame.profile = self.profile.as_video_stream_profile()
            self.sensor.on_video_frame(frame)
            n += 1

    def __enter__(self) -> PushedRealSense:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


@pytest.mark.timeout(120)
def test_realsense_frames_take_the_same_pipeline_as_rendered_ones(sim_cfg, tmp_path: Path) -> None:
    pytest.importorskip("pyrealsense2", reason="pyrealsense2 not installed: pip install 'inril-robot[camera]'")
    from inril_robot.drivers.realsense import RealSenseCamera, SensorSource

    crop = (120, 40, 400, 400)
    env = lift_env(sim_cfg, calibration(tmp_path), crop=crop)
    try:
        env.reset(seed=3)
        rendered: Frame = env.cameras[0].read_latest(max_age_s=1.0)
        sim_view = env.observe()["front_rgb"]
    finally:
        env.close()
    real_cfg = CameraConfig(name="front", kind="realsense", width=64, height=64, capture=CAPTURE, crop=crop)
    with PushedRealSense(rendered.image) as device:
        camera = RealSenseCamera(real_cfg.model_copy(update={"warmup_frames": 2}), SensorSource(device.device))
        camera.start()
        try:
            assert (camera.intrinsics.width, camera.intrinsics.height) == CAPTURE
            real = camera.read_latest(max_age_s=1.0).image
        finally:
            camera.stop()
    pipeline = ImagePipeline.build("front", CAPTURE, (64, 64), crop)
    assert np.array_equal(real, rendered.image)
    assert np.array_equal(pipeline(real), sim_view)  # the policy gets the same pixels from either camera


def test_capture_mode_scales_the_calibration_and_refuses_another_aspect(tmp_path: Path) -> None:
    from inril_robot.drivers.sim.placement import sim_camera_placement
    from inril_robot.hardware.calibration_file import CalibrationFileError, capture_size

    calib = calibration(tmp_path)
    cam = CameraConfig(name="front", calibration=calib, width=64, height=64)
    assert capture_size(cam) == CAPTURE  # the calibrated mode
    half = sim_camera_placement(cam.model_copy(update={"capture": (320, 240)})).intrinsics
    assert (half.width, half.height, half.fx, half.fy) == (320, 240, FX / 2, FY / 2)
    assert (half.cx, half.cy) == ((CX + 0.5) / 2 - 0.5, (CY + 0.5) / 2 - 0.5)
    with pytest.raises(CalibrationFileError, match=r"capture 848x480 has another aspect ratio .* \(640x480\)"):
        sim_camera_placement(cam.model_copy(update={"capture": (848, 480)}))
