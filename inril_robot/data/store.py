"""The episode store: a directory of zarr v3 episodes, each committed atomically.

Layout::

    DIR/dataset.json            schema version, contract, robot config, task, calibration reference, control_hz,
                                creation and modification info (replaced atomically)
    DIR/episodes/ep_000012/     one zarr group per committed episode (never modified after commit)
    DIR/.staging/ep_000013.*/   the episode being recorded (invisible to readers, removed on the next open)
    DIR/.lock                   held (flock) by the single writer

An episode is written aside in `.staging/`, flushed in chunks while it is recorded, then finished: checksums of
every array go into its attributes, every file and directory is fsynced, and one `rename()` into `episodes/`
commits it. `rename` within a filesystem is atomic, so a reader sees an episode whole or not at all, and a writer
killed at any instant loses at most the episode it was recording.

Per step: `obs/<key>` (proprioception, object state, camera images uint8), `action/proposed`, `action/executed`
(after the safety envelope: what learning uses), `reward`, `done`, `control` (who was in control, `CONTROL_CODES`),
`intervention`, `state/<field>` (the full `RobotState` the action was taken from, float64, so the safety envelope
can be replayed), `time/wall`, `time/state` and `time/capture/<camera>`.
Per episode (group attributes): index, success, task, length, seed, notes, started/ended, checksums, and optional
lists of safety events and control-authority transitions.

Reading verifies: every whole-array `Episode.load` checks the array against the sha256 stored at commit (and its
length against the episode's), so a flipped byte, a truncated or deleted chunk (which zarr would read back as zeros)
or a missing array raises `DatasetError` naming the episode instead of training on it. `Dataset.verify` checks a
whole dataset (`inril-robot dataset verify`).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from inril_robot.core.atomic import atomic_open, fsync_dir
from inril_robot.core.contract import Contract
from inril_robot.core.errors import InrilError
from inril_robot.core.state import RobotState
from inril_robot.core.version import package_version

SCHEMA_VERSION = 1
CONTROL_CODES: dict[str, int] = {"policy": 0, "human": 1, "scripted": 2, "reset": 3, "none": 4}
EPISODE_DIR = re.compile(r"^ep_(\d{6})$")
STATE_FIELDS = ("ee_pos", "ee_quat", "ee_vel", "joint_pos", "joint_vel", "gripper_width", "ee_wrench")
FLUSH_EVERY = 32  # steps buffered in memory before they are appended to the staging episode
IMAGE_CHUNK_STEPS = 16  # time-chunk of image arrays: whole-episode reads stay fast, appends stay small


class DatasetError(RuntimeError, InrilError):
    """The dataset is missing, corrupt, locked by another writer, or does not fit the run."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def fsync_tree(path: Path) -> None:
    """fsync every file, then every directory (deepest first), under `path`."""
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))
        del dirs


def atomic_write_json(path: Path, payload: dict[str, Any]) -> None:
    with atomic_open(path, "w") as f:
        json.dump(payload, f, indent=2, default=str)


def array_checksum(array: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------------ reading
@dataclass
class Episode:
    """One committed episode: `meta` (attributes) and lazily read arrays by path (e.g. `obs/ee_pos`)."""

    index: int
    path: Path
    meta: dict[str, Any]
    _group: Any = field(default=None, repr=False)
    _verified: set[str] = field(default_factory=set, repr=False)  # keys already checked against their sha256

    @property
    def group(self) -> Any:
        if self._group is None:
            self._group = zarr.open_group(str(self.path), mode="r")
        return self._group

    @property
    def length(self) -> int:
        return int(self.meta["length"])

    @property
    def success(self) -> bool:
        return bool(self.meta.get("success", False))

    def array_keys(self) -> list[str]:
        return sorted(self.meta.get("checksums", {}))

    @property
    def name(self) -> str:
        return f"episode {self.index} ({self.path})"

    def array(self, key: str) -> Any:
        try:
            return self.group[key]
        except KeyError:
            if key in self.meta.get("checksums", {}):
                raise DatasetError(f"{self.name} is corrupt: its array {key!r} is missing") from None
            known = ", ".join(self.array_keys())
            raise DatasetError(f"episode {self.index} has no array {key!r}; it has: {known}") from None
        except DatasetError:
            raise
        except Exception as e:  # zarr metadata that no longer parses
            raise DatasetError(f"{self.name} is corrupt: its array {key!r} cannot be opened ({e})") from e

    def load(self, key: str, verify: bool = True) -> np.ndarray:
        """The whole array, checked against its stored sha256 (and the episode length) unless `verify` is False."""
        try:
            value = np.asarray(self.array(key)[...])
        except DatasetError:
            raise
        except Exception as e:  # a truncated or garbled chunk that no longer decompresses
            raise DatasetError(
                f"{self.name} is corrupt: its array {key!r} cannot be read ({type(e).__name__}: {e})"
            ) from e
        if verify and key not in self._verified:
            problem = self._problem(key, value)
            if problem:
                raise DatasetError(f"{self.name} is corrupt: {problem}")
            self._verified.add(key)
        return value

    def _problem(self, key: str, value: np.ndarray) -> str | None:
        digest = self.meta.get("checksums", {}).get(key)
        if digest is not None and array_checksum(value) != digest:
            return f"its array {key!r} does not match the sha256 stored at commit"
        if value.ndim == 0 or len(value) != self.length:
            return f"its array {key!r} has {len(value) if value.ndim else 0} steps, the episode {self.length}"
        return None

    def robot_state(self, step: int, states: dict[str, np.ndarray] | None = None) -> RobotState:
        """The recorded `RobotState` at `step` (pass `states=episode.load_states()` when iterating)."""
        states = states if states is not None else self.load_states()
        if not states:
            raise DatasetError(f"episode {self.index} was recorded without robot states")
        values = {name: states[name][step] for name in STATE_FIELDS}
        return RobotState(time=float(states["time"][step]), gripper_width=float(values.pop("gripper_width")), **values)

    def load_states(self) -> dict[str, np.ndarray]:
        """Every recorded `RobotState` field, stacked over steps (empty when none were recorded)."""
        if not all(f"state/{name}" in self.meta.get("checksums", {}) for name in STATE_FIELDS):
            return {}
        return {"time": self.load("time/state"), **{name: self.load(f"state/{name}") for name in STATE_FIELDS}}

    def obs_keys(self) -> list[str]:
        return [k.removeprefix("obs/") for k in self.array_keys() if k.startswith("obs/")]

    def verify(self) -> list[str]:
        """Keys of the arrays that are not as committed (unreadable, missing, or not matching their sha256)."""
        return [key for key, _ in self._problems()]

    def problems(self) -> list[str]:
        """What is wrong with this episode's arrays, one line each (empty: every array bit-exact as committed)."""
        if not self.meta.get("checksums"):
            return ["it has no stored checksums"]
        return [problem for _, problem in self._problems()]

    def _problems(self) -> list[tuple[str, str]]:
        found = []
        for key in self.array_keys():
            try:
                self.load(key)
            except DatasetError as e:
                found.append((key, str(e).removeprefix(f"{self.name} is corrupt: ")))
        return found


class Dataset:
    """Read access to a dataset directory. Only committed episodes are visible."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        info_path = self.root / "dataset.json"
        if not info_path.is_file():
            raise DatasetError(f"{self.root} is not an inril-robot dataset (no dataset.json)")
        try:
            self.info: dict[str, Any] = json.loads(info_path.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"{info_path} is corrupt: {e}") from e
        version = self.info.get("schema_version")
        if version != SCHEMA_VERSION:
            raise DatasetError(f"{self.root}: dataset schema_version {version!r}, this version reads {SCHEMA_VERSION}")
        self.contract = Contract.from_json_dict(self.info["contract"])
        self._episodes: list[Episode] | None = None

    @property
    def episodes(self) -> list[Episode]:
        if self._episodes is None:
            self._episodes = list(self._scan())
        return self._episodes

    def _scan(self) -> Iterator[Episode]:
        folder = self.root / "episodes"
        if not folder.is_dir():
            return
        for path in sorted(folder.iterdir()):
            match = EPISODE_DIR.match(path.name)
            if not match:
                continue
            meta_file = path / "zarr.json"
            try:
                meta = json.loads(meta_file.read_text())["attributes"]
            except (OSError, KeyError, json.JSONDecodeError) as e:
                raise DatasetError(f"committed episode {path} is unreadable: {e}") from e
            yield Episode(int(match.group(1)), path, meta)

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, i: int) -> Episode:
        return self.episodes[i]

    def episode(self, index: int) -> Episode:
        for ep in self.episodes:
            if ep.index == index:
                return ep
        raise DatasetError(f"{self.root} has no episode {index}; episodes: {[e.index for e in self.episodes]}")

    def verify(self, progress: Any = None) -> dict[int, list[str]]:
        """Episode index -> its problems, for every corrupt episode (empty: the whole dataset is as committed).
        `progress(done, total)` is called after each episode."""
        corrupt = {}
        for i, episode in enumerate(self.episodes):
            problems = episode.problems()
            if problems:
                corrupt[episode.index] = problems
            if progress is not None:
                progress(i + 1, len(self.episodes))
        return corrupt

    def require_intact(self, progress: Any = None) -> None:
        """Raise `DatasetError` naming every corrupt episode (and the first problem of each)."""
        corrupt = self.verify(progress)
        if corrupt:
            first = "; ".join(f"episode {i}: {p[0]}" for i, p in list(corrupt.items())[:3])
            raise DatasetError(
                f"{self.root}: {len(corrupt)} corrupt episode{'s' if len(corrupt) > 1 else ''} "
                f"({', '.join(map(str, corrupt))}): {first}"
            )

    @property
    def num_steps(self) -> int:
        return sum(e.length for e in self.episodes)

    @property
    def cameras(self) -> list[str]:
        return sorted(self.contract.cameras)

    def summary(self) -> dict[str, Any]:
        eps = self.episodes
        return {
            "path": str(self.root),
            "episodes": len(eps),
            "successes": sum(e.success for e in eps),
            "steps": sum(e.length for e in eps),
            "task": self.info.get("task"),
            "control_hz": self.info.get("control_hz"),
            "cameras": {k: list(v) for k, v in self.contract.cameras.items()},
            "observation_keys": sorted(self.contract.observations),
            "created": self.info.get("created"),
            "modified": self.info.get("modified"),
            "calibration": self.info.get("calibration"),
            "contract": self.contract.to_json_dict(),
        }


# ------------------------------------------------------------------------------------------------------ writing
class DatasetWriter:
    """The single writer of a dataset: creates it, or opens it to append after checking the contract."""

    def __init__(
        self,
        root: str | Path,
        contract: Contract,
        *,
        task: str,
        robot: dict[str, Any] | None = None,
        calibration: str | None = None,
        extra_info: dict[str, Any] | None = None,
    ) -> None:
        self.root = Path(root)
        self.contract = contract
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.root / ".lock", "a+")  # noqa: SIM115 - held for the writer's lifetime
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            lock = self.root / ".lock"
            raise DatasetError(f"{self.root} is being written by another process (lock: {lock})") from None
        try:
            self._open_or_create(task, robot, calibration, extra_info)
        except BaseException:
            self._release_lock()
            raise
        self.staging = self.root / ".staging"
        shutil.rmtree(self.staging, ignore_errors=True)  # partial episodes of a killed writer: never committed
        self.staging.mkdir()
        self._open: EpisodeWriter | None = None

    def _open_or_create(
        self, task: str, robot: dict[str, Any] | None, calibration: str | None, extra_info: dict[str, Any] | None
    ) -> None:
        if (self.root / "dataset.json").exists():
            existing = Dataset(self.root)
            if existing.info.get("task") != task:
                raise DatasetError(f"{self.root} holds task {existing.info.get('task')!r}, not {task!r}")
            existing.contract.require_match(self.contract, context=f"dataset {self.root}")
            self.info = existing.info
        else:
            self.info = {
                "schema_version": SCHEMA_VERSION,
                "format": "inril-robot episode store (zarr v3)",
                "task": task,
                "contract": self.contract.to_json_dict(),
                "control_hz": self.contract.control_hz,
                "robot": robot or {},
                "calibration": calibration,
                "control_codes": CONTROL_CODES,
                "created": _now(),
                "created_by": {"package": package_version(), "host": socket.gethostname()},
                **(extra_info or {}),
            }
            (self.root / "episodes").mkdir(exist_ok=True)
            self._touch()

    def _touch(self) -> None:
        self.info["modified"] = _now()
        atomic_write_json(self.root / "dataset.json", self.info)

    def next_index(self) -> int:
        indices = [int(m.group(1)) for p in (self.root / "episodes").iterdir() if (m := EPISODE_DIR.match(p.name))]
        return max(indices, default=-1) + 1

    def num_episodes(self) -> int:
        return sum(1 for p in (self.root / "episodes").iterdir() if EPISODE_DIR.match(p.name))

    def begin_episode(self, seed: int | None = None, notes: str = "") -> EpisodeWriter:
        if self._open is not None:
            raise DatasetError("an episode is already being recorded: commit or discard it first")
        index = self.next_index()
        path = self.staging / f"ep_{index:06d}.{uuid.uuid4().hex[:8]}"
        self._open = EpisodeWriter(self, index, path, seed=seed, notes=notes)
        return self._open

    def _finished(self, episode: EpisodeWriter) -> None:
        self._open = None

    def close(self) -> None:
        """Drop the open (uncommitted) episode, if any, and release the lock. Committed episodes stay."""
        if self._open is not None:
            self._open.discard()
        if not self._lock_file.closed:
            shutil.rmtree(self.root / ".staging", ignore_errors=True)
            self._release_lock()

    def _release_lock(self) -> None:
        if not self._lock_file.closed:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EpisodeWriter:
    """Buffers steps, appends them to the staging episode every FLUSH_EVERY steps, commits atomically."""

    def __init__(self, dataset: DatasetWriter, index: int, path: Path, seed: int | None, notes: str) -> None:
        self.dataset = dataset
        self.index = index
        self.path = path
        self.seed = seed
        self.notes = notes
        self.started = _now()
        self.length = 0
        self._buffer: dict[str, list[np.ndarray]] = {}
        self._group: Any = None
        self._done = False
        self._image_keys = {f"obs/{k}" for k, spec in dataset.contract.observations.items() if spec.dtype == "uint8"}

    def add_step(
        self,
        obs: dict[str, np.ndarray],
        action_proposed: np.ndarray,
        action_executed: np.ndarray,
        reward: float,
        done: bool,
        control: str,
        intervention: bool = False,
        wall_time: float = 0.0,
        state_time: float = 0.0,
        capture_times: dict[str, float] | None = None,
        robot_state: RobotState | None = None,
    ) -> None:
        """Record one step: the observation acted on, both actions, and the full robot state (for replays)."""
        if self._done:
            raise DatasetError(f"episode {self.index} is already committed or discarded")
        if control not in CONTROL_CODES:
            raise DatasetError(f"control {control!r} must be one of {sorted(CONTROL_CODES)}")
        self.dataset.contract.check_observation(obs)
        step: dict[str, np.ndarray] = {f"obs/{k}": np.asarray(obs[k]) for k in self.dataset.contract.observations}
        step["action/proposed"] = np.asarray(action_proposed, dtype=np.float64)
        step["action/executed"] = np.asarray(action_executed, dtype=np.float64)
        step["reward"] = np.asarray(reward, dtype=np.float32)
        step["done"] = np.asarray(done, dtype=bool)
        step["control"] = np.asarray(CONTROL_CODES[control], dtype=np.uint8)
        step["intervention"] = np.asarray(intervention, dtype=bool)
        step["time/wall"] = np.asarray(wall_time, dtype=np.float64)
        step["time/state"] = np.asarray(state_time, dtype=np.float64)
        if robot_state is not None:
            for name in STATE_FIELDS:
                step[f"state/{name}"] = np.asarray(getattr(robot_state, name), dtype=np.float64)
        for camera in self.dataset.contract.cameras:
            step[f"time/capture/{camera}"] = np.asarray((capture_times or {}).get(camera, np.nan), dtype=np.float64)
        for key, value in step.items():
            self._buffer.setdefault(key, []).append(value)
        self.length += 1
        if len(self._buffer["reward"]) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if not self._buffer or not self._buffer["reward"]:
            return
        if self._group is None:
            self._group = zarr.open_group(str(self.path), mode="w")
        for key, values in self._buffer.items():
            block = np.stack(values)
            if key not in self._group:
                image = key in self._image_keys
                chunk_steps = IMAGE_CHUNK_STEPS if image else 1024
                # images: zstd level 5 without shuffle (a no-op on bytes) compresses rendered frames 14x/12x
                # (front/wrist, 128 px) against 9.5x/10.5x at level 3, for ~1.3 ms per frame (docs/data.md)
                codec = (
                    BloscCodec(cname="zstd", clevel=5, shuffle="noshuffle")
                    if image
                    else BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")
                )
                self._group.create_array(
                    key,
                    shape=(0, *block.shape[1:]),
                    dtype=block.dtype,
                    chunks=(chunk_steps, *block.shape[1:]),
                    compressors=[codec],
                    fill_value=0,
                )
            self._group[key].append(block, axis=0)
        self._buffer = {}

    def commit(self, success: bool, notes: str | None = None, extra: dict[str, Any] | None = None) -> int:
        """Make the episode visible: checksums, fsync, one atomic rename. Returns its index."""
        if self._done:
            raise DatasetError(f"episode {self.index} is already committed or discarded")
        if self.length == 0:
            raise DatasetError(f"episode {self.index} has no steps; discard it instead")
        self.flush()
        checksums = {}

        def visit(group: Any, prefix: str) -> None:
            for name, member in group.members():
                key = f"{prefix}{name}"
                if isinstance(member, zarr.Group):
                    visit(member, f"{key}/")
                else:
                    checksums[key] = array_checksum(np.asarray(member[...]))

        visit(self._group, "")
        self._group.attrs.update(
            {
                "index": self.index,
                "success": bool(success),
                "task": self.dataset.info["task"],
                "length": self.length,
                "seed": self.seed,
                "notes": self.notes if notes is None else notes,
                "started": self.started,
                "ended": _now(),
                "checksums": checksums,
                **(extra or {}),
            }
        )
        fsync_tree(self.path)
        final = self.dataset.root / "episodes" / f"ep_{self.index:06d}"
        os.rename(self.path, final)
        fsync_dir(final.parent)
        self._done = True
        self.dataset._touch()
        self.dataset._finished(self)
        return self.index

    def discard(self) -> None:
        if self._done:
            return
        self._buffer = {}
        shutil.rmtree(self.path, ignore_errors=True)
        self._done = True
        self.dataset._finished(self)
