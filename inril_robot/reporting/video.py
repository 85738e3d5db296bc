"""MP4 writing for rollouts and datasets: H.264 (yuv420p, +faststart) through PyAV, which browsers, notebooks and
desktop players all play; frames can carry a text overlay (episode, step, reward, success)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import av  # imported when a video is written: rollouts and datasets without videos need no PyAV

CODEC = "libx264"


class VideoWriter:
    def __init__(self, path: Path, fps: float, crf: int = 20) -> None:
        self.path = Path(path)
        self.fps = fps
        self.crf = crf
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._size: tuple[int, int] | None = None  # (h, w) of the first frame: every frame must match
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"video frames must be HxWx3 uint8 RGB, got {rgb.dtype} {rgb.shape}")
        if self._container is None:
            self._open(rgb.shape[:2])
        assert self._stream is not None and self._size is not None and self._container is not None
        if rgb.shape[:2] != self._size:
            raise ValueError(
                f"frame {self.frames} is {rgb.shape[1]}x{rgb.shape[0]}, the video {self._size[1]}x{self._size[0]}"
            )
        import av

        frame = av.VideoFrame.from_ndarray(_even(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def _open(self, size: tuple[int, int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        h, w = size
        self._size = size
        import av

        container = av.open(str(self.path), mode="w", options={"movflags": "+faststart"})
        stream = container.add_stream(CODEC, rate=round(self.fps))
        stream.width, stream.height = w + w % 2, h + h % 2  # yuv420p needs even sizes: pad by one pixel
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(self.crf), "preset": "veryfast"}
        self._container, self._stream = container, stream

    def close(self) -> None:
        if self._container is not None and self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = self._stream = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _even(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return np.ascontiguousarray(rgb)
    return np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def tile(images: list[np.ndarray]) -> np.ndarray:
    """Side-by-side frame of several camera images (resized to the first one's height)."""
    h = images[0].shape[0]
    resized = [
        img if img.shape[0] == h else cv2.resize(img, (round(img.shape[1] * h / img.shape[0]), h)) for img in images
    ]
    return np.concatenate(resized, axis=1)


def fit_height(rgb: np.ndarray, height: int) -> np.ndarray:
    """Scale a frame to `height` pixels (aspect kept): nearest-neighbour up, area-averaged down."""
    h, w = rgb.shape[:2]
    if h == height:
        return rgb
    interpolation = cv2.INTER_NEAREST if height > h else cv2.INTER_AREA
    return cv2.resize(rgb, (max(1, round(w * height / h)), height), interpolation=interpolation)


def overlay(rgb: np.ndarray, lines: list[str]) -> np.ndarray:
    """Text lines in the top-left corner on a dark band, sized to the frame; returns a new frame."""
    out = rgb.copy()
    scale = max(0.35, out.shape[0] / 600)
    thickness = max(1, round(scale * 1.5))
    line_h = round(22 * scale) + 4
    width = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][0] for t in lines) + 8
    band = out[: line_h * len(lines) + 6, : min(width, out.shape[1])]
    band[:] = (band.astype(np.uint16) * 2 // 5).astype(np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(
            out, text, (4, line_h * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA
        )
    return out
