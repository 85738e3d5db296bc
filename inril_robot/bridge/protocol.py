"""The wire format between robot agents and the policy server (docs/protocol.md is the language-neutral spec).

A message is one multipart ZMQ message ``[header, blob_0, ..., blob_{n-1}]``:

- ``header``: a msgpack map (`Header`): wire version ``v``, message ``type``, ``robot`` id, ``seq``, ``t_capture``,
  ``t_send``, one descriptor per blob (``name``, ``dtype``, ``shape``) and the type's ``body`` (its own msgpack map,
  embedded as a msgpack value).
- ``blob_i``: the raw bytes of array i, C order, little-endian, exactly ``prod(shape) * itemsize`` bytes. Arrays are
  handed to ZMQ without copying on send and viewed in place (read-only) on receive.

No pickle anywhere: the header decodes into typed structs, blobs into numpy views of an allow-listed dtype.
`decode` raises `ProtocolError` (with a `code` the server counts and answers with) for anything malformed,
oversized or of an unknown version or type; it never trusts a length it has not checked.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from inril_robot.core.errors import InrilError

WIRE_VERSION = 2  # 2: `transition.end` / `episode_end.end` (why the episode ended) replace terminated/truncated;
# `action.run_over`
# older versions whose `refused` (header and body) this version still writes, so an old peer reads why it is refused
REFUSABLE_VERSIONS = (1,)
DTYPES = ("uint8", "int32", "int64", "float32", "float64", "bool")
RobotId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Text = Annotated[str, msgspec.Meta(max_length=4096)]
ErrorCode = Literal[
    "malformed",
    "oversized",
    "schema",
    "unknown_type",
    "not_welcomed",
    "bad_observation",
    "bad_transition",
    "rate_limited",
    "id_in_use",
    "internal",
]
RefusalCode = Literal["schema", "contract", "task", "identity"]
# Why an episode ended, decided by the robot. Terminal (the return ends there, no bootstrap): the task's success, the
# operator's success verdict, a safety stop (the arm was stopped: a failure the policy caused, as in simulation).
# Cut short (bootstrapped from the final observation): the time limit, the operator's failure verdict (the operator
# ends an attempt, the state is not absorbing), camera frames that stayed stale (not the policy's doing).
EpisodeEndReason = Literal[
    "success", "operator_success", "safety_stop", "time_limit", "operator_failure", "stale_frames"
]
EndReason = Literal["none", EpisodeEndReason]  # "none": the episode goes on after this chunk
TERMINAL_ENDS: frozenset[str] = frozenset({"success", "operator_success", "safety_stop"})


def is_terminal(end: str) -> bool:
    """The episode ended in an absorbing state: its last transition is not bootstrapped."""
    return end in TERMINAL_ENDS


@dataclass(frozen=True)
class Limits:
    """What the server accepts; anything beyond is rejected with an "oversized" error."""

    max_header_bytes: int = 64 * 1024
    max_blobs: int = 64
    max_ndim: int = 8
    max_blob_bytes: int = 32 * 1024 * 1024
    max_message_bytes: int = 64 * 1024 * 1024


DEFAULT_LIMITS = Limits()


class ProtocolError(ValueError, InrilError):
    """A message that does not follow the protocol. `code` is what the error reply carries; `version`: the wire
    version the message was written in, when it is another one than ours."""

    def __init__(self, code: ErrorCode, reason: str, msg_type: str = "", version: int | None = None) -> None:
        self.code, self.reason, self.msg_type, self.version = code, reason, msg_type, version
        super().__init__(f"{code}: {reason}")


# ---------------------------------------------------------------------------------------------------- header
class Blob(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    dtype: str
    shape: list[int]


class Header(msgspec.Struct, forbid_unknown_fields=True):
    v: int
    type: str
    robot: RobotId
    seq: Annotated[int, msgspec.Meta(ge=0)]
    t_capture: float
    t_send: float
    blobs: list[Blob]
    body: msgspec.Raw


# ------------------------------------------------------------------------------------------------------ bodies
class Hello(msgspec.Struct, forbid_unknown_fields=True):
    """agent -> server, first message of a connection."""

    contract: dict[str, Any]  # inril_robot.core.contract.Contract.to_json_dict() of the robot's env
    task: Annotated[str, msgspec.Meta(max_length=64)]
    config_hash: Annotated[str, msgspec.Meta(max_length=128)]  # sha256 of the agent's run configuration
    robot_kind: Annotated[str, msgspec.Meta(max_length=32)]
    agent_version: Annotated[str, msgspec.Meta(max_length=64)] = "unknown"


class ObsBlob(msgspec.Struct, forbid_unknown_fields=True):
    """How one `obs/<key>` blob must look: dtype, shape (n_obs_steps, *contract shape), value range (None: any
    finite value; uint8 images are never range-checked)."""

    dtype: str
    shape: list[int]
    range: list[float] | None = None


class Welcome(msgspec.Struct, forbid_unknown_fields=True):
    """server -> agent: the handshake succeeded; what the policy reads and how it chunks."""

    session: str
    policy_version: int
    obs_keys: list[str]
    n_obs_steps: int
    horizon: int
    act_steps: int
    action_dim: int
    control_hz: float
    learner: Literal["sync", "async", "off"]
    server_version: str
    observations: dict[str, ObsBlob] = {}  # "obs/<key>" -> what the blob must be
    reward_range: list[float] | None = None  # [low, high] of each step's reward in a transition
    ref_seq: int = -1  # the hello's seq


class Refused(msgspec.Struct, forbid_unknown_fields=True):
    """server -> agent: the handshake failed. `field` names the mismatching contract field, when there is one."""

    code: RefusalCode
    reason: Text
    field: str | None = None
    ref_seq: int = -1  # the hello's seq (-1 when its header could not be read: another wire version)


class Observation(msgspec.Struct, forbid_unknown_fields=True):
    """agent -> server: asks for one action chunk. Blobs ``obs/<key>``: the history (n_obs_steps, *shape)."""

    episode: Annotated[int, msgspec.Meta(ge=0)]
    chunk: Annotated[int, msgspec.Meta(ge=0)]  # index of the chunk within the episode (0: the episode's first)
    step: Annotated[int, msgspec.Meta(ge=0)]  # executed control steps of the episode so far


class Action(msgspec.Struct, forbid_unknown_fields=True):
    """server -> agent: blob ``actions`` (act_steps, action_dim) float64, raw contract units."""

    obs_seq: int  # the seq of the observation this answers
    episode: int
    chunk: int
    policy_version: int
    infer_ms: float  # server-side time of the batched inference this chunk came from
    run_over: bool = False  # the learner spent its env-step budget: the agent ends the run after this episode


class Transition(msgspec.Struct, forbid_unknown_fields=True):
    """agent -> server, after executing a chunk. Blobs ``executed`` (k, A) float64 (after the safety envelope) and
    ``rewards`` (k,) float32."""

    episode: Annotated[int, msgspec.Meta(ge=0)]
    chunk: Annotated[int, msgspec.Meta(ge=0)]
    policy_version: int
    success: bool
    end: EndReason  # "none" mid-episode; else why the episode ended with this chunk (terminal or cut short)
    intervention: bool  # a human (teleop) was in control for this chunk: its actions are not the policy's
    control: Literal["policy", "human", "scripted", "none"]
    safety_events: Annotated[int, msgspec.Meta(ge=0)]


class EpisodeEnd(msgspec.Struct, forbid_unknown_fields=True):
    """agent -> server: the episode ended. Blobs ``obs/<key>``: the final observation history (bootstrap)."""

    episode: Annotated[int, msgspec.Meta(ge=0)]
    steps: Annotated[int, msgspec.Meta(ge=0)]
    success: bool
    end: EpisodeEndReason
    interventions: Annotated[int, msgspec.Meta(ge=0)]
    reason: Text = ""


class Heartbeat(msgspec.Struct, forbid_unknown_fields=True):
    """Either way. The agent sends one when idle (reset, operator prompt); the server answers with its own."""

    state: Annotated[str, msgspec.Meta(max_length=64)] = ""
    policy_version: int = -1
    ref_seq: int = -1  # server -> agent: the seq of the heartbeat answered


class Stats(msgspec.Struct, forbid_unknown_fields=True):
    """agent -> server: its own figures (logged); server -> agent: the server's figures."""

    values: Annotated[
        dict[Annotated[str, msgspec.Meta(max_length=64)], float | int | str | None], msgspec.Meta(max_length=256)
    ]
    ref_seq: int = -1  # server -> agent: the seq of the stats request answered


class Error(msgspec.Struct, forbid_unknown_fields=True):
    """server -> agent: a message was rejected (the connection stays up)."""

    code: ErrorCode
    reason: Text
    ref_seq: int = -1


BODIES: dict[str, type[msgspec.Struct]] = {
    "hello": Hello,
    "welcome": Welcome,
    "refused": Refused,
    "observation": Observation,
    "action": Action,
    "transition": Transition,
    "episode_end": EpisodeEnd,
    "heartbeat": Heartbeat,
    "stats": Stats,
    "error": Error,
}
TYPE_OF = {cls: name for name, cls in BODIES.items()}

_ENCODER = msgspec.msgpack.Encoder()
_HEADER_DECODER = msgspec.msgpack.Decoder(Header)
_BODY_DECODERS = {name: msgspec.msgpack.Decoder(cls) for name, cls in BODIES.items()}


@dataclass
class Message:
    header: Header
    body: Any
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return self.header.type


# ----------------------------------------------------------------------------------------------------- encode
def encode(
    body: msgspec.Struct,
    *,
    robot: str,
    seq: int,
    t_capture: float = 0.0,
    arrays: dict[str, np.ndarray] | None = None,
    version: int = WIRE_VERSION,
) -> list[Any]:
    """Frames of one message: the header bytes, then each array as a buffer (send with ``copy=False``). `version`:
    another wire version only for a `refused` to a peer of a version in `REFUSABLE_VERSIONS`."""
    if version != WIRE_VERSION and not (isinstance(body, Refused) and version in REFUSABLE_VERSIONS):
        raise ValueError(f"this build writes wire version {WIRE_VERSION} (and refusals in {REFUSABLE_VERSIONS})")
    blobs: list[Blob] = []
    frames: list[Any] = []
    for name, value in (arrays or {}).items():
        a = np.asarray(value)
        if a.dtype.name not in DTYPES:
            raise ValueError(f"blob {name!r}: dtype {a.dtype} is not one of {DTYPES}")
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        if not a.flags.c_contiguous:  # (np.ascontiguousarray would also turn a 0-d array into 1-d)
            a = np.ascontiguousarray(a)
        blobs.append(Blob(name, a.dtype.name, list(a.shape)))
        frames.append(memoryview(a).cast("B") if a.ndim else a.tobytes())
    header = Header(
        v=version,
        type=TYPE_OF[type(body)],
        robot=robot,
        seq=seq,
        t_capture=float(t_capture),
        t_send=time.time(),
        blobs=blobs,
        body=msgspec.Raw(_ENCODER.encode(body)),
    )
    return [_ENCODER.encode(header), *frames]


# ----------------------------------------------------------------------------------------------------- decode
def _view(frame: Any) -> memoryview:
    buffer = getattr(frame, "buffer", None)  # zmq.Frame (copy=False receive)
    return buffer if buffer is not None else memoryview(frame)


def decode(frames: list[Any], limits: Limits = DEFAULT_LIMITS) -> Message:
    """Check and decode one received message (frames without the ROUTER identity). Raises `ProtocolError`."""
    if not frames:
        raise ProtocolError("malformed", "empty message")
    views = [_view(f) for f in frames]
    total = sum(v.nbytes for v in views)
    if total > limits.max_message_bytes:
        raise ProtocolError("oversized", f"message of {total} bytes exceeds {limits.max_message_bytes}")
    if views[0].nbytes > limits.max_header_bytes:
        raise ProtocolError("oversized", f"header of {views[0].nbytes} bytes exceeds {limits.max_header_bytes}")
    try:
        header = _HEADER_DECODER.decode(views[0])
    except RecursionError:
        raise ProtocolError("malformed", "header: nested too deeply") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        probe = _probe_version(views[0])  # another version's header may not fit ours: say so, not "malformed"
        if probe is not None and probe.v != WIRE_VERSION:
            raise ProtocolError("schema", _version_reason(probe.v), probe.type, probe.v) from None
        raise ProtocolError("malformed", f"header: {e}") from None
    if header.v != WIRE_VERSION:
        raise ProtocolError("schema", _version_reason(header.v), header.type, header.v)
    decoder = _BODY_DECODERS.get(header.type)
    if decoder is None:
        raise ProtocolError("unknown_type", f"message type {header.type!r}; known: {', '.join(BODIES)}")
    try:
        body = decoder.decode(header.body)
    except RecursionError:
        raise ProtocolError("malformed", f"{header.type} body: nested too deeply") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ProtocolError("malformed", f"{header.type} body: {e}") from None
    if len(header.blobs) > limits.max_blobs:
        raise ProtocolError("oversized", f"{len(header.blobs)} blobs exceed {limits.max_blobs}")
    if len(header.blobs) != len(views) - 1:
        raise ProtocolError(
            "malformed", f"header describes {len(header.blobs)} blobs, the message carries {len(views) - 1}"
        )
    arrays: dict[str, np.ndarray] = {}
    for spec, view in zip(header.blobs, views[1:], strict=True):
        arrays[spec.name] = _blob_array(spec, view, limits)
    if len(arrays) != len(header.blobs):
        raise ProtocolError("malformed", "blob names repeat")
    return Message(header, body, arrays)


def _version_reason(version: int) -> str:
    return f"wire version {version}, this peer speaks {WIRE_VERSION}" + (
        " (version 2 says why an episode ended: update the robot agent)" if version == 1 else ""
    )


class _VersionProbe(msgspec.Struct):
    """The two header fields every wire version keeps: enough to answer a version mismatch."""

    v: int
    type: str = ""


def _probe_version(buffer: memoryview) -> _VersionProbe | None:
    try:
        return msgspec.msgpack.decode(buffer, type=_VersionProbe)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _blob_array(spec: Blob, view: memoryview, limits: Limits) -> np.ndarray:
    if spec.dtype not in DTYPES:
        raise ProtocolError("malformed", f"blob {spec.name!r}: dtype {spec.dtype!r} is not one of {DTYPES}")
    if len(spec.shape) > limits.max_ndim:
        raise ProtocolError("oversized", f"blob {spec.name!r}: {len(spec.shape)} dimensions exceed {limits.max_ndim}")
    if any(d < 0 for d in spec.shape):
        raise ProtocolError("malformed", f"blob {spec.name!r}: shape {spec.shape} has a negative dimension")
    dtype = np.dtype(spec.dtype).newbyteorder("<")
    expected = math.prod(spec.shape) * dtype.itemsize  # Python ints: no overflow
    if expected > limits.max_blob_bytes or max(spec.shape, default=0) * dtype.itemsize > limits.max_blob_bytes:
        raise ProtocolError("oversized", f"blob {spec.name!r} of {expected} bytes exceeds {limits.max_blob_bytes}")
    if view.nbytes != expected:
        raise ProtocolError(
            "malformed", f"blob {spec.name!r}: {view.nbytes} bytes, {spec.dtype}{spec.shape} needs {expected}"
        )
    return np.frombuffer(view, dtype=dtype).reshape(spec.shape)


def unprovided_reason(keys: list[str]) -> str:
    """The refusal of a policy that reads observations the robot cannot provide (e.g. a state policy offered to a
    real arm with no source of object poses)."""
    return (
        f"the policy reads observations this robot cannot provide: {', '.join(keys)} "
        "(a state policy needs a source of object poses on the robot, e.g. fiducial markers; or serve an image policy)"
    )


def error_frames(code: ErrorCode, reason: str, ref_seq: int = -1, seq: int = 0) -> list[Any]:
    return encode(Error(code=code, reason=reason[:4000], ref_seq=ref_seq), robot="server", seq=seq)
