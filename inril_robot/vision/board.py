"""ChArUco boards: the spec, printable PNG/PDF at exact physical size, and detection (OpenCV's aruco module).

Board frame (OpenCV's convention, used everywhere in this package): origin at the board's top-left outer corner as
printed, x along the columns (``squares_x``), y down the rows, z into the board (away from a viewer facing it).
Chessboard corner ``i`` sits at ``((i % (squares_x-1)) + 1, (i // (squares_x-1)) + 1) * square_length``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inril_robot.core.atomic import atomic_open
from inril_robot.core.errors import InrilError

MM_PER_INCH = 25.4
PAGE_SIZES_MM = {"a4": (210.0, 297.0), "letter": (215.9, 279.4), "a3": (297.0, 420.0)}
MIN_CORNERS = 6  # fewer than this and a board pose from PnP is too weak to use


class BoardError(ValueError, InrilError):
    """A board spec is invalid, does not fit the page, or a board was not found in an image."""


@dataclass(frozen=True)
class BoardSpec:
    squares_x: int = 5
    squares_y: int = 4
    square_length: float = 0.04  # [m]
    marker_length: float = 0.03  # [m]
    dictionary: str = "DICT_4X4_50"

    def __post_init__(self) -> None:
        if self.squares_x < 3 or self.squares_y < 3:
            raise BoardError(f"a ChArUco board needs at least 3x3 squares, got {self.squares_x}x{self.squares_y}")
        if not 0 < self.marker_length < self.square_length:
            raise BoardError(
                f"marker_length {self.marker_length} m must be in (0, square_length {self.square_length} m)"
            )
        if not hasattr(cv2.aruco, self.dictionary) or not self.dictionary.startswith("DICT_"):
            raise BoardError(f"unknown ArUco dictionary {self.dictionary!r}; e.g. DICT_4X4_50, DICT_5X5_100")
        markers_needed = (self.squares_x * self.squares_y) // 2
        size = int(self.dictionary.rsplit("_", 1)[-1]) if self.dictionary.rsplit("_", 1)[-1].isdigit() else 1000
        if markers_needed > size:
            raise BoardError(
                f"{self.squares_x}x{self.squares_y} squares need {markers_needed} markers; {self.dictionary} has {size}"
            )

    @property
    def size_m(self) -> tuple[float, float]:
        return self.squares_x * self.square_length, self.squares_y * self.square_length

    @property
    def num_corners(self) -> int:
        return (self.squares_x - 1) * (self.squares_y - 1)

    def board(self) -> cv2.aruco.CharucoBoard:
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard(
            (self.squares_x, self.squares_y), self.square_length, self.marker_length, dictionary
        )

    def corner_points(self) -> np.ndarray:
        """(N, 3) chessboard-corner positions in the board frame [m], indexed by corner id."""
        return np.asarray(self.board().getChessboardCorners(), dtype=np.float64).reshape(-1, 3)

    def to_dict(self) -> dict[str, float | int | str]:
        return dict(self.__dict__)


def board_image(spec: BoardSpec, px_per_square: int = 100, margin_px: int = 0) -> np.ndarray:
    """The board as a uint8 greyscale image, exactly `px_per_square` pixels per square, plus a white margin."""
    w, h = spec.squares_x * px_per_square, spec.squares_y * px_per_square
    img = spec.board().generateImage((w, h), marginSize=0, borderBits=1)
    if margin_px:
        img = cv2.copyMakeBorder(img, margin_px, margin_px, margin_px, margin_px, cv2.BORDER_CONSTANT, value=255)
    return img


def write_png(spec: BoardSpec, path: Path, dpi: int = 300, margin_mm: float = 10.0) -> Path:
    """A PNG whose pixels are exactly `dpi` per inch at the board's physical size (the DPI is stored in the file)."""
    px_per_square = round(spec.square_length * 1000.0 / MM_PER_INCH * dpi)
    if abs(px_per_square - spec.square_length * 1000.0 / MM_PER_INCH * dpi) > 1e-6:
        raise BoardError(
            f"square_length {spec.square_length * 1000:g} mm is not a whole number of pixels at "
            f"{dpi} dpi; pick a dpi that divides it (or use the PDF, which is exact at any size)"
        )
    img = board_image(spec, px_per_square, margin_px=round(margin_mm / MM_PER_INCH * dpi))
    import matplotlib.image

    with atomic_open(path, "wb") as f:
        matplotlib.image.imsave(f, img, cmap="gray", vmin=0, vmax=255, format="png", dpi=dpi)
    return Path(path)


def write_pdf(spec: BoardSpec, path: Path, page: str = "a4") -> Path:
    """A one-page PDF with the board at its exact physical size, centred, with its dimensions printed below.

    Print at 100% ("actual size", no "fit to page"), then measure one square: it must be `square_length`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if page not in PAGE_SIZES_MM:
        raise BoardError(f"unknown page size {page!r}; available: {', '.join(PAGE_SIZES_MM)}")
    page_w, page_h = PAGE_SIZES_MM[page]
    board_w, board_h = (v * 1000.0 for v in spec.size_m)
    if board_w > page_w - 20 or board_h > page_h - 30:  # 10 mm printer margins, room for the caption
        if board_w <= page_h - 20 and board_h <= page_w - 30:
            page_w, page_h = page_h, page_w  # landscape
        else:
            raise BoardError(
                f"a {board_w:g} x {board_h:g} mm board does not fit on {page} ({page_w:g} x "
                f"{page_h:g} mm) with margins; use a bigger page or smaller squares"
            )
    fig = plt.figure(figsize=(page_w / MM_PER_INCH, page_h / MM_PER_INCH))
    left, bottom = (page_w - board_w) / 2, (page_h - board_h) / 2
    ax = fig.add_axes((left / page_w, bottom / page_h, board_w / page_w, board_h / page_h))
    ax.imshow(
        board_image(spec, 200),
        cmap="gray",
        vmin=0,
        vmax=255,
        interpolation="none",  # unresampled: exact
        extent=(0, board_w, board_h, 0),
    )
    ax.set_axis_off()
    caption = (
        f"ChArUco {spec.squares_x}x{spec.squares_y} squares, square {spec.square_length * 1000:g} mm, "
        f"marker {spec.marker_length * 1000:g} mm, {spec.dictionary}. Print at 100% (actual size); "
        f"check one square measures {spec.square_length * 1000:g} mm."
    )
    fig.text(0.5, (bottom - 8) / page_h, caption, ha="center", va="top", fontsize=7)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="pdf")
    plt.close(fig)
    return Path(path)


@dataclass(frozen=True)
class Detection:
    corners: np.ndarray  # (N, 2) sub-pixel image positions of the detected chessboard corners, OpenCV pixels
    ids: np.ndarray  # (N,) their corner ids

    def object_points(self, spec: BoardSpec) -> np.ndarray:
        return spec.corner_points()[self.ids]


def detect(image: np.ndarray, spec: BoardSpec, what: str = "image") -> Detection:
    """The board's chessboard corners in `image` (RGB or grey); `BoardError` naming `what` if too few are found."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    detector = cv2.aruco.CharucoDetector(spec.board())
    corners, ids, _, marker_ids = detector.detectBoard(grey)
    found = 0 if ids is None else len(ids)
    if found < MIN_CORNERS:
        markers = 0 if marker_ids is None else len(marker_ids)
        raise BoardError(
            f"board not detected in {what}: {found} of {spec.num_corners} corners "
            f"({markers} markers) found, need {MIN_CORNERS}; is the board in view, lit, in focus, and "
            f"is the spec ({spec.squares_x}x{spec.squares_y}, {spec.dictionary}) the printed one?"
        )
    return Detection(corners.reshape(-1, 2).astype(np.float64), ids.reshape(-1).astype(np.int64))
