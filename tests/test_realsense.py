"""`RealSenseCamera` on the real pyrealsense2 code paths: synthetic frames from an `rs.software_device` through an
`rs.syncer`, a `.db3` recording written with `rs.recorder` and played back through the pipeline."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inril_robot.config import CameraConfig
from inril_robot.hardware import StaleFrameError

rs = pytest.importorskip("pyrealsense2", reason="pyrealsense2 not installed: pip install 'inril-robot[camera]'")

from inril_robot.drivers import realsense  # noqa: E402
from inril_robot.drivers.realsense import PipelineSource, RealSenseCamera, SensorSource  # noqa: E402

W, H, FPS = 64, 48, 30
SERIAL = "000123456789"
FX, FY, PPX, PPY = 52.0, 53.0, 31.5, 23.5


def _intrinsics(distorted: bool) -> Any:
    i = rs.intrinsics()
    i.width, i.height, i.fx, i.fy, i.ppx, i.ppy = W, H, FX, FY, PPX, PPY
    if distorted:  # colour: Brown-Conrady as a D435's colour imager reports it
        i.model, i.coeffs = rs.distortion.brown_conrady, [0.1, -0.05, 0.0, 0.0, 0.01]
    else:  # depth: undistorted, so that alignment with identity extrinsics maps pixels one to one
        i.model, i.coeffs = rs.distortion.none, [0.0] * 5
    return i


class SyntheticRealSense:
    """An `rs.software_device` with a colour (and a depth) sensor, and a thread pushing frames at FPS.

    Colour frame n is filled with n % 256; depth frame n reads 0.5 m + n mm. Timestamps are host-clock milliseconds
    in the global time domain, as a real camera's are.
    """

    def __init__(self, depth: bool = False) -> None:
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.serial_number, SERIAL)
        self.device.register_info(rs.camera_info.name, "Intel RealSense D435 (software)")
        self.device.register_info(rs.camera_info.firmware_version, "5.16.0.1")
        self.streams: list[tuple[Any, Any, int]] = []
        for name, kind, fmt, bpp in (
            ("Color", rs.stream.color, rs.format.rgb8, 3),
            ("Depth", rs.stream.depth, rs.format.z16, 2),
        )[: 2 if depth else 1]:
            sensor = self.device.add_sensor(name)
            vs = rs.video_stream()
            vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps = kind, 0, len(self.streams), W, H, FPS
            vs.bpp, vs.fmt, vs.intrinsics = bpp, fmt, _intrinsics(distorted=name == "Color")
            profile = sensor.add_video_stream(vs)
            if name == "Depth":
                sensor.add_read_only_option(rs.option.depth_units, 0.001)
                identity = rs.extrinsics()  # same optics as the colour stream
                identity.rotation, identity.translation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0], [0.0] * 3
                profile.register_extrinsics_to(self.streams[0][1], identity)
            self.streams.append((sensor, profile, bpp))
        self.pushed: list[tuple[int, float]] = []  # (frame number, timestamp ms)
        self.paused = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)

    def __enter__(self) -> SyntheticRealSense:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _feed(self) -> None:
        n = 0
        start = time.perf_counter()
        while not self._stop.is_set():
            if not self.paused.is_set():
                stamp = time.time() * 1e3
                for sensor, profile, bpp in self.streams:
                    pixels = np.full((H, W, 3), n % 256, np.uint8) if bpp == 3 else np.full((H, W), 500 + n, np.uint16)
                    frame = rs.software_video_frame()
                    frame.pixels, frame.stride, frame.bpp = pixels, W * bpp, bpp
                    frame.timestamp, frame.domain, frame.frame_number = stamp, rs.timestamp_domain.global_time, n
                    frame.profile = profile.as_video_stream_profile()
                    if bpp == 2:
                        frame.depth_units = 0.001
                    sensor.on_video_frame(frame)
                self.pushed.append((n, stamp))
            n += 1
            self._stop.wait(max(0.0, start + n / FPS - time.perf_counter()))


def camera_cfg(**kw: Any) -> CameraConfig:
    return CameraConfig(
        **{"name": "front", "kind": "realsense", "width": W, "height": H, "fps": FPS, "serial": SERIAL, **kw}
    )


@pytest.fixture
def fast_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realsense, "STALL_S", 0.3)


@pytest.fixture
def synthetic() -> Iterator[SyntheticRealSense]:
    with SyntheticRealSense() as device:
        yield device


def test_software_device_frames_warmup_timestamps_intrinsics(synthetic: SyntheticRealSense) -> None:
    cam = RealSenseCamera(camera_cfg(warmup_frames=5), SensorSource(synthetic.device))
    cam.start()
    try:
        frame = cam.read_latest(max_age_s=0.2)
        assert frame.image.shape == (H, W, 3) and frame.image.dtype == np.uint8
        assert frame.frame_number >= 5, "warm-up frames are dropped"
        assert np.all(frame.image == frame.frame_number % 256), "the image is the frame the number says"
        pushed = dict(synthetic.pushed)
        assert frame.timestamp == pytest.approx(pushed[frame.frame_number] / 1e3, abs=1e-3)  # hardware time [s]
        assert frame.timestamp_domain == "global_time"
        time.sleep(0.2)
        later = cam.read_latest(max_age_s=0.2)
        assert later.frame_number > frame.frame_number and later.timestamp > frame.timestamp
        i = cam.intrinsics
        assert (i.width, i.height, i.fx, i.fy, i.cx, i.cy) == (W, H, FX, FY, PPX, PPY)
        assert i.distortion == pytest.approx((0.1, -0.05, 0.0, 0.0, 0.01))
        assert cam.info is not None and cam.info.serial == SERIAL and cam.info.firmware == "5.16.0.1"
    finally:
        cam.stop()


def test_stale_frame_raises_and_the_camera_reconnects(synthetic: SyntheticRealSense, fast_stall: None) -> None:
    cam = RealSenseCamera(camera_cfg(warmup_frames=2), SensorSource(synthetic.device))
    cam.start()
    try:
        cam.read_latest(0.2)
        synthetic.paused.set()  # the camera freezes (USB stall)
        time.sleep(0.5)
        with pytest.raises(StaleFrameError, match=r"front.*ms old"):
            cam.read_latest(0.2)
        synthetic.paused.clear()
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                frame = cam.read_latest(0.1)
                break
            except StaleFrameError:
                time.sleep(0.05)
        else:
            pytest.fail("no fresh frame after the stream resumed")
        assert cam.reconnects >= 1
        assert np.all(frame.image == frame.frame_number % 256)
    finally:
        cam.stop()


def test_depth_is_aligned_to_colour_in_metres() -> None:
    with SyntheticRealSense(depth=True) as device:
        cam = RealSenseCamera(camera_cfg(depth=True, warmup_frames=2), SensorSource(device.device))
        cam.start()
        try:
            frame = cam.read_latest(0.3)
            assert frame.depth is not None and frame.depth.shape == (H, W) and frame.depth.dtype == np.float32
            centre = frame.depth[H // 2, W // 2]
            assert 0.5 <= centre < 0.5 + 0.001 * (frame.frame_number + 1) + 1e-6
        finally:
            cam.stop()


def test_recording_plays_back_through_the_pipeline(tmp_path: Path) -> None:
    path = tmp_path / "front.db3"
    with SyntheticRealSense() as device:
        recorder = rs.recorder(str(path), device.device)
        cam = RealSenseCamera(camera_cfg(warmup_frames=0), SensorSource(recorder))
        cam.start()
        time.sleep(0.5)
        recorded = cam.read_latest(0.2).frame_number
        cam.stop()
        del recorder  # the file is finalised when the recorder goes away
    assert path.stat().st_size > 0

    playback = RealSenseCamera(camera_cfg(warmup_frames=3), PipelineSource(file=path))
    playback.start()
    try:
        frame = playback.read_latest(0.2)
        assert 3 <= frame.frame_number <= recorded
        assert np.all(frame.image == frame.frame_number % 256)
        assert playback.intrinsics.fx == FX and playback.info is not None and playback.info.serial == SERIAL
    finally:
        playback.stop()


def test_wrong_serial_names_what_is_connected() -> None:
    connected = [d.serial for d in realsense.list_devices()]
    cam = RealSenseCamera(camera_cfg(serial="999"), PipelineSource(context=rs.context()))
    expected = r"no RealSense with serial '999'; connected: (none|\[).*cameras\.front\.serial"
    with pytest.raises(RuntimeError, match=expected):
        cam.start()
    assert "999" not in connected


def test_missing_recording_is_named(tmp_path: Path) -> None:
    cam = RealSenseCamera(camera_cfg(), PipelineSource(file=tmp_path / "nope.db3"))
    with pytest.raises(FileNotFoundError, match=r"nope\.db3"):
        cam.start()


def test_registry_builds_a_realsense_camera() -> None:
    from inril_robot.config import load_config
    from inril_robot.runtime.registry import CAMERAS, load

    assert load(CAMERAS, "realsense", "camera") is RealSenseCamera
    cfg = load_config(overrides=["cameras=[{name: front, kind: realsense, serial: '1'}]"])
    assert isinstance(RealSenseCamera(cfg.cameras[0]), RealSenseCamera)
