"""MP4 writing for rollouts (OpenCV's bundled FFmpeg, codec mp4v: plays in browsers' and desktop players)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


class VideoWriter:
    def __init__(self, path: Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = fps
        self._writer: cv2.VideoWriter | None = None
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"video frames must be HxWx3 uint8 RGB, got {rgb.dtype} {rgb.shape}")
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = rgb.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                raise OSError(f"cannot open {self.path} for writing (OpenCV has no MP4 encoder?)")
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tile(images: list[np.ndarray]) -> np.ndarray:
    """Side-by-side frame of several camera images (resized to the first one's height)."""
    h = images[0].shape[0]
    resized = [img if img.shape[0] == h else cv2.resize(img, (round(img.shape[1] * h / img.shape[0]), h))
               for img in images]
    return np.concatenate(resized, axis=1)
