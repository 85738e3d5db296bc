"""`inril-robot serve`: the policy server. One ROUTER socket, many robots, batched inference, the learner behind it.

The serving loop (one thread owns the socket): wait for messages, drain what has arrived, answer every observation
of the round with one batched forward pass, hand executed chunks and finished episodes to the learner. A message
that breaks the protocol is counted and answered with an `error`; nothing a client sends can stop the loop.

Sync learning (the default) updates between episodes: once enough episodes wait, observations that *start* an episode
are parked (those robots stay held at home) until no robot is mid-episode, then the update runs and the parked robots
get actions from the new weights. A robot silent for `robot_timeout_s` is dropped (its unfinished episode with it),
so a dead robot never blocks the others. `--async-learner` never parks: the learner process sends new weights,
swapped in between batches.

A client speaking the REQ pattern (``[identity, b"", payload...]``) is answered in kind, so `inril-robot doctor
--server` can measure the round trip with a raw REQ socket.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from inril_robot.contract import Contract, ContractMismatch

from . import protocol as p
from .episodes import EpisodeAssembler
from .learning import ServerLearner
from .security import ServerKeys, check_bind, secure_server

Log = Callable[[str], None]


@dataclass
class ServeOptions:
    bind: str = "tcp://127.0.0.1:5555"
    keys: ServerKeys | None = None
    max_batch: int = 64
    robot_timeout_s: float = 5.0
    limits: p.Limits = p.DEFAULT_LIMITS
    endpoint_file: Path | None = None  # the bound endpoint is written here (useful with tcp://127.0.0.1:*)


@dataclass
class Session:
    identity: bytes
    envelope: list[bytes]
    robot: str
    session: str
    assembler: EpisodeAssembler
    last_seen: float
    mid_episode: bool = False
    agent_stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Request:
    session: Session
    seq: int
    body: p.Observation
    history: dict[str, np.ndarray]


class PolicyServer:
    def __init__(self, learner: ServerLearner, options: ServeOptions | None = None, log: Log | None = None) -> None:
        self.learner = learner
        self.options = options or ServeOptions()
        self.log = log or (lambda _: None)
        policy = learner.policy
        self.obs_keys = list(policy.obs_shapes)
        self.n_obs_steps, self.act_steps = policy.cfg.n_obs_steps, policy.cfg.act_steps
        self.expected = {f"obs/{k}": ((self.n_obs_steps, *policy.obs_shapes[k]),
                                      learner.contract.observations[k].dtype) for k in self.obs_keys}
        self.sessions: dict[bytes, Session] = {}
        self.parked: list[Request] = []
        self.seq = 0
        self.rejected: dict[str, int] = defaultdict(int)
        self.counts: dict[str, int] = defaultdict(int)
        self.infer_ms: deque[float] = deque(maxlen=20_000)
        self.batch_sizes: deque[int] = deque(maxlen=20_000)
        self.ctx: zmq.Context | None = None
        self.socket: zmq.Socket | None = None
        self.auth: Any = None
        self.endpoint = ""
        self._reported_failure = False

    # ------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> str:
        check_bind(self.options.bind, self.options.keys)
        self.ctx = zmq.Context()
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 10_000)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        # a frame past this is dropped by libzmq itself (with the connection): the memory backstop behind `limits`
        sock.setsockopt(zmq.MAXMSGSIZE, self.options.limits.max_message_bytes + 1024 * 1024)
        if self.options.keys is not None:
            self.auth = secure_server(self.ctx, sock, self.options.keys)
        try:
            sock.bind(self.options.bind)
        except zmq.ZMQError as e:
            self.close()
            raise OSError(f"cannot bind {self.options.bind}: {e}") from e
        self.socket = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        if self.options.endpoint_file is not None:
            self.options.endpoint_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.options.endpoint_file.with_suffix(".tmp")
            tmp.write_text(self.endpoint)
            tmp.replace(self.options.endpoint_file)
        security = "CurveZMQ, allow-listed keys" if self.options.keys else "loopback only, no authentication"
        self.log(f"serving on {self.endpoint} ({security}); learner {self.learner.mode}, policy version "
                 f"{self.learner.version}")
        return self.endpoint

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close(0)
            self.socket = None
        if self.auth is not None:
            self.auth.stop()
            self.auth = None
        if self.ctx is not None:
            self.ctx.term()
            self.ctx = None

    def serve(self, should_stop: Callable[[], bool], on_tick: Callable[[], None] | None = None) -> None:
        """The loop, until `should_stop()`; `on_tick` runs about every 50 ms (live status)."""
        assert self.socket is not None, "call start() first"
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while not should_stop():
            if poller.poll(50):
                self.round()
            self.housekeeping()
            if on_tick is not None:
                on_tick()

    def round(self, max_messages: int = 1024) -> None:
        """Drain the messages waiting now, then answer the observations among them in batches."""
        assert self.socket is not None
        requests: list[Request] = []
        for _ in range(max_messages):
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            try:
                self.handle(frames, requests)
            except Exception as e:  # a bug must not take the server down: count it, answer, carry on
                self._reject(frames[:1], "internal", f"{type(e).__name__}: {e}")
        self.answer(requests)

    # ------------------------------------------------------------------------------------------- messages
    def handle(self, frames: list[Any], requests: list[Request]) -> None:
        self.counts["received"] += 1
        identity = frames[0].bytes
        envelope = [identity]
        payload = frames[1:]
        if len(payload) >= 2 and len(payload[0]) == 0:  # a REQ client's delimiter
            envelope, payload = [identity, b""], payload[1:]
        try:
            msg = p.decode(payload, self.options.limits)
        except p.ProtocolError as e:
            if e.code == "schema" and e.msg_type == "hello":
                self._send(envelope, p.Refused(code="schema", reason=e.reason))
                self.counts["refused"] += 1
            self._reject(envelope, e.code, e.reason)
            return
        session = self.sessions.get(identity)
        if session is not None:
            session.last_seen = time.monotonic()
        kind = msg.type
        if kind == "hello":
            self._hello(envelope, msg)
        elif kind == "heartbeat":
            state = "updating" if self.parked else ("learning" if self.learner.learning else "serving")
            self._send(envelope, p.Heartbeat(state=state, policy_version=self.learner.version), msg.header.seq)
        elif kind == "stats":
            if session is not None:
                session.agent_stats = dict(msg.body.values)
            self._send(envelope, p.Stats(values=self.stats()), msg.header.seq)
        elif kind in ("observation", "transition", "episode_end"):
            if session is None:
                self._reject(envelope, "not_welcomed", f"{kind} before a successful hello", msg.header.seq)
            elif kind == "observation":
                self._observation(session, msg, requests)
            elif kind == "transition":
                self._transition(session, msg)
            else:
                self._episode_end(session, msg)
        else:
            self._reject(envelope, "unknown_type", f"{kind!r} is sent by the server, not to it", msg.header.seq)

    def _hello(self, envelope: list[bytes], msg: p.Message) -> None:
        hello: p.Hello = msg.body
        refusal: p.Refused | None = None
        try:
            theirs = Contract.from_json_dict(hello.contract)
            self.learner.contract.require_match(theirs, context="robot vs the served checkpoint",
                                                ignore=("horizon", "act_steps"))
        except ContractMismatch as e:
            refusal = p.Refused(code="contract", reason=str(e), field=e.field)
        except ValueError as e:
            refusal = p.Refused(code="contract", reason=f"the hello's contract is invalid: {e}")
        task = self.learner.cfg.task.name
        if refusal is None and hello.task != task:
            refusal = p.Refused(code="task", reason=f"this server fine-tunes a {task!r} policy, the robot runs "
                                                    f"{hello.task!r}", field="task.name")
        if refusal is not None:
            self.counts["refused"] += 1
            self.log(f"refused robot {msg.header.robot!r}: {refusal.reason}")
            self._send(envelope, refusal, msg.header.seq)
            return
        identity = envelope[0]
        for old in [k for k, s in self.sessions.items() if s.robot == msg.header.robot and k != identity]:
            del self.sessions[old]  # the same robot reconnected: its old connection is gone
        session = Session(identity, envelope, msg.header.robot, uuid.uuid4().hex[:12],
                          EpisodeAssembler(self.learner.policy.cfg.horizon, self.learner.interventions),
                          time.monotonic())
        self.sessions[identity] = session
        self.counts["welcomed"] += 1
        self.log(f"robot {session.robot!r} connected ({hello.robot_kind}, config {hello.config_hash[:12]})")
        policy = self.learner.policy
        self._send(envelope, p.Welcome(
            session=session.session, policy_version=self.learner.version, obs_keys=self.obs_keys,
            n_obs_steps=self.n_obs_steps, horizon=policy.cfg.horizon, act_steps=self.act_steps,
            action_dim=policy.action_dim, control_hz=self.learner.contract.control_hz, learner=self.learner.mode,
            server_version=_version()), msg.header.seq)

    def _history(self, msg: p.Message, what: str) -> dict[str, np.ndarray]:
        history = {}
        for name, (shape, dtype) in self.expected.items():
            a = msg.arrays.get(name)
            if a is None:
                raise p.ProtocolError("bad_observation", f"{what}: blob {name!r} is missing")
            if a.shape != shape or a.dtype != np.dtype(dtype):
                raise p.ProtocolError("bad_observation", f"{what}: blob {name!r} is {a.dtype}{list(a.shape)}, the "
                                                         f"policy reads {dtype}{list(shape)} (n_obs_steps, *shape)")
            history[name[4:]] = a
        extra = sorted(set(msg.arrays) - set(self.expected))
        if extra:
            raise p.ProtocolError("bad_observation", f"{what}: unexpected blobs {extra}")
        return history

    def _observation(self, session: Session, msg: p.Message, requests: list[Request]) -> None:
        try:
            history = self._history(msg, "observation")
        except p.ProtocolError as e:
            self._reject(session.envelope, e.code, e.reason, msg.header.seq)
            return
        request = Request(session, msg.header.seq, msg.body, history)
        if msg.body.chunk == 0 and self.learner.update_ready():
            self.parked.append(request)  # the robot waits at the start of its episode while the learner updates
            return
        session.mid_episode = True
        requests.append(request)

    def _transition(self, session: Session, msg: p.Message) -> None:
        body: p.Transition = msg.body
        executed, rewards = msg.arrays.get("executed"), msg.arrays.get("rewards")
        a = self.learner.policy.action_dim
        if executed is None or rewards is None or executed.dtype != np.float64 or rewards.dtype != np.float32 \
                or executed.ndim != 2 or executed.shape[1] != a or not 1 <= len(executed) <= self.act_steps \
                or rewards.shape != (len(executed),) or not np.all(np.isfinite(executed)) \
                or not np.all(np.isfinite(rewards)):
            self._reject(session.envelope, "bad_transition", f"transition needs finite blobs executed float64 (k, {a}) "
                         f"with 1 <= k <= {self.act_steps} and rewards float32 (k,)", msg.header.seq)
            return
        if body.control == "none":
            # shadow mode: the arm executed nothing (no --execute); never learned from, by RL or IL
            self.counts["shadow_transitions_refused"] += 1
            return
        cut = session.assembler.transition(body.episode, body.chunk, executed, rewards, body.intervention,
                                           body.safety_events)
        self.counts["transitions"] += 1
        self.counts["interventions"] += int(body.intervention)
        if cut is not None:
            self.learner.add_episode(cut, finished_episode=False)

    def _episode_end(self, session: Session, msg: p.Message) -> None:
        body: p.EpisodeEnd = msg.body
        final: dict[str, np.ndarray] | None = None
        if msg.arrays:
            try:
                final = {k: np.array(v) for k, v in self._history(msg, "episode_end").items()}
            except p.ProtocolError as e:
                self._reject(session.envelope, e.code, e.reason, msg.header.seq)
        trace = session.assembler.episode_end(body.episode, body.success, body.terminated, final)
        session.mid_episode = False
        self.counts["episodes"] += 1
        self.counts["successes"] += int(body.success)
        self.learner.add_episode(trace, finished_episode=True)

    # ------------------------------------------------------------------------------------------- answers
    def answer(self, requests: list[Request]) -> None:
        for start in range(0, len(requests), self.options.max_batch):
            batch = requests[start:start + self.options.max_batch]
            tick = time.perf_counter()
            version, actions, kept = self.learner.infer([r.history for r in batch])
            infer_ms = (time.perf_counter() - tick) * 1e3
            self.infer_ms.append(infer_ms)
            self.batch_sizes.append(len(batch))
            for r, chunk, row in zip(batch, actions, kept, strict=True):
                if self.learner.mode != "off":
                    r.session.assembler.served_chunk(r.body.episode, r.body.chunk,
                                                     {k: np.array(v) for k, v in r.history.items()}, row)
                self._send(r.session.envelope, p.Action(obs_seq=r.seq, episode=r.body.episode, chunk=r.body.chunk,
                                                        policy_version=version, infer_ms=infer_ms),
                           r.seq, {"actions": chunk})
                self.counts["actions"] += 1

    def housekeeping(self) -> None:
        self.learner.poll()  # async learner: swap in new weights between batches
        now = time.monotonic()
        for identity, s in list(self.sessions.items()):
            if now - s.last_seen > self.options.robot_timeout_s and not any(r.session is s for r in self.parked):
                del self.sessions[identity]
                self.log(f"robot {s.robot!r} silent for {self.options.robot_timeout_s:.0f} s: dropped"
                         + (" (its unfinished episode with it)" if s.mid_episode else ""))
        if self.learner.failure and not self._reported_failure:
            self._reported_failure = True
            self.log(f"{self.learner.failure}; serving the last good weights (version {self.learner.version})")
        if self.learner.update_ready() and not any(s.mid_episode for s in self.sessions.values()):
            row = self.learner.update()
            self.log(f"update {row['step']}: {row['env_steps']} env steps, train success "
                     f"{row['train_success']:.0%}, {row['update_s']:.1f} s")
            for s in self.sessions.values():
                s.last_seen = time.monotonic()
        if self.parked and not self.learner.update_ready():
            parked, self.parked = self.parked, []
            for r in parked:
                r.session.mid_episode = True
            self.answer(parked)

    # --------------------------------------------------------------------------------------------- helpers
    def _send(self, envelope: list[bytes], body: Any, ref_seq: int = 0,
              arrays: dict[str, np.ndarray] | None = None) -> None:
        assert self.socket is not None
        self.seq += 1
        frames = p.encode(body, robot="server", seq=self.seq, arrays=arrays)
        with contextlib.suppress(zmq.Again, zmq.ZMQError):  # a vanished peer: ROUTER drops, we never block
            self.socket.send_multipart([*envelope, *frames], zmq.NOBLOCK, copy=False)

    def _reject(self, envelope: list[Any], code: str, reason: str, ref_seq: int = -1) -> None:
        self.rejected[code] += 1
        n = self.rejected[code]
        if n == 1 or n % 1000 == 0:
            self.log(f"rejected message #{n} of kind {code}: {reason}")
        env = [f.bytes if hasattr(f, "bytes") else f for f in envelope]
        if not env:
            return
        self._send(env, p.Error(code=code, reason=reason[:4000], ref_seq=ref_seq))  # type: ignore[arg-type]

    def stats(self) -> dict[str, Any]:
        infer = np.array(self.infer_ms) if self.infer_ms else np.zeros(1)
        return {"policy_version": self.learner.version, "env_steps": self.learner.env_steps,
                "episodes": self.learner.episodes, "learning": self.learner.learning, "learner": self.learner.mode,
                "robots": ",".join(sorted(s.robot for s in self.sessions.values())),
                "parked": len(self.parked), "pending_episodes": len(self.learner.pending),
                "interventions": self.learner.interventions.total,
                "infer_p50_ms": float(np.percentile(infer, 50)), "infer_p99_ms": float(np.percentile(infer, 99)),
                "mean_batch": float(np.mean(self.batch_sizes)) if self.batch_sizes else 0.0,
                "rejected": int(sum(self.rejected.values())), "failure": self.learner.failure,
                **{f"rejected_{k}": v for k, v in self.rejected.items()}, **dict(self.counts)}


def _version() -> str:
    from inril_robot.policies.checkpoint import package_version

    return package_version()
