"""The camera pipeline: capture -> crop -> resize to the policy's resolution; one code path, real or rendered frames.

A camera captures at its *capture* resolution (the RealSense stream mode, or the simulator's render size, which is the
real camera's when a calibration file names it). The policy sees a fixed *output* resolution. In between:

1. crop a rectangle given in pixels of the capture (`CropBox`; by default the largest centred rectangle with the
   output's aspect ratio, so pixels stay square);
2. resize to the output with OpenCV (area averaging when shrinking, bilinear when enlarging).

Because the simulated camera renders with the real camera's resolution and intrinsics, the same crop box selects the
same part of the scene in both, and datasets (which store the pipeline's output) hold exactly what the policy sees.
`ImagePipeline.intrinsics` gives the pinhole model of the output image (what a marker detector or a projection on the
policy image needs).

numpy + OpenCV only: this runs on the robot PC.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from inril_robot.core.errors import InrilError
from inril_robot.hardware import CameraIntrinsics


class PipelineError(ValueError, InrilError):
    """A crop outside the capture, a frame of the wrong size or type: the message names the camera and the values."""


@dataclass(frozen=True)
class CropBox:
    """A rectangle in capture pixels: columns x .. x + width, rows y .. y + height."""

    x: int
    y: int
    width: int
    height: int

    @staticmethod
    def centred(capture: tuple[int, int], aspect: float) -> CropBox:
        """The largest centred box of `aspect` = width / height inside a `capture` = (width, height) image."""
        cw, ch = capture
        if cw / ch > aspect:  # capture wider than the output: crop the sides
            w, h = max(1, round(ch * aspect)), ch
        else:  # taller: crop top and bottom
            w, h = cw, max(1, round(cw / aspect))
        return CropBox((cw - w) // 2, (ch - h) // 2, w, h)


@dataclass(frozen=True)
class ImagePipeline:
    """One camera's capture -> crop -> resize. Call it on a (capture_h, capture_w, 3) uint8 RGB frame."""

    camera: str
    capture: tuple[int, int]  # (width, height) of the frames the camera delivers
    crop: CropBox
    output: tuple[int, int]  # (width, height) the policy sees

    @classmethod
    def build(
        cls,
        camera: str,
        capture: tuple[int, int],
        output: tuple[int, int],
        crop: tuple[int, int, int, int] | None = None,
    ) -> ImagePipeline:
        """`crop` = (x, y, width, height) in capture pixels; None: centred to the output's aspect ratio."""
        cw, ch = capture
        box = CropBox.centred(capture, output[0] / output[1]) if crop is None else CropBox(*crop)
        if box.width < 1 or box.height < 1 or box.x < 0 or box.y < 0:
            raise PipelineError(f"camera {camera!r}: crop {tuple(crop or ())} must have x, y >= 0 and a positive size")
        if box.x + box.width > cw or box.y + box.height > ch:
            raise PipelineError(
                f"camera {camera!r}: crop (x={box.x}, y={box.y}, width={box.width}, height={box.height}) reaches "
                f"outside the {cw}x{ch} capture; fix cameras.{camera}.crop or cameras.{camera}.capture"
            )
        return cls(camera, (cw, ch), box, output)

    @property
    def identity(self) -> bool:
        return self.capture == self.output and self.crop == CropBox(0, 0, *self.capture)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(capture_h, capture_w, 3) uint8 -> (output_h, output_w, 3) uint8 (C-contiguous; a copy unless identity)."""
        cw, ch = self.capture
        if image.shape != (ch, cw, 3) or image.dtype != np.uint8:
            raise PipelineError(
                f"camera {self.camera!r}: expected a {cw}x{ch} RGB uint8 frame (shape ({ch}, {cw}, 3)), got shape "
                f"{image.shape} {image.dtype}; the camera streams a different mode than cameras.{self.camera}.capture"
            )
        if self.identity:
            return image
        b = self.crop
        cropped = image[b.y : b.y + b.height, b.x : b.x + b.width]
        ow, oh = self.output
        if (b.width, b.height) == (ow, oh):
            return np.ascontiguousarray(cropped)
        shrinking = ow <= b.width and oh <= b.height
        return cv2.resize(cropped, (ow, oh), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)

    def intrinsics(self, k: CameraIntrinsics) -> CameraIntrinsics:
        """The pinhole model of the output image, from the capture's `k` (OpenCV convention: pixel centres at
        integer coordinates). Distortion coefficients are unchanged (they are in normalised coordinates)."""
        if (k.width, k.height) != self.capture:
            raise PipelineError(
                f"camera {self.camera!r}: intrinsics are for {k.width}x{k.height}, the capture is "
                f"{self.capture[0]}x{self.capture[1]}"
            )
        sx, sy = self.output[0] / self.crop.width, self.output[1] / self.crop.height
        return replace(
            k,
            width=self.output[0],
            height=self.output[1],
            fx=k.fx * sx,
            fy=k.fy * sy,
            cx=(k.cx - self.crop.x + 0.5) * sx - 0.5,
            cy=(k.cy - self.crop.y + 0.5) * sy - 0.5,
        )

    def describe(self) -> str:
        b = self.crop
        return (
            f"{self.camera}: capture {self.capture[0]}x{self.capture[1]} -> crop {b.width}x{b.height} at "
            f"({b.x}, {b.y}) -> {self.output[0]}x{self.output[1]}"
        )
