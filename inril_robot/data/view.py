"""Look at one recorded episode: an MP4 (every step, cameras side by side, action strip with a moving cursor) or a
PNG contact sheet (evenly spaced frames per camera, then proposed vs executed action per dimension, gripper and
reward).

The MP4's action strip is drawn once with matplotlib; each frame only copies it and draws the cursor with OpenCV
(a matplotlib figure per frame would be about a hundred times slower).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from inril_robot.core.contract import image_key
from inril_robot.data.store import Dataset, Episode
from inril_robot.reporting.video import VideoWriter, tile

SUFFIXES = (".mp4", ".png")
MIN_VIDEO_HEIGHT = 200  # camera tiles are upscaled (integer factor, nearest) to at least this height
STRIP_HEIGHT = 270  # height in pixels of the MP4's action strip (even: MP4 encoders want even sizes)
READ_CHUNK = 64  # steps of images read at once while writing the MP4 (bounded memory on long episodes)
DPI = 100
CURSOR_RGB = (220, 30, 30)
ACTION_GROUPS: tuple[tuple[str, slice, tuple[str, ...]], ...] = (
    ("position [m]", slice(0, 3), ("dx", "dy", "dz")),
    ("rotation [rad]", slice(3, 6), ("rx", "ry", "rz")),
    ("gripper (1 = closed)", slice(6, 7), ("gripper",)),
)
DIM_LABELS = ("dx [m]", "dy [m]", "dz [m]", "rx [rad]", "ry [rad]", "rz [rad]")


def render_episode(dataset: Dataset, index: int, out: Path, *, max_frames: int = 12) -> Path:
    """Render episode `index` to `out`: `.mp4` (video of every step) or `.png` (contact sheet). Returns `out`."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"cannot render an episode to {out.name!r}: the file name must end in one of "
            f"{', '.join(SUFFIXES)} (.mp4: video of every step, .png: contact sheet with plots)"
        )
    if max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    episode = dataset.episode(index)
    if suffix == ".mp4":
        _render_video(dataset, episode, out)
    else:
        _render_sheet(dataset, episode, out, max_frames)
    return out


# ------------------------------------------------------------------------------------------------------ shared
def _camera_keys(dataset: Dataset) -> list[tuple[str, str]]:
    """(camera, array key) for every camera whose images the dataset stores."""
    stored = dataset.contract.observations
    return [(cam, f"obs/{image_key(cam)}") for cam in dataset.cameras if image_key(cam) in stored]


def _title(dataset: Dataset, episode: Episode) -> str:
    task = episode.meta.get("task") or dataset.info.get("task")
    outcome = "success" if episode.success else "failure"
    return f"{task} | episode {episode.index} | {outcome} | {episode.length} steps"


def _frame_steps(length: int, max_frames: int) -> list[int]:
    """Up to `max_frames` evenly spaced steps from 0 to length-1, first and last included."""
    return sorted(set(np.linspace(0, length - 1, min(max_frames, length)).round().astype(int).tolist()))


def _figure_rgb(fig: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


# ------------------------------------------------------------------------------------------------------ video
def _render_video(dataset: Dataset, episode: Episode, out: Path) -> None:
    cameras = _camera_keys(dataset)
    if not cameras:
        raise ValueError(
            f"{dataset.root} is a state-only dataset (no cameras): an MP4 would have no frames; "
            f"render a contact sheet of its plots instead, e.g. {out.with_suffix('.png')}"
        )
    arrays = [episode.array(key) for _, key in cameras]
    scale = _upscale_factor(min(int(a.shape[1]) for a in arrays))
    first = _camera_tile([np.asarray(a[0]) for a in arrays], scale)
    strip, cursor_x = _action_strip(episode.load("action/executed"), first.shape[1], _title(dataset, episode))
    with VideoWriter(out, fps=dataset.contract.control_hz) as video:
        for start in range(0, episode.length, READ_CHUNK):
            chunk = [np.asarray(a[start : start + READ_CHUNK]) for a in arrays]
            for i in range(len(chunk[0])):
                step = start + i
                top = _camera_tile([c[i] for c in chunk], scale)
                _label(top, f"step {step}/{episode.length - 1}")
                bottom = strip.copy()
                cv2.line(bottom, (cursor_x(step), 0), (cursor_x(step), bottom.shape[0] - 1), CURSOR_RGB, 2)
                video.add(_even(np.concatenate([top, bottom], axis=0)))


def _upscale_factor(height: int) -> int:
    return max(1, math.ceil(MIN_VIDEO_HEIGHT / height))


def _camera_tile(images: list[np.ndarray], scale: int) -> np.ndarray:
    frame = tile(images)
    if scale > 1:
        frame = cv2.resize(frame, (frame.shape[1] * scale, frame.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(frame)


def _label(frame: np.ndarray, text: str) -> None:
    for color, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):  # outlined: readable on any background
        cv2.putText(frame, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, thickness, cv2.LINE_AA)


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad with black to even width and height (MP4 encoders work on 2x2 chroma blocks)."""
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    if pad_h or pad_w:
        frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)))
    return frame


def _action_strip(actions: np.ndarray, width: int, title: str) -> tuple[np.ndarray, Callable[[int], int]]:
    """The executed action over time as an RGB image `width` x STRIP_HEIGHT, and step -> cursor column."""
    fig = Figure(figsize=(width / DPI, STRIP_HEIGHT / DPI), dpi=DPI)
    axes = fig.subplots(len(ACTION_GROUPS), 1, sharex=True)
    steps = np.arange(len(actions))
    for ax, (name, dims, labels) in zip(axes, ACTION_GROUPS, strict=True):
        for values, label in zip(actions[:, dims].T, labels, strict=True):
            ax.plot(steps, values, linewidth=1, label=label)
        ax.set_ylabel(name.split(" ")[0], fontsize=6)
        ax.tick_params(labelsize=5, length=2, pad=1)
        ax.legend(fontsize=5, loc="upper left", ncol=3, frameon=False, handlelength=1.2, borderaxespad=0.1)
        ax.set_xlim(0, max(len(actions) - 1, 1))
    axes[-1].set_xlabel("step", fontsize=6, labelpad=1)
    fig.suptitle(title, fontsize=7, y=0.995)
    fig.subplots_adjust(left=0.09, right=0.99, top=0.92, bottom=0.12, hspace=0.12)
    image = _figure_rgb(fig)
    x0 = axes[0].transData.transform((0.0, 0.0))[0]
    x1 = axes[0].transData.transform((1.0, 0.0))[0]
    ratio = width / image.shape[1]
    if image.shape[:2] != (STRIP_HEIGHT, width):  # figure sizes round to whole pixels: make it exact
        image = cv2.resize(image, (width, STRIP_HEIGHT), interpolation=cv2.INTER_AREA)

    def cursor_x(step: int) -> int:
        return int(np.clip(round((x0 + step * (x1 - x0)) * ratio), 0, width - 1))

    return np.ascontiguousarray(image), cursor_x


# ------------------------------------------------------------------------------------------------ contact sheet
def _render_sheet(dataset: Dataset, episode: Episode, out: Path, max_frames: int) -> None:
    cameras = _camera_keys(dataset)
    steps = _frame_steps(episode.length, max_frames)
    image_rows = len(cameras)
    width = max(12.0, 1.3 * len(steps)) if cameras else 12.0
    fig = Figure(figsize=(width, 1.4 * image_rows + 5.0), dpi=DPI, layout="constrained")
    if cameras:
        top, bottom = fig.subfigures(2, 1, height_ratios=[1.4 * image_rows, 5.0])
        _draw_frames(top, episode, cameras, steps)
    else:
        bottom = fig
    _draw_plots(bottom, episode)
    fig.suptitle(_title(dataset, episode), fontsize=12)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")


def _draw_frames(fig: Any, episode: Episode, cameras: list[tuple[str, str]], steps: list[int]) -> None:
    axes = fig.subplots(len(cameras), len(steps), squeeze=False)
    for row, (camera, key) in enumerate(cameras):
        array = episode.array(key)
        for col, step in enumerate(steps):
            ax = axes[row, col]
            ax.imshow(np.asarray(array[step]))
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"step {step}", fontsize=8)
            if col == 0:
                ax.set_ylabel(camera, fontsize=9)


def _draw_plots(fig: Any, episode: Episode) -> None:
    """2x4 grid: dx dy dz gripper / rx ry rz reward. Executed solid, proposed dashed, interventions shaded."""
    proposed, executed = episode.load("action/proposed"), episode.load("action/executed")
    reward = episode.load("reward")
    intervention = episode.load("intervention") if "intervention" in episode.array_keys() else None
    steps = np.arange(episode.length)
    axes = fig.subplots(2, 4, sharex=True)
    action_axes = [*axes[0, :3], *axes[1, :3], axes[0, 3]]
    for dim, ax in enumerate(action_axes):
        label = DIM_LABELS[dim] if dim < len(DIM_LABELS) else "gripper (1 = closed)"
        ax.plot(steps, executed[:, dim], "-", color="C0", linewidth=1.2, label="executed")
        ax.plot(steps, proposed[:, dim], "--", color="C1", linewidth=1.0, label="proposed")
        _shade(ax, intervention)
        ax.set_title(label, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0, 3].set_ylim(-0.05, 1.05)
    ax = axes[1, 3]
    ax.plot(steps, reward, color="C2", linewidth=1.2, label="reward")
    ax.plot(steps, np.cumsum(reward), ":", color="C3", linewidth=1.0, label="cumulative")
    _shade(ax, intervention)
    outcome = "success" if episode.success else "failure"
    ax.set_title(f"reward (sum {float(reward.sum()):.3g}, {outcome})", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper left")
    handles, labels = action_axes[0].get_legend_handles_labels()
    action_axes[0].legend(handles, labels, fontsize=7, loc="best")
    for ax in axes[1]:
        ax.set_xlabel("step", fontsize=8)


def _shade(ax: Any, intervention: np.ndarray | None) -> None:
    """Grey bands over the steps where a human intervened (one legend entry at most)."""
    if intervention is None or not intervention.any():
        return
    flags = np.concatenate([[False], intervention.astype(bool), [False]])
    edges = np.flatnonzero(np.diff(flags.astype(np.int8)))
    for i, (start, stop) in enumerate(zip(edges[::2], edges[1::2], strict=True)):
        ax.axvspan(start - 0.5, stop - 0.5, color="0.85", zorder=0, label="intervention" if i == 0 else None)
