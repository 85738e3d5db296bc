"""`RealSenseCamera`: Intel RealSense colour (+ optional depth aligned to colour) through pyrealsense2.

One background thread per camera waits for framesets and keeps only the newest frame, with its hardware timestamp
and frame number; `read_latest(max_age_s)` returns it or raises `StaleFrameError` when it is older than the caller
accepts (frozen camera, dropped USB link). The first `warmup_frames` frames after every (re)start are dropped (auto
exposure settles). When no frame arrives for `STALL_S` (or the device errors: unplugged) the thread closes the
source and re-opens it until it streams again, counting `reconnects`.

Where the frames come from is a `FrameSource`:

- `PipelineSource`: the librealsense pipeline, on a USB device chosen by serial number (the default), or playing
  back a recording (``.db3`` / ``.bag``) with ``file=``;
- `SensorSource`: the sensors of an existing device opened straight into an `rs.syncer`; used for
  `rs.software_device` (synthetic frames), which the pipeline cannot enumerate, and for a device wrapped in an
  `rs.recorder`.

pyrealsense2 is imported only when a camera is built.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from inril_robot.config import CameraConfig
from inril_robot.hardware import Camera, CameraIntrinsics, Frame, StaleFrameError
from inril_robot.hardware.calibration_file import capture_size

log = logging.getLogger(__name__)

STALL_S = 1.0  # no frame for this long: the camera is re-opened
RECONNECT_BACKOFF_S = 0.5  # between failed re-open attempts
START_TIMEOUT_S = 10.0  # start() waits this long for the first frame after warm-up
WAIT_MS = 100  # one wait for a frameset; keeps the thread responsive to stop()
FIX_DEVICE = (
    "connect the camera to a USB 3 port, check `rs-enumerate-devices` lists it, and install the "
    "librealsense udev rules (docs/hardware.md)"
)


def import_rs() -> Any:
    try:
        import pyrealsense2 as rs
    except ImportError as e:
        raise ImportError(
            f"the RealSense driver needs pyrealsense2 ({e}): pip install 'inril-robot[camera]' "
            "(and apt-get install libusb-1.0-0)",
            name="pyrealsense2",
        ) from e
    return rs


@dataclass(frozen=True)
class RealSenseFrame(Frame):
    """A `Frame` (timestamp: the device's hardware timestamp [s]) plus depth and when the host received it."""

    depth: np.ndarray | None = None  # (H, W) float32 metres, aligned to the colour image; None without depth
    received: float = 0.0  # host monotonic clock [s]
    timestamp_domain: str = ""  # "global_time" (host-synchronised), "hardware_clock", "system_time"


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    serial: str
    firmware: str
    usb_type: str


class FrameSource(Protocol):
    """Opens a stream of framesets for one camera configuration."""

    def open(self, cfg: CameraConfig) -> tuple[Any, DeviceInfo]:
        """Start streaming; return the colour stream profile and what the device says about itself."""

    def wait(self, timeout_ms: int) -> Any | None:
        """The next frameset, or None after `timeout_ms`."""

    def close(self) -> None: ...


def device_info(dev: Any) -> DeviceInfo:
    rs = import_rs()

    def info(key: str) -> str:
        field_ = getattr(rs.camera_info, key)
        return str(dev.get_info(field_)) if dev.supports(field_) else "?"

    return DeviceInfo(info("name"), info("serial_number"), info("firmware_version"), info("usb_type_descriptor"))


def list_devices(context: Any = None) -> list[DeviceInfo]:
    rs = import_rs()
    return [device_info(d) for d in (context or rs.context()).query_devices()]


def _color_profile(profile: Any) -> Any:
    return profile.get_stream(import_rs().stream.color)


@dataclass
class PipelineSource:
    """The librealsense pipeline: a USB device by serial (default), or playback of a recording (`file`)."""

    context: Any = None
    file: Path | None = None
    real_time: bool = True  # playback at the recorded rate (False: as fast as it is read)
    _pipeline: Any = field(default=None, init=False, repr=False)

    def open(self, cfg: CameraConfig) -> tuple[Any, DeviceInfo]:
        rs = import_rs()
        config = rs.config()
        if self.file is not None:
            if not Path(self.file).is_file():
                raise FileNotFoundError(f"camera {cfg.name!r}: recording {self.file} not found")
            config.enable_device_from_file(str(self.file), False)
        else:
            config.enable_device(self._select_serial(cfg))
        width, height = capture_size(cfg)  # the stream mode; the camera pipeline crops and resizes (issue 19)
        config.enable_stream(rs.stream.color, width, height, rs.format.rgb8, cfg.fps)
        if cfg.depth:
            config.enable_stream(rs.stream.depth, width, height, rs.format.z16, cfg.fps)
        pipeline = rs.pipeline(self.context) if self.context is not None else rs.pipeline()
        try:
            profile = pipeline.start(config)
        except RuntimeError as e:
            what = f"recording {self.file}" if self.file else f"serial {cfg.serial or '(only device)'}"
            raise RuntimeError(
                f"camera {cfg.name!r} ({what}) cannot stream {width}x{height} RGB8 at "
                f"{cfg.fps} fps{' with depth' if cfg.depth else ''} ({e}): pick a mode the device "
                "lists in `rs-enumerate-devices`, or " + FIX_DEVICE
            ) from e
        device = profile.get_device()
        if self.file is not None:
            device.as_playback().set_real_time(self.real_time)
        self._pipeline = pipeline
        return _color_profile(profile), device_info(device)

    def _select_serial(self, cfg: CameraConfig) -> str:
        found = list_devices(self.context)
        serials = [d.serial for d in found]
        if cfg.serial is not None:
            if cfg.serial not in serials:
                raise RuntimeError(
                    f"camera {cfg.name!r}: no RealSense with serial {cfg.serial!r}; connected: "
                    f"{serials or 'none'}. Fix cameras.{cfg.name}.serial, or " + FIX_DEVICE
                )
            return cfg.serial
        if len(serials) == 1:
            return serials[0]
        if not serials:
            raise RuntimeError(f"camera {cfg.name!r}: no RealSense connected: " + FIX_DEVICE)
        raise RuntimeError(
            f"camera {cfg.name!r}: {len(serials)} RealSense cameras connected ({serials}): "
            f"choose one with --set cameras.{cfg.name}.serial=SERIAL"
        )

    def wait(self, timeout_ms: int) -> Any | None:
        ok, frames = self._pipeline.try_wait_for_frames(timeout_ms)
        return frames if ok else None

    def close(self) -> None:
        if self._pipeline is not None:
            pipeline, self._pipeline = self._pipeline, None
            try:
                pipeline.stop()
            except RuntimeError as e:  # already stopped by a device loss
                log.debug("pipeline stop: %s", e)


@dataclass
class SensorSource:
    """The sensors of `device` (a software device, or a recorder wrapping one) streaming into an `rs.syncer`."""

    device: Any
    _sensors: list[Any] = field(default_factory=list, init=False, repr=False)
    _syncer: Any = field(default=None, init=False, repr=False)

    def open(self, cfg: CameraConfig) -> tuple[Any, DeviceInfo]:
        rs = import_rs()
        width, height = capture_size(cfg)
        wanted = [(rs.stream.color, rs.format.rgb8)] + ([(rs.stream.depth, rs.format.z16)] if cfg.depth else [])
        self._syncer = rs.syncer(4)
        color = None
        for stream, fmt in wanted:
            match = [
                (s, p)
                for s in self.device.query_sensors()
                for p in s.get_stream_profiles()
                if p.stream_type() == stream
                and p.format() == fmt
                and p.fps() == cfg.fps
                and p.as_video_stream_profile().width() == width
                and p.as_video_stream_profile().height() == height
            ]
            if not match:
                raise RuntimeError(
                    f"camera {cfg.name!r}: the device has no {stream} {fmt} {width}x{height} at {cfg.fps} fps"
                )
            sensor, profile = match[0]
            sensor.open(profile)
            sensor.start(self._syncer)
            self._sensors.append(sensor)
            color = profile if stream == rs.stream.color else color
        return color, device_info(self.device)

    def wait(self, timeout_ms: int) -> Any | None:
        ok, frames = self._syncer.try_wait_for_frames(timeout_ms)
        return frames if ok else None

    def close(self) -> None:
        for sensor in self._sensors:
            for step in (sensor.stop, sensor.close):
                try:
                    step()
                except RuntimeError as e:
                    log.debug("sensor %s: %s", step.__name__, e)
        self._sensors = []


class RealSenseCamera(Camera):
    """A RealSense camera (`cfg.kind == "realsense"`): latest-frame reader with warm-up, staleness and reconnection."""

    def __init__(self, cfg: CameraConfig, source: FrameSource | None = None) -> None:
        self.rs = import_rs()
        self.cfg = cfg
        self.name = cfg.name
        self.source: FrameSource = source if source is not None else PipelineSource()
        self.info: DeviceInfo | None = None
        self.reconnects = 0
        self.frames_received = 0
        self._intrinsics: CameraIntrinsics | None = None
        self._latest: RealSenseFrame | None = None
        self._lock = threading.Lock()
        self._first = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: str | None = None
        self._align = self.rs.align(self.rs.stream.color) if cfg.depth else None
        self._warmup_left = cfg.warmup_frames

    # --------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._thread is not None:
            return
        self._open()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"realsense-{self.name}", daemon=True)
        self._thread.start()
        if not self._first.wait(START_TIMEOUT_S):
            detail = f" (last error: {self._error})" if self._error else ""
            self.stop()
            raise RuntimeError(
                f"camera {self.name!r} delivered no frame within {START_TIMEOUT_S:.0f} s after "
                f"{self.cfg.warmup_frames} warm-up frames{detail}: " + FIX_DEVICE
            )

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self.source.close()

    def read_latest(self, max_age_s: float = 0.2) -> RealSenseFrame:
        with self._lock:
            frame = self._latest
        if frame is None:
            raise StaleFrameError(f"camera {self.name!r} has delivered no frame yet: call start()")
        age = time.monotonic() - frame.received
        if age > max_age_s:
            raise StaleFrameError(
                f"camera {self.name!r}: newest frame #{frame.frame_number} is {age * 1e3:.0f} ms "
                f"old (> {max_age_s * 1e3:.0f} ms); {self.reconnects} reconnect(s) so far"
                + (f", last error: {self._error}" if self._error else "")
                + ". Check the USB cable and that nothing else holds the camera"
            )
        return frame

    @property
    def intrinsics(self) -> CameraIntrinsics:
        if self._intrinsics is None:
            raise RuntimeError(f"camera {self.name!r}: intrinsics are read from the device by start()")
        return self._intrinsics

    # ----------------------------------------------------------------------------------------------- thread
    def _open(self) -> None:
        color_profile, self.info = self.source.open(self.cfg)
        i = color_profile.as_video_stream_profile().get_intrinsics()
        self._intrinsics = CameraIntrinsics(i.width, i.height, i.fx, i.fy, i.ppx, i.ppy, tuple(i.coeffs))
        self._warmup_left = self.cfg.warmup_frames

    def _run(self) -> None:
        last_frame = time.monotonic()
        while not self._stop.is_set():
            try:
                frames = self.source.wait(WAIT_MS)
                if frames is not None and self._take(frames):
                    last_frame = time.monotonic()
                    continue
                if time.monotonic() - last_frame < STALL_S:
                    continue
                self._error = f"no frame for {STALL_S:.1f} s"
            except RuntimeError as e:  # device lost (unplugged, USB reset)
                self._error = str(e)
            log.warning("camera %r: %s; re-opening", self.name, self._error)
            last_frame = self._reopen()

    def _reopen(self) -> float:
        self.source.close()
        while not self._stop.is_set():
            try:
                self._open()
                self.reconnects += 1
                return time.monotonic()
            except RuntimeError as e:
                self._error = f"re-open failed: {e}"
                self._stop.wait(RECONNECT_BACKOFF_S)
        return time.monotonic()

    def _take(self, frames: Any) -> bool:
        """Keep a frameset as the latest frame; False if it holds no colour frame (or is still warming up)."""
        if self._align is not None:
            frames = self._align.process(frames)
        color = frames.get_color_frame()
        if not color:
            return False
        if self._warmup_left > 0:
            self._warmup_left -= 1
            return True
        depth = None
        if self._align is not None:
            depth_frame = frames.get_depth_frame()
            if not depth_frame:
                return False  # colour without its depth: wait for a complete pair
            depth = np.asanyarray(depth_frame.get_data()).astype(np.float32) * depth_frame.get_units()
        frame = RealSenseFrame(
            image=np.array(color.get_data(), dtype=np.uint8, copy=True),
            timestamp=color.get_timestamp() / 1e3,
            frame_number=int(color.get_frame_number()),
            depth=depth,
            received=time.monotonic(),
            timestamp_domain=str(color.get_frame_timestamp_domain()).rpartition(".")[2],
        )
        with self._lock:
            self._latest = frame
        self.frames_received += 1
        self._first.set()
        return True
