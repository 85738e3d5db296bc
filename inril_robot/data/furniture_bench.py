"""Import FurnitureBench demonstrations (one pickle per episode) into an inril-robot dataset.

FurnitureBench (Heo et al., 2023) saves each episode as a ``.pkl`` holding a dict:

- ``observations``: list of dicts, each with ``robot_state`` (a dict: ee_pos 3, ee_quat 4 xyzw, ee_pos_vel 3,
  ee_ori_vel 3, gripper_width 1, joint_positions/velocities/torques 7), ``color_image1`` (wrist camera) and
  ``color_image2`` (front camera), HxWx3 uint8 RGB (224x224 in its policy data), and keys we do not use
  (``parts_poses``, depth images);
- ``actions``: list of 8-D actions (dx, dy, dz in metres, a delta quaternion xyzw, gripper in [-1, 1]: negative
  opens, positive closes);
- ``rewards``, ``skills`` (one entry per action), and optionally ``success`` and ``furniture``.

There is one more observation than actions: the observation reached after the last action. It has no action to
pair with, so it is dropped (an episode of N actions becomes N steps; an equal count is accepted as is).

Conversion to this project's contract (see `inril_robot.core.contract`):

- FurnitureBench applies the delta quaternion on the right of the current orientation, ``q_goal = q_ee * q_delta``,
  i.e. in the end-effector frame. Our rotation vector is in the base frame (``R_goal = exp(rv) @ R_ee``), so
  ``rv = R_ee @ log(q_delta)`` with ``R_ee`` from the same step's ``ee_quat``. With the end-effector at identity
  both frames agree (90 degrees about z -> [0, 0, pi/2]).
- The position delta is already in the base frame; the quaternion is normalised first.
- Gripper: ``(g + 1) / 2`` clipped to [0, 1] (1 = closed), as our gripper is absolute.
- Observations: ``ee_pos`` (3), ``ee_quat`` (4), ``gripper_width`` (1), the policy's 14-D ``robot_state``
  (ee_pos, ee_quat, ee_pos_vel, ee_ori_vel, gripper_width), all float32, and ``wrist_rgb`` / ``front_rgb``
  (optionally resized to ``image_size`` x ``image_size`` with cv2.INTER_AREA).

Security: pickle can run arbitrary code while loading. Only import files you trust (your own recordings, or the
dataset downloaded from its authors). As a guard, files are read with a restricted unpickler that only rebuilds
numpy arrays, numpy scalars and builtin containers; anything else is refused, naming the global it asked for, and
that file is skipped (nothing from it is written).
"""

from __future__ import annotations

import codecs
import functools
import importlib
import pickle
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np

from inril_robot.core.contract import Contract, ObsSpec, image_key
from inril_robot.core.errors import InrilError
from inril_robot.core.geometry import quat_to_matrix, quat_to_rotvec
from inril_robot.data.store import DatasetWriter

CONTROL_HZ = 10.0
CAMERAS = {"wrist": "color_image1", "front": "color_image2"}  # our camera name -> FurnitureBench image key
STATE_PARTS = (("ee_pos", 3), ("ee_quat", 4), ("ee_pos_vel", 3), ("ee_ori_vel", 3), ("gripper_width", 1))
STATE_DIM = sum(n for _, n in STATE_PARTS)  # 14: the "filtered" robot state FurnitureBench policies use
REQUIRED_KEYS = ("observations", "actions", "rewards")
CONVERSION_NOTE = (
    "8-D actions (dx, dy, dz, delta quaternion xyzw in the end-effector frame, gripper -1 open"
    " .. +1 close) -> 7-D (dx, dy, dz, base-frame rotation vector R_ee @ log(q),"
    " gripper (g + 1) / 2 in [0, 1]);"
    " the final observation of each episode (after the last action) is dropped"
)
# Errors that make one file unusable: it is skipped and reported, the import goes on.
FILE_ERRORS = (ValueError, TypeError, pickle.UnpicklingError, EOFError, OSError)


class UnsafePickleError(pickle.UnpicklingError, InrilError):
    """The pickle asked for a global outside the allow-list (numpy arrays and builtin containers)."""


@dataclass
class ImportReport:
    dest: Path
    episodes: int = 0
    steps: int = 0
    indices: list[int] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"imported {self.episodes} episodes ({self.steps} steps) into {self.dest}"]
        lines += [f"skipped {path}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)


@dataclass
class FurnitureEpisode:
    """One converted episode, ready to write: per-step observations and 7-D actions."""

    source: Path
    observations: list[dict[str, np.ndarray]]
    actions: np.ndarray  # (T, 7) float32, our contract
    rewards: np.ndarray  # (T,) float32
    success: bool
    extra: dict[str, Any]

    @property
    def length(self) -> int:
        return len(self.actions)

    def contract(self) -> Contract:
        first = self.observations[0]
        observations = {key: ObsSpec(shape=tuple(value.shape), dtype=str(value.dtype)) for key, value in first.items()}
        cameras = {camera: tuple(first[image_key(camera)].shape[:2]) for camera in CAMERAS}
        return Contract(control_hz=CONTROL_HZ, observations=observations, cameras=cameras)


# ------------------------------------------------------------------------------------------------- importing
def import_furniture_bench(
    src: Path, dest: Path, *, task: str = "furniture_bench", image_size: int | None = None
) -> ImportReport:
    """Convert FurnitureBench pickles (`src`: one `.pkl` or a directory searched recursively) into dataset `dest`.

    Appends when `dest` already holds a dataset (its task and contract must match). Files that cannot be read or
    converted, including pickles refused as unsafe, are skipped and listed with the reason in the report.
    Pickle can run code while loading: only point this at files you trust (see the module docstring).
    """
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
    src, dest = Path(src), Path(dest)
    files = find_pickles(src)
    report = ImportReport(dest=dest)
    writer: DatasetWriter | None = None
    try:
        for path in files:
            try:
                episode = read_episode(path, image_size=image_size)
            except FILE_ERRORS as e:
                report.skipped.append((path, str(e)))
                continue
            if writer is None:  # the first readable episode defines the contract (image sizes)
                writer = DatasetWriter(
                    dest,
                    episode.contract(),
                    task=task,
                    extra_info={
                        "imported_from": "furniture_bench",
                        "source": str(src.resolve()),
                        "conversion": CONVERSION_NOTE,
                    },
                )
            reason = _contract_difference(writer.contract, episode)
            if reason:
                report.skipped.append((path, reason))
                continue
            report.indices.append(write_episode(writer, episode))
            report.episodes += 1
            report.steps += episode.length
    finally:
        if writer is not None:
            writer.close()
    return report


def find_pickles(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise FileNotFoundError(f"{src} does not exist (expected a FurnitureBench .pkl file or a folder of them)")
    files = sorted(p for p in src.rglob("*.pkl") if p.is_file())
    if not files:
        raise ValueError(f"no .pkl files under {src} (FurnitureBench saves one pickle per episode)")
    return files


def _contract_difference(contract: Contract, episode: FurnitureEpisode) -> str:
    diffs = contract.mismatches(episode.contract())
    if not diffs:
        return ""
    text = "; ".join(f"{name}: dataset has {ours!r}, file has {theirs!r}" for name, ours, theirs in diffs)
    return f"does not fit the dataset's contract ({text}); use image_size to resize all images to one size"


def write_episode(writer: DatasetWriter, episode: FurnitureEpisode) -> int:
    """Write one converted episode (control "human": teleoperated; proposed = executed). Returns its index."""
    recording = writer.begin_episode(seed=None, notes=episode.source.name)
    try:
        last = episode.length - 1
        for t, (obs, action, reward) in enumerate(
            zip(episode.observations, episode.actions, episode.rewards, strict=True)
        ):
            recording.add_step(obs, action, action, float(reward), t == last, "human")
        return recording.commit(success=episode.success, extra=episode.extra)
    except BaseException:
        recording.discard()
        raise


# ------------------------------------------------------------------------------------------------- reading
def read_episode(path: Path, *, image_size: int | None = None) -> FurnitureEpisode:
    """Load and convert one FurnitureBench pickle; ValueError naming the file and key when it is malformed."""
    path = Path(path)
    raw = load_pickle(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a dict with keys {', '.join(REQUIRED_KEYS)}, got {type(raw).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if missing:
        raise ValueError(
            f"{path}: missing key {missing[0]!r} (a FurnitureBench episode has "
            f"{', '.join(REQUIRED_KEYS)}; this file has {', '.join(map(repr, raw)) or 'no keys'})"
        )
    raw_actions, raw_obs, raw_rewards = (_as_list(raw, key, path) for key in ("actions", "observations", "rewards"))
    n = len(raw_actions)
    if n == 0:
        raise ValueError(f"{path}: 'actions' is empty")
    if len(raw_obs) not in (n, n + 1):
        raise ValueError(
            f"{path}: 'observations' has {len(raw_obs)} entries for {n} actions "
            f"(expected {n + 1}: one more, the final observation, or {n})"
        )
    if len(raw_rewards) != n:
        raise ValueError(f"{path}: 'rewards' has {len(raw_rewards)} entries for {n} actions")
    observations = _convert_observations(raw_obs[:n], path, image_size)
    actions = np.stack(
        [
            convert_action(_vector(a, 8, f"{path}: actions[{t}]"), obs["ee_quat"], f"{path}: actions[{t}]")
            for t, (a, obs) in enumerate(zip(raw_actions, observations, strict=True))
        ]
    ).astype(np.float32)
    rewards = np.array([_scalar(r, f"{path}: rewards[{t}]") for t, r in enumerate(raw_rewards)], np.float32)
    success = bool(_scalar(raw["success"], f"{path}: success")) if "success" in raw else bool(rewards.sum() > 0)
    return FurnitureEpisode(path, observations, actions, rewards, success, _episode_extra(raw, path))


def convert_action(action: np.ndarray, ee_quat: np.ndarray, where: str = "action") -> np.ndarray:
    """FurnitureBench 8-D action (dx, dy, dz, delta quat xyzw in the EE frame, gripper -1..1) -> our 7-D action."""
    action = np.asarray(action, dtype=np.float64)
    quat = action[3:7]
    norm = float(np.linalg.norm(quat))
    if not np.isfinite(action).all() or norm < 1e-8:
        raise ValueError(f"{where}: not a usable action (non-finite values or a zero quaternion): {action.tolist()}")
    rotvec = quat_to_matrix(ee_quat) @ quat_to_rotvec(quat / norm)  # end-effector frame -> base frame
    gripper = np.clip((action[7] + 1.0) / 2.0, 0.0, 1.0)
    return np.concatenate([action[:3], rotvec, [gripper]])


def _convert_observations(raw_obs: list[Any], path: Path, image_size: int | None) -> list[dict[str, np.ndarray]]:
    out: list[dict[str, np.ndarray]] = []
    for t, item in enumerate(raw_obs):
        obs = _convert_observation(item, f"{path}: observations[{t}]", image_size)
        if out:
            for camera in CAMERAS:
                key = image_key(camera)
                if obs[key].shape != out[0][key].shape:
                    raise ValueError(
                        f"{path}: observations[{t}][{CAMERAS[camera]!r}] has shape {obs[key].shape}, "
                        f"but observations[0] has {out[0][key].shape}"
                    )
        out.append(obs)
    return out


def _convert_observation(item: Any, where: str, image_size: int | None) -> dict[str, np.ndarray]:
    if not isinstance(item, dict):
        raise ValueError(f"{where} is a {type(item).__name__}, expected a dict")
    parts = _robot_state(_require(item, "robot_state", where), f"{where}['robot_state']")
    obs = {
        "ee_pos": parts["ee_pos"],
        "ee_quat": parts["ee_quat"],
        "gripper_width": parts["gripper_width"],
        "robot_state": np.concatenate([parts[name] for name, _ in STATE_PARTS]),
    }
    for camera, key in CAMERAS.items():
        obs[image_key(camera)] = _image(_require(item, key, where), f"{where}[{key!r}]", image_size)
    return obs


def _robot_state(state: Any, where: str) -> dict[str, np.ndarray]:
    """The 14-D state's parts, float32. A dict (as recorded) or an already flattened 14-vector in STATE_PARTS order."""
    if not isinstance(state, dict):
        flat = _vector(state, STATE_DIM, where)
        bounds = np.cumsum([0] + [n for _, n in STATE_PARTS])
        return {
            name: flat[a:b].astype(np.float32)
            for (name, _), a, b in zip(STATE_PARTS, bounds[:-1], bounds[1:], strict=True)
        }
    return {
        name: _vector(_require(state, name, where), n, f"{where}[{name!r}]").astype(np.float32)
        for name, n in STATE_PARTS
    }


def _image(value: Any, where: str, image_size: int | None) -> np.ndarray:
    image = np.asarray(value)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{where} must be an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    if image_size is not None and image.shape[:2] != (image_size, image_size):
        return cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def _require(mapping: dict[str, Any], key: str, where: str) -> Any:
    if key not in mapping:
        raise ValueError(f"{where} has no key {key!r} (it has: {', '.join(map(repr, mapping))})")
    return mapping[key]


def _as_list(raw: dict[str, Any], key: str, path: Path) -> list[Any]:
    value = raw[key]
    if isinstance(value, np.ndarray):
        return list(value)
    if not isinstance(value, list | tuple):
        raise ValueError(f"{path}: {key!r} must be a list, got {type(value).__name__}")
    return list(value)


def _vector(value: Any, size: int, where: str) -> np.ndarray:
    """A float64 vector of `size` (any shape holding exactly `size` numbers: FurnitureBench's sim squeezes)."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where} is not numeric: {e}") from None
    if array.size != size:
        raise ValueError(f"{where} has shape {array.shape}, expected ({size},)")
    return array.reshape(size)


def _scalar(value: Any, where: str) -> float:
    return float(_vector(value, 1, where)[0])


def _episode_extra(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """Episode attributes kept from the source: skills, furniture, source file, recorded error (JSON-safe)."""
    extra: dict[str, Any] = {
        "skills": [_plain(s) for s in raw.get("skills", [])],
        "furniture": raw.get("furniture"),
        "source_file": str(path),
    }
    if raw.get("error"):
        extra["source_error"] = str(raw.get("error_description", ""))
    if extra["furniture"] is not None:
        extra["furniture"] = str(extra["furniture"])
    return extra


def _plain(value: Any) -> Any:
    array = np.asarray(value)
    return array.item() if array.size == 1 else array.tolist()


# ------------------------------------------------------------------------------------------ restricted unpickle
def load_pickle(path: Path) -> Any:
    """Unpickle `path` allowing only numpy arrays/scalars/dtypes and builtin containers.

    Pickle is unsafe by design (loading can call any importable function): only load files you trust. This guard
    refuses every other global with `UnsafePickleError` naming it, before anything is called.
    """
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, path).load()
    except (UnsafePickleError, OSError):
        raise
    except Exception as e:  # truncated or garbage files raise almost anything from inside pickle
        raise ValueError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        allowed = _allowed_globals().get((module, name))
        if allowed is None:
            raise UnsafePickleError(
                f"{self.path}: refused: the pickle asks for the forbidden global {module}.{name}. FurnitureBench "
                f"episodes only need numpy arrays and builtin containers, and loading anything else could run code; "
                f"only import files you trust"
            )
        return allowed


def _numpy_core(submodule: str) -> ModuleType:
    """numpy 2 keeps its internals in numpy._core; numpy 1 in numpy.core (pickles name either)."""
    try:
        return importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{submodule}")


@functools.cache
def _allowed_globals() -> dict[tuple[str, str], Any]:
    multiarray, numeric = _numpy_core("multiarray"), _numpy_core("numeric")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): OrderedDict,
        ("_codecs", "encode"): codecs.encode,  # bytes in protocol 0-2 pickles
    }
    for builtins in ("builtins", "__builtin__"):  # protocol 0-2 pickles name the Python 2 module
        allowed.update({(builtins, t.__name__): t for t in (set, frozenset, complex, bytes, bytearray)})
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5 arrays
    return allowed
