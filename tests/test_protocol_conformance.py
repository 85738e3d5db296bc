"""docs/protocol.md is enough to write a client: its contract example is the reach contract, and every conformance
example in it, sent as raw frames built from the document alone (msgpack + the blob rules), gets the reply the
document states from a real server on TCP loopback."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import zmq

from inril_robot.bridge import protocol as p
from inril_robot.bridge.learning import ServerLearner
from inril_robot.config import load_config
from inril_robot.core.contract import Contract
from inril_robot.learning.pretrain import run_contract
from tests.test_bridge import served

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def blocks(tag: str) -> list[Any]:
    return [json.loads(b) for b in re.findall(rf"```json {tag}\n(.*?)```", DOC.read_text(), re.S)]


def test_the_documented_contract_is_the_reach_contract() -> None:
    (documented,) = blocks("contract")
    assert Contract.model_validate(documented) == run_contract(load_config(robot="sim", task="reach"))
    assert set(documented) == set(Contract.model_fields)  # the table and the example name every field


def _number(v: Any) -> Any:
    return [_number(x) for x in v] if isinstance(v, list) else float(v) if isinstance(v, str) else v


def frames_for(step: dict[str, Any], contract: dict[str, Any]) -> list[bytes]:
    """What a client written from the document sends: a msgpack header, then each blob's little-endian bytes."""
    if "raw_hex" in step:
        return [bytes.fromhex(h) for h in step["raw_hex"]]
    header = {"v": p.WIRE_VERSION, "t_capture": 0.0, "t_send": 0.0, **step["send"]}
    body = header["body"]
    if body.get("contract") == "$CONTRACT":
        header["body"] = {**body, "contract": contract}
    blobs = header.pop("blobs")
    header["blobs"] = [{k: b[k] for k in ("name", "dtype", "shape")} for b in blobs]
    data = [
        np.asarray(_number(b["values"]), dtype=np.dtype(b["dtype"]).newbyteorder("<")).reshape(b["shape"])
        for b in blobs
    ]
    return [msgspec.msgpack.encode(header), *[a.tobytes() for a in data]]


def reply(sock: zmq.Socket, timeout_s: float) -> tuple[dict[str, Any], dict[str, Any], list[bytes]] | None:
    if not sock.poll(int(timeout_s * 1000)):
        return None
    frames = sock.recv_multipart()
    header = msgspec.msgpack.decode(frames[0])
    return header, header["body"], frames[1:]


def check(step: dict[str, Any], got: Any) -> None:
    expect = step["expect"]
    if expect is None:
        assert got is None, f"no reply expected, got {got[0]['type']} {got[1]}"
        return
    assert got is not None, f"no reply to {step.get('send', step.get('raw_hex'))}"
    header, body, frames = got
    assert header["type"] == expect["type"], (header["type"], body)
    assert header["v"] == expect.get("v", p.WIRE_VERSION) and header["robot"] == "server"
    for key, value in expect.get("body", {}).items():
        assert body[key] == value, (key, body[key], value)
    if "reason_contains" in expect:
        assert expect["reason_contains"] in body["reason"], body["reason"]
    for key, value in expect.get("values", {}).items():
        assert body["values"][key] == value, (key, body["values"])
    for blob, frame in zip(header["blobs"], frames, strict=True):  # the blob rules, read back
        assert len(frame) == int(np.prod(blob["shape"])) * np.dtype(blob["dtype"]).itemsize
        want = expect.get("arrays", {}).get(blob["name"])
        if want is not None:
            assert (blob["dtype"], blob["shape"]) == (want["dtype"], want["shape"])
            assert np.isfinite(np.frombuffer(frame, blob["dtype"])).all()
    assert set(expect.get("arrays", {})) == {b["name"] for b in header["blobs"]}


@pytest.mark.timeout(60)
def test_every_documented_exchange_gets_the_documented_reply(
    small_reach_policy: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint, _ = small_reach_policy
    (contract,) = blocks("contract")
    exchanges = blocks("conformance")
    assert len(exchanges) >= 3 and sum(len(e) for e in exchanges) >= 19
    ctx = zmq.Context()
    sockets: dict[str, zmq.Socket] = {}
    try:
        learner = ServerLearner(load_config(robot="sim", task="reach"), checkpoint, None, tmp_path / "srv", mode="off")
        with served(learner) as server:
            for exchange in exchanges:
                for step in exchange:
                    if step["as"] not in sockets:
                        sock = sockets[step["as"]] = ctx.socket(zmq.DEALER)
                        sock.setsockopt(zmq.LINGER, 0)
                        sock.connect(server.endpoint)
                    sock = sockets[step["as"]]
                    if "send" in step or "raw_hex" in step:
                        sock.send_multipart(frames_for(step, contract))
                    check(step, reply(sock, 0.3 if step["expect"] is None else 5.0))
            time.sleep(0.05)
            assert "rejected_internal" not in server.stats()
    finally:
        for sock in sockets.values():
            sock.close(0)
        ctx.term()
