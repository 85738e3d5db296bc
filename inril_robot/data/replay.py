"""The replay log: every transition a robot executed, on disk for the robot's whole life (numpy only, no torch).

Layout::

    DIR/replay.json         format version, the observation and action specs (written once, atomically)
    DIR/seg_000000.log      append-only segments of records; a new segment every SEGMENT_BYTES
    DIR/.lock               held (flock) by the single writer

A record is ``n`` consecutive transitions of one robot's episode::

    b"IRRL" | u32 header length | u64 payload length | sha256(header + payload) (32 bytes) | header | payload

The header is JSON: robot id, the robot's episode index, the log's own episode id, ``n``, and one descriptor per
array (key, dtype, shape, codec, compressed byte count) in payload order. Arrays (leading dimension ``n``):

- ``obs/<key>`` ``(n + 1, *shape)``: the observations; transition ``i`` goes from ``obs[i]`` to ``obs[i + 1]``, so
  a next observation is stored once, not twice (images are half the bytes they would be as obs/next_obs pairs);
- ``action`` ``(n, *action_shape)`` float32: the chunk learned from, normalised (what an off-policy learner trains
  on; the policy server writes whole chunks of the policy's horizon): its executed steps, then the rest of the chunk
  the policy sampled (the steps it did not execute), or the last executed step repeated (an intervention);
  ``executed`` in raw contract units: the executed steps, the last one repeated (``steps`` says how many ran);
- ``reward`` float32 (the chunk's executed rewards summed), ``terminated`` (success or safety stop: no bootstrap),
  ``truncated`` (time limit, operator's failure verdict, stale frames: bootstrap), ``intervention`` (a human was
  in control), ``step`` int32 (the episode step the transition starts at), ``steps`` int16, ``policy_version`` int32.

Images (uint8) are compressed with Blosc-zstd level 5 without shuffle, the other arrays with Blosc-zstd level 3 with
byte shuffle: the codecs the episode store uses (docs/data.md).

Crash safety: a record is written with one `write`, flushed and fsync'd before `append` returns (a new segment's
directory entry is fsync'd too). A writer killed at any instant leaves whole records followed by at most one torn
record at the end of the last segment; `ReplayLog.read` stops there and says so (`torn_tail`), and the next writer
cuts the torn bytes off before appending. A bad record anywhere else is corruption, not a crash: `ReplayError`
naming the segment and offset. The writer appends per finished episode, and per `flush_every` transitions within a
long one, so a crash loses at most the open episode's last unflushed transitions.

`checksum` is sha256 over the sequence of record digests (each covers its header and payload): two logs with the
same checksum hold bit-identical transitions in the same order; `checksum(records=k)` covers the first k records,
so "the log before a crash is a prefix of the log after the resume" is one comparison.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np

from inril_robot.core.atomic import atomic_open, fsync_dir
from inril_robot.core.errors import InrilError

FORMAT_VERSION = 1
MAGIC = b"IRRL"
PREFIX = struct.Struct("<4sIQ32s")  # magic, header length, payload length, sha256
MAX_HEADER_BYTES = 1 << 20
MAX_PAYLOAD_BYTES = 1 << 34
SEGMENT_BYTES = 256 * 1024 * 1024
SEGMENT_NAME = "seg_{:06d}.log"
FLAGS = ("terminated", "truncated", "intervention")
_IMAGE_CODEC = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.NOSHUFFLE)
_ARRAY_CODEC = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE)


class ReplayError(RuntimeError, InrilError):
    """The replay log is missing, corrupt, locked by another writer, or does not fit the transitions."""


@dataclass(frozen=True)
class ReplaySpec:
    """What every transition holds: observation key -> (shape, dtype) and the action shape."""

    obs: dict[str, tuple[tuple[int, ...], str]]
    action_shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "obs": {k: {"shape": list(s), "dtype": d} for k, (s, d) in self.obs.items()},
            "action_shape": list(self.action_shape),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ReplaySpec:
        return cls({k: (tuple(v["shape"]), v["dtype"]) for k, v in d["obs"].items()}, tuple(d["action_shape"]))

    def arrays(self, n: int) -> dict[str, tuple[tuple[int, ...], str]]:
        """Every array of a record of `n` transitions: key -> (shape, dtype)."""
        out = {f"obs/{k}": ((n + 1, *s), d) for k, (s, d) in self.obs.items()}
        out["action"] = ((n, *self.action_shape), "float32")
        out["executed"] = ((n, *self.action_shape), "float32")
        out["reward"] = ((n,), "float32")
        for flag in FLAGS:
            out[flag] = ((n,), "bool")
        out["step"] = ((n,), "int32")
        out["steps"] = ((n,), "int16")
        out["policy_version"] = ((n,), "int32")
        return out


@dataclass
class ReplayRecord:
    robot: str
    robot_episode: int
    episode: int  # the log's own episode id (unique across robots and restarts)
    arrays: dict[str, np.ndarray]
    digest: bytes
    closed: bool  # the episode's last record

    @property
    def n(self) -> int:
        return len(self.arrays["reward"])

    def obs(self) -> dict[str, np.ndarray]:
        return {k[4:]: v[:-1] for k, v in self.arrays.items() if k.startswith("obs/")}

    def next_obs(self) -> dict[str, np.ndarray]:
        return {k[4:]: v[1:] for k, v in self.arrays.items() if k.startswith("obs/")}


@dataclass
class TornTail:
    segment: Path
    offset: int  # where the last whole record ends
    bytes: int  # what follows it
    reason: str

    def __str__(self) -> str:
        return (
            f"{self.segment.name}: {self.bytes} bytes after offset {self.offset} are a torn record ({self.reason}); "
            "the transitions before it are intact"
        )


@dataclass
class ReplaySummary:
    records: int = 0
    transitions: int = 0
    episodes: int = 0  # episodes with a closed (final) record
    interventions: int = 0
    bytes: int = 0  # on disk, whole records only
    checksum: str = hashlib.sha256().hexdigest()
    torn_tail: str | None = None
    robots: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _segments(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("seg_*.log") if p.is_file())


def _encode(spec: ReplaySpec, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    n = int(header["n"])
    descriptors, blobs = [], []
    for key, (shape, dtype) in spec.arrays(n).items():
        if key not in arrays:
            raise ReplayError(f"a replay record needs {key!r} ({dtype}{list(shape)})")
        a = np.ascontiguousarray(arrays[key])
        if a.shape != shape:
            raise ReplayError(f"replay record: {key!r} has shape {list(a.shape)}, the log's spec says {list(shape)}")
        a = a.astype(np.dtype(dtype).newbyteorder("<"), copy=False)
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ReplayError(f"replay record: {key!r} holds non-finite values")
        codec = "image" if a.dtype == np.uint8 else "array"
        blob = (_IMAGE_CODEC if codec == "image" else _ARRAY_CODEC).encode(a.tobytes())
        descriptors.append([key, a.dtype.str, list(shape), codec, len(blob)])
        blobs.append(bytes(blob))
    extra = sorted(set(arrays) - set(spec.arrays(n)))
    if extra:
        raise ReplayError(f"replay record: unexpected arrays {extra}")
    head = json.dumps({**header, "arrays": descriptors}, separators=(",", ":")).encode()
    payload = b"".join(blobs)
    digest = hashlib.sha256(head + payload).digest()
    return PREFIX.pack(MAGIC, len(head), len(payload), digest) + head + payload


def _decode(header: dict[str, Any], payload: bytes) -> dict[str, np.ndarray]:
    arrays, at = {}, 0
    for key, dtype, shape, _codec, nbytes in header["arrays"]:
        raw = _ARRAY_CODEC.decode(payload[at : at + nbytes])  # Blosc frames carry their own codec settings
        arrays[key] = np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape)
        at += nbytes
    return arrays


class ReplayLog:
    """Read access to a replay log (a writer may be appending: only whole records are read)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        info = self.root / "replay.json"
        if not info.is_file():
            raise ReplayError(f"{self.root} is not a replay log (no replay.json)")
        try:
            self.info: dict[str, Any] = json.loads(info.read_text())
        except json.JSONDecodeError as e:
            raise ReplayError(f"{info} is corrupt: {e}") from e
        if self.info.get("format_version") != FORMAT_VERSION:
            raise ReplayError(
                f"{self.root}: replay format_version {self.info.get('format_version')!r}, this version reads "
                f"{FORMAT_VERSION}"
            )
        self.spec = ReplaySpec.from_json(self.info["spec"])
        self.torn_tail: TornTail | None = None

    def scan(self, decode: bool = True) -> Iterator[tuple[ReplayRecord | None, dict[str, Any], int, bytes]]:
        """(record or None when not `decode`, header, record bytes, sha256) of every whole record, in order. Sets
        `torn_tail` when the last segment ends in a torn record; raises `ReplayError` for a bad record elsewhere."""
        self.torn_tail = None
        segments = _segments(self.root)
        for s, path in enumerate(segments):
            last = s == len(segments) - 1
            with open(path, "rb") as f:
                data = f.read()
            at = 0
            while at < len(data):
                problem, header, size, payload = self._check(data, at)
                if problem is not None:
                    if last:
                        self.torn_tail = TornTail(path, at, len(data) - at, problem)
                        return
                    raise ReplayError(f"{path} is corrupt at offset {at}: {problem} (not the log's last segment)")
                assert header is not None
                digest = data[at + 16 : at + 48]
                record = None
                if decode:
                    record = ReplayRecord(
                        header["robot"],
                        int(header["robot_episode"]),
                        int(header["episode"]),
                        _decode(header, payload),
                        digest,
                        bool(header["closed"]),
                    )
                yield record, header, size, digest
                at += size

    @staticmethod
    def _check(data: bytes, at: int) -> tuple[str | None, dict[str, Any] | None, int, bytes]:
        if len(data) - at < PREFIX.size:
            return f"{len(data) - at} bytes, shorter than a record prefix", None, 0, b""
        magic, head_len, payload_len, digest = PREFIX.unpack_from(data, at)
        if magic != MAGIC:
            return "no record magic", None, 0, b""
        if head_len > MAX_HEADER_BYTES or payload_len > MAX_PAYLOAD_BYTES:
            return "impossible lengths in the record prefix", None, 0, b""
        size = PREFIX.size + head_len + payload_len
        if at + size > len(data):
            return f"the record needs {size} bytes, {len(data) - at} are there", None, 0, b""
        body = data[at + PREFIX.size : at + size]
        if hashlib.sha256(body).digest() != digest:
            return "sha256 mismatch", None, 0, b""
        try:
            header = json.loads(body[:head_len])
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return f"unreadable header ({e})", None, 0, b""
        return None, header, size, body[head_len:]

    def records(self) -> Iterator[ReplayRecord]:
        for record, _, _, _ in self.scan():
            assert record is not None
            yield record

    def summary(self, records: int | None = None) -> ReplaySummary:
        """Counts and the checksum of the first `records` records (all: None), without decompressing anything."""
        s = ReplaySummary()
        chain = hashlib.sha256()
        robots: set[str] = set()
        for i, (_, header, size, digest) in enumerate(self.scan(decode=False)):
            if records is not None and i >= records:
                break
            s.records += 1
            s.transitions += int(header["n"])
            s.episodes += int(bool(header["closed"]))
            s.interventions += int(header.get("interventions", 0))
            s.bytes += size
            chain.update(digest)
            robots.add(header["robot"])
        s.checksum = chain.hexdigest()
        s.torn_tail = str(self.torn_tail) if self.torn_tail else None
        s.robots = sorted(robots)
        return s

    def count(self) -> int:
        return self.summary().transitions

    def checksum(self, records: int | None = None) -> str:
        return self.summary(records).checksum


class ReplayWriter:
    """The single writer of a replay log: creates it, or opens it to append (cutting off a torn tail first)."""

    def __init__(
        self, root: str | Path, spec: ReplaySpec, *, extra_info: dict[str, Any] | None = None, log: Any = None
    ) -> None:
        self.root = Path(root)
        self.spec = spec
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.root / ".lock", "a+")  # noqa: SIM115 - held for the writer's lifetime
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise ReplayError(
                f"{self.root} is being written by another process (lock: {self.root / '.lock'})"
            ) from None
        try:
            self._open(extra_info, log)
        except BaseException:
            self.close()
            raise

    def _open(self, extra_info: dict[str, Any] | None, log: Any) -> None:
        if (self.root / "replay.json").is_file():
            reader = ReplayLog(self.root)
            if reader.spec != self.spec:
                raise ReplayError(
                    f"{self.root} holds transitions of another shape: {reader.spec.to_json()}, not "
                    f"{self.spec.to_json()}"
                )
            summary = reader.summary()
            self.transitions, self.records = summary.transitions, summary.records
            self.next_episode = 1 + max((int(h["episode"]) for _, h, _, _ in reader.scan(decode=False)), default=-1)
            self.torn = reader.torn_tail
            if self.torn is not None:
                with open(self.torn.segment, "r+b") as f:
                    f.truncate(self.torn.offset)
                    os.fsync(f.fileno())
                if log is not None:
                    log(f"replay log {self.root}: cut off a torn tail ({self.torn})")
        else:
            with atomic_open(self.root / "replay.json", "w") as f:
                json.dump(
                    {
                        "format_version": FORMAT_VERSION,
                        "format": "inril-robot replay log",
                        "spec": self.spec.to_json(),
                        **(extra_info or {}),
                    },
                    f,
                    indent=2,
                )
            self.transitions = self.records = self.next_episode = 0
            self.torn = None
        segments = _segments(self.root)
        self.segment = segments[-1] if segments else self.root / SEGMENT_NAME.format(0)
        self._file = open(self.segment, "ab")  # noqa: SIM115 - closed in close()
        if not segments:
            fsync_dir(self.root)

    def new_episode(self) -> int:
        """A fresh log-wide episode id."""
        self.next_episode += 1
        return self.next_episode - 1

    def append(
        self,
        arrays: dict[str, np.ndarray],
        *,
        robot: str,
        robot_episode: int,
        episode: int,
        closed: bool,
    ) -> int:
        """Write one record (n transitions, see the module doc) durably; returns n."""
        n = len(arrays["reward"])
        if n < 1:
            raise ReplayError("a replay record holds at least one transition")
        header = {
            "robot": robot,
            "robot_episode": int(robot_episode),
            "episode": int(episode),
            "n": n,
            "closed": bool(closed),
            "interventions": int(np.count_nonzero(arrays["intervention"])),
        }
        blob = _encode(self.spec, header, arrays)
        if self._file.tell() > 0 and self._file.tell() + len(blob) > SEGMENT_BYTES:
            self._roll()
        self._file.write(blob)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.transitions += n
        self.records += 1
        return n

    def _roll(self) -> None:
        self._file.close()
        index = int(self.segment.stem.split("_")[1]) + 1
        self.segment = self.root / SEGMENT_NAME.format(index)
        self._file = open(self.segment, "ab")  # noqa: SIM115 - closed in close()
        fsync_dir(self.root)

    def close(self) -> None:
        if getattr(self, "_file", None) is not None and not self._file.closed:
            self._file.close()
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def __enter__(self) -> ReplayWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Step:
    """One executed transition as the server sees it (observations are whatever the learner reads, e.g. the
    policy's observation history per key)."""

    obs: dict[str, np.ndarray]
    action: np.ndarray  # normalised
    executed: np.ndarray  # raw contract units
    reward: float
    terminated: bool
    truncated: bool
    intervention: bool
    step: int
    steps: int
    policy_version: int
    next_obs: dict[str, np.ndarray]


class EpisodeChain:
    """Collects one robot episode's transitions into records: consecutive transitions share observations (the
    next observation of one is the observation of the next, compared by identity, then by value); a break in the
    chain (a chunk not served here) starts a new record. `take` hands out what is ready to append."""

    def __init__(self, robot: str, robot_episode: int, episode: int, flush_every: int = 256) -> None:
        self.robot, self.robot_episode, self.episode, self.flush_every = robot, robot_episode, episode, flush_every
        self.steps: list[Step] = []
        self.ready: list[dict[str, np.ndarray]] = []

    def add(self, step: Step) -> None:
        if self.steps and not _same(self.steps[-1].next_obs, step.obs):
            self._cut()
        self.steps.append(step)
        if len(self.steps) >= self.flush_every:
            self._cut()

    def _cut(self) -> None:
        if not self.steps:
            return
        steps, self.steps = self.steps, []
        arrays: dict[str, np.ndarray] = {
            f"obs/{k}": np.stack([s.obs[k] for s in steps] + [steps[-1].next_obs[k]]) for k in steps[0].obs
        }
        arrays["action"] = np.stack([s.action for s in steps]).astype(np.float32)
        arrays["executed"] = np.stack([s.executed for s in steps]).astype(np.float32)
        arrays["reward"] = np.array([s.reward for s in steps], np.float32)
        for flag in FLAGS:
            arrays[flag] = np.array([getattr(s, flag) for s in steps], bool)
        arrays["step"] = np.array([s.step for s in steps], np.int32)
        arrays["steps"] = np.array([s.steps for s in steps], np.int16)
        arrays["policy_version"] = np.array([s.policy_version for s in steps], np.int32)
        self.ready.append(arrays)

    def take(self, closing: bool = False) -> list[dict[str, np.ndarray]]:
        if closing:
            self._cut()
        ready, self.ready = self.ready, []
        return ready


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a is b or (a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a))


def load_arrays(root: str | Path) -> tuple[dict[str, np.ndarray], ReplaySummary]:
    """Every transition of a log as flat arrays: `obs/<k>`, `next_obs/<k>` and the per-transition fields (for an
    in-memory buffer to fill itself from on resume), with the summary of what was read."""
    log = ReplayLog(root)
    parts: dict[str, list[np.ndarray]] = {}
    for record in log.records():
        for k, v in record.obs().items():
            parts.setdefault(f"obs/{k}", []).append(v)
        for k, v in record.next_obs().items():
            parts.setdefault(f"next_obs/{k}", []).append(v)
        for k, v in record.arrays.items():
            if not k.startswith("obs/"):
                parts.setdefault(k, []).append(v)
    summary = log.summary()
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    if not arrays:
        arrays = {f"{p}/{k}": np.zeros((0, *s), d) for k, (s, d) in log.spec.obs.items() for p in ("obs", "next_obs")}
        arrays.update({k: np.zeros(s, d) for k, (s, d) in log.spec.arrays(0).items() if not k.startswith("obs/")})
    return arrays, summary
