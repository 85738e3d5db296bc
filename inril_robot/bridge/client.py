"""`BridgeClient`: one DEALER connection to the policy server: hello/welcome, send, poll, reconnect with back-off.

Each `connect()` opens a fresh socket (a new ZMQ identity): nothing queued for a dead connection leaks into the new
one. A CURVE handshake the server rejects (key not allow-listed) shows up on the socket monitor and is raised as a
`Refusal` naming the reason, instead of a silent wait.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from inril_robot.bridge import protocol as p
from inril_robot.bridge.security import ClientKeys, secure_client
from inril_robot.core.errors import InrilError


class BridgeError(RuntimeError, InrilError):
    """The server cannot be reached or answered something unusable."""


class Refusal(BridgeError):
    """The server refused this robot; `code` (schema, contract, task, key) and `field` say why."""

    def __init__(self, code: str, reason: str, field: str | None = None) -> None:
        self.code, self.reason, self.field = code, reason, field
        super().__init__(f"the policy server refused this robot ({code}): {reason}")


class BridgeClient:
    def __init__(self, endpoint: str, robot: str, hello: p.Hello, keys: ClientKeys | None = None) -> None:
        self.endpoint, self.robot, self.hello, self.keys = endpoint, robot, hello, keys
        self.ctx = zmq.Context()
        self.socket: zmq.Socket | None = None
        self.monitor: zmq.Socket | None = None
        self.seq = 0
        self.welcome: p.Welcome | None = None
        self.last_heard = time.monotonic()
        self.connects = 0

    # ------------------------------------------------------------------------------------------ connection
    def connect(self, timeout_s: float = 5.0) -> p.Welcome:
        """Open a new connection and complete the handshake; raises `Refusal` or `BridgeError` (timeout)."""
        self._close_socket()
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        if self.keys is not None:
            secure_client(sock, self.keys)
        self.monitor = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        )
        sock.connect(self.endpoint)
        self.socket = sock
        hello_seq = self.send(self.hello)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = self.poll(min(0.05, max(deadline - time.monotonic(), 0.0)))
            if msg is None:
                continue
            if msg.type == "welcome":
                self.welcome = msg.body
                self.connects += 1
                return msg.body
            if msg.type == "refused":
                raise Refusal(msg.body.code, msg.body.reason, msg.body.field)
            if msg.type == "error" and msg.body.ref_seq in (hello_seq, -1) and msg.body.code == "schema":
                raise Refusal("schema", msg.body.reason)
        raise BridgeError(f"no answer to hello from {self.endpoint} within {timeout_s:.1f} s")

    def _check_monitor(self) -> None:
        while self.monitor is not None and self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)
            if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                raise Refusal(
                    "key",
                    f"the server rejected this robot's CURVE key (ZAP status {event['value']}): its "
                    "public key is not in the server's allow list (keys DIR/authorized/)",
                )
            raise Refusal(
                "key", "the CURVE handshake failed: wrong server public key, or the server does not use CurveZMQ"
            )

    def _close_socket(self) -> None:
        if self.socket is not None:
            self.socket.disable_monitor()
            self.socket.close(0)
            self.socket = None
        if self.monitor is not None:
            self.monitor.close(0)
            self.monitor = None

    def close(self) -> None:
        self._close_socket()
        self.ctx.term()

    # ------------------------------------------------------------------------------------------- messages
    def send(self, body: Any, arrays: dict[str, np.ndarray] | None = None, t_capture: float = 0.0) -> int:
        if self.socket is None:
            raise BridgeError("not connected")
        self.seq += 1
        frames = p.encode(body, robot=self.robot, seq=self.seq, t_capture=t_capture, arrays=arrays)
        with contextlib.suppress(zmq.Again):  # nobody connected yet / queue full: the watchdog covers a lost message
            self.socket.send_multipart(frames, zmq.NOBLOCK, copy=False)
        return self.seq

    def poll(self, timeout_s: float) -> p.Message | None:
        """The next message from the server within `timeout_s` (None otherwise). Raises `Refusal` on a failed
        CURVE handshake (looked for only when nothing arrived: a rejected key means nothing ever will)."""
        if self.socket is None:
            raise BridgeError("not connected")
        if not self.socket.poll(int(max(timeout_s, 0.0) * 1000)):
            self._check_monitor()
            return None
        frames = self.socket.recv_multipart(copy=False)
        self.last_heard = time.monotonic()
        try:
            return p.decode(frames)
        except p.ProtocolError as e:
            if e.code == "schema":  # a server of another wire version: no message of it can be read
                raise Refusal("schema", f"the server speaks another version of the protocol ({e.reason})") from None
            return None  # the server never sends these; drop rather than crash the robot loop
