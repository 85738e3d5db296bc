"""A tiny TensorBoard scalar writer (and reader) that needs neither tensorboard nor protobuf.

An event file is a sequence of TFRecords, each holding one serialised `tensorflow.Event` protobuf:

    record  = uint64 length (LE) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)
    Event   = { 1: wall_time (double), 2: step (int64), 3: file_version (string), 5: summary (Summary) }
    Summary = { 1: value (repeated Value) }
    Value   = { 1: tag (string), 2: simple_value (float) }

The first record of a file carries `file_version = "brain.Event:2"`. Files are named
`events.out.tfevents.<unix time>.<host>` so TensorBoard finds them; a resumed run adds a new file to the same folder.
`tensorboard --logdir runs` (installed with the package) shows them.

Weights & Biases (optional extra `inril-robot[wandb]`): with `INRIL_WANDB=<project>` in the environment every writer
also logs its scalars to a wandb run named after the run folder (its `run.yaml` as the config, the step as the x
axis); `WANDB_MODE=offline` keeps the run on disk (`wandb sync` uploads it later).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

FILE_VERSION = "brain.Event:2"
_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF

try:  # zarr's numcodecs brings google-crc32c (a C implementation)
    import google_crc32c

    def crc32c(data: bytes) -> int:
        return int(google_crc32c.value(data))

except ImportError:  # pragma: no cover - a pure-Python fallback, fine for a few scalars per second
    _TABLE = []
    for _i in range(256):
        _c = _i
        for _ in range(8):
            _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
        _TABLE.append(_c)

    def crc32c(data: bytes) -> int:
        crc = _U32
        for byte in data:
            crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        return crc ^ _U32


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32


# ------------------------------------------------------------------------------------------------ protobuf encoding
def _varint(value: int) -> bytes:
    value &= _U64  # negative int64 values are encoded as their 64-bit two's complement (10 bytes)
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field_number: int, wire_type: int) -> bytes:
    return _varint((field_number << 3) | wire_type)


def _length_delimited(field_number: int, payload: bytes) -> bytes:
    return _key(field_number, 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int, *, file_version: str | None = None,
                 scalars: dict[str, float] | None = None) -> bytes:
    """One serialised Event: wall time, step, and either the file version or a summary of scalar values."""
    out = _key(1, 1) + struct.pack("<d", wall_time) + _key(2, 0) + _varint(int(step))
    if file_version is not None:
        out += _length_delimited(3, file_version.encode())
    if scalars:
        values = b"".join(
            _length_delimited(1, _length_delimited(1, tag.encode()) + _key(2, 5) + struct.pack("<f", float(value)))
            for tag, value in scalars.items()
        )
        out += _length_delimited(5, values)
    return out


def frame_record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


# -------------------------------------------------------------------------------------------------------- writer
class TBWriter:
    """`add_scalar(tag, value, step)`; records are flushed every `flush_every` events and on `flush()`/`close()`."""

    def __init__(self, logdir: str | Path, flush_every: int = 20) -> None:
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        name = f"events.out.tfevents.{int(now)}.{socket.gethostname()}"
        path = self.logdir / name
        n = 1
        while path.exists():  # two writers in the same second: keep both files
            path = self.logdir / f"{name}.{n}"
            n += 1
        self.path = path
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - held for the writer's lifetime
        self._pending = 0
        self.flush_every = flush_every
        self._write(encode_event(now, 0, file_version=FILE_VERSION))
        self.flush()
        self._wandb = start_wandb(self.logdir)

    def _write(self, data: bytes) -> None:
        self._file.write(frame_record(data))
        self._pending += 1
        if self._pending >= self.flush_every:
            self.flush()

    def add_scalar(self, tag: str, value: float, step: int, wall_time: float | None = None) -> None:
        self.add_scalars({tag: value}, step, wall_time)

    def add_scalars(self, scalars: dict[str, float], step: int, wall_time: float | None = None) -> None:
        """Several tags at one step, in one event."""
        if scalars:
            self._write(encode_event(time.time() if wall_time is None else wall_time, step, scalars=scalars))
            if self._wandb is not None:
                self._wandb.log({**scalars, "step": step})

    def flush(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._pending = 0

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> TBWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_wandb(logdir: Path) -> Any:
    """A wandb run mirroring this writer when `INRIL_WANDB` names a project, else None."""
    project = os.environ.get("INRIL_WANDB")
    if not project:
        return None
    try:
        import wandb
    except ImportError as e:
        raise RuntimeError("INRIL_WANDB is set but wandb is not installed: pip install 'inril-robot[wandb]'") from e
    config: dict[str, Any] = {}
    if (logdir / "run.yaml").is_file():
        import yaml

        config = yaml.safe_load((logdir / "run.yaml").read_text()) or {}
    run = wandb.init(project=project, name=logdir.name, dir=os.environ.get("WANDB_DIR", str(logdir)), config=config,
                     reinit="create_new")
    run.define_metric("step")
    run.define_metric("*", step_metric="step")
    return run


# -------------------------------------------------------------------------------------------------------- reader
@dataclass
class Event:
    wall_time: float = 0.0
    step: int = 0
    file_version: str | None = None
    scalars: dict[str, float] = field(default_factory=dict)


class CorruptEventFile(ValueError):
    """A record's length or checksum does not match: the file is truncated or damaged."""


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of every field of a serialised message."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
            yield number, wire, value
        elif wire == 1:
            yield number, wire, buf[pos:pos + 8]
            pos += 8
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            yield number, wire, buf[pos:pos + size]
            pos += size
        elif wire == 5:
            yield number, wire, buf[pos:pos + 4]
            pos += 4
        else:
            raise CorruptEventFile(f"unsupported protobuf wire type {wire}")


def decode_event(data: bytes) -> Event:
    event = Event()
    for number, _, value in _fields(data):
        if number == 1:
            event.wall_time = struct.unpack("<d", value)[0]  # type: ignore[arg-type]
        elif number == 2:
            step = int(value)  # type: ignore[arg-type]
            event.step = step - (1 << 64) if step >= 1 << 63 else step
        elif number == 3:
            event.file_version = bytes(value).decode()  # type: ignore[arg-type]
        elif number == 5:
            for v_number, _, v_value in _fields(value):  # type: ignore[arg-type]
                if v_number != 1:
                    continue
                tag, simple = "", float("nan")
                for f_number, _, f_value in _fields(v_value):  # type: ignore[arg-type]
                    if f_number == 1:
                        tag = bytes(f_value).decode()  # type: ignore[arg-type]
                    elif f_number == 2:
                        simple = struct.unpack("<f", f_value)[0]  # type: ignore[arg-type]
                event.scalars[tag] = simple
    return event


def read_events(path: str | Path) -> Iterator[Event]:
    """Every event of a file, checking both checksums of every record."""
    data = Path(path).read_bytes()
    pos = 0
    while pos < len(data):
        if pos + 12 > len(data):
            raise CorruptEventFile(f"{path}: truncated record header at byte {pos}")
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if header_crc != masked_crc32c(header):
            raise CorruptEventFile(f"{path}: bad length checksum at byte {pos}")
        body = data[pos + 12:pos + 12 + length]
        footer = data[pos + 12 + length:pos + 16 + length]
        if len(body) != length or len(footer) != 4:
            raise CorruptEventFile(f"{path}: truncated record at byte {pos}")
        if struct.unpack("<I", footer)[0] != masked_crc32c(body):
            raise CorruptEventFile(f"{path}: bad data checksum at byte {pos}")
        yield decode_event(body)
        pos += 16 + length


def read_scalars(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value), ...] over every event file in `logdir`, in file then record order."""
    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(logdir).glob("events.out.tfevents.*")):
        for event in read_events(path):
            for tag, value in event.scalars.items():
                out.setdefault(tag, []).append((event.step, value))
    return out
