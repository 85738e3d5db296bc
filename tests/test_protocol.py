"""The wire format: round trips of every message type, zero-copy blobs, and every way a message can be rejected."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from inril_robot.bridge import protocol as p
from inril_robot.bridge.security import SecurityError, check_bind, is_local


def _bytes(frames: list) -> list[bytes]:
    return [bytes(memoryview(f)) if not isinstance(f, bytes) else f for f in frames]


def test_observation_round_trip_keeps_arrays_exact_and_viewed_in_place() -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "obs/front_rgb": rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8),
        "obs/ee_pos": rng.standard_normal((2, 3)).astype(np.float32),
        "flag": np.array(True),
    }
    frames = _bytes(
        p.encode(p.Observation(episode=3, chunk=4, step=12), robot="arm-1", seq=7, t_capture=1.5, arrays=arrays)
    )
    msg = p.decode(frames)
    assert msg.type == "observation" and msg.body == p.Observation(episode=3, chunk=4, step=12)
    assert (msg.header.robot, msg.header.seq, msg.header.t_capture) == ("arm-1", 7, 1.5)
    for key, value in arrays.items():
        assert msg.arrays[key].dtype == value.dtype and np.array_equal(msg.arrays[key], value)
    assert np.shares_memory(msg.arrays["obs/front_rgb"], np.frombuffer(frames[1], np.uint8))  # no copy
    assert not msg.arrays["obs/front_rgb"].flags.writeable


@pytest.mark.parametrize(
    "body",
    [
        p.Hello(contract={"action_dim": 7}, task="reach", config_hash="ab", robot_kind="sim"),
        p.Welcome(
            session="s",
            policy_version=2,
            obs_keys=["ee_pos"],
            n_obs_steps=1,
            horizon=4,
            act_steps=2,
            action_dim=7,
            control_hz=10.0,
            learner="async",
            server_version="1",
        ),
        p.Refused(code="contract", reason="control_hz differs", field="control_hz"),
        p.Action(obs_seq=1, episode=0, chunk=0, policy_version=3, infer_ms=0.2),
        p.Transition(
            episode=0,
            chunk=1,
            policy_version=0,
            success=False,
            end="safety_stop",
            intervention=True,
            control="human",
            safety_events=2,
        ),
        p.EpisodeEnd(episode=0, steps=20, success=True, end="success", interventions=1),
        p.Heartbeat(state="reset"),
        p.Stats(values={"hz": 9.9, "robots": "a,b", "failure": None}),
        p.Error(code="malformed", reason="x", ref_seq=4),
    ],
)
def test_every_message_type_round_trips(body: msgspec.Struct) -> None:
    assert p.decode(_bytes(p.encode(body, robot="r", seq=1))).body == body


def _header(**fields: object) -> bytes:
    base = {
        "v": p.WIRE_VERSION,
        "type": "heartbeat",
        "robot": "r",
        "seq": 1,
        "t_capture": 0.0,
        "t_send": 0.0,
        "blobs": [],
        "body": {},
    }
    return msgspec.msgpack.encode({**base, **fields})


@pytest.mark.parametrize(
    ("frames", "code", "text"),
    [
        ([], "malformed", "empty"),
        ([b"\xc1garbage"], "malformed", "header"),
        ([b"x" * 70_000], "oversized", "header"),
        ([_header(v=99)], "schema", "wire version 99"),
        ([msgspec.msgpack.encode({"v": 3, "type": "hello", "whatever": 1})], "schema", "wire version 3"),
        ([_header(type="teleport")], "unknown_type", "teleport"),
        ([_header(robot="")], "malformed", "header"),
        ([_header(robot="a b/c")], "malformed", "header"),
        ([_header(seq=-1)], "malformed", "header"),
        ([_header(type="observation", body={"episode": -1, "chunk": 0, "step": 0})], "malformed", "observation body"),
        ([_header(type="observation", body={"episode": 0})], "malformed", "observation body"),
        ([_header(blobs=[{"name": "a", "dtype": "uint8", "shape": [2]}])], "malformed", "describes 1 blobs"),
        ([_header(blobs=[{"name": "a", "dtype": "uint8", "shape": [3]}]), b"ab"], "malformed", "needs 3"),
        ([_header(blobs=[{"name": "a", "dtype": "object", "shape": [1]}]), b"a"], "malformed", "dtype"),
        ([_header(blobs=[{"name": "a", "dtype": "uint8", "shape": [-1]}]), b""], "malformed", "shape"),
        ([_header(blobs=[{"name": "a", "dtype": "uint8", "shape": [1] * 9}]), b"a"], "oversized", "dimensions"),
        ([_header(blobs=[{"name": "a", "dtype": "uint8", "shape": [2**31, 2**31, 0]}]), b""], "oversized", "exceeds"),
        ([_header(blobs=[{"name": "a", "dtype": "float64", "shape": [2**40, 2**40]}]), b""], "oversized", "exceeds"),
        ([_header(blobs=[{"name": "a", "dtype": "uint8", "shape": [1]}] * 2), b"a", b"b"], "malformed", "repeat"),
    ],
)
def test_malformed_messages_are_rejected_with_a_code(frames: list[bytes], code: str, text: str) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.decode(frames)
    assert info.value.code == code and text in info.value.reason


def test_limits_bound_the_whole_message() -> None:
    limits = p.Limits(max_message_bytes=1000)
    frames = _bytes(p.encode(p.Heartbeat(), robot="r", seq=1, arrays={"a": np.zeros(2000, np.uint8)}))
    with pytest.raises(p.ProtocolError, match="oversized"):
        p.decode(frames, limits)


def test_only_loopback_binds_without_keys() -> None:
    for endpoint in ("tcp://127.0.0.1:5555", "tcp://localhost:1", "tcp://[::1]:5555", "ipc:///tmp/x.sock"):
        assert is_local(endpoint), endpoint
        check_bind(endpoint, None)
    for endpoint in ("tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://192.168.1.4:5555", "tcp://eth0:5555"):
        assert not is_local(endpoint), endpoint
        with pytest.raises(SecurityError, match="CurveZMQ"):
            check_bind(endpoint, None)
