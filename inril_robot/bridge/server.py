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
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import zmq

from inril_robot.bridge import protocol as p
from inril_robot.bridge.episodes import EpisodeAssembler
from inril_robot.bridge.learning import ServerLearner
from inril_robot.bridge.security import AllowList, ServerKeys, check_bind, secure_server
from inril_robot.core.contract import Contract, ContractMismatch

Log = Callable[[str], None]


@dataclass
class ServeOptions:
    bind: str = "tcp://127.0.0.1:5555"
    keys: ServerKeys | None = None
    max_batch: int = 64
    robot_timeout_s: float = 5.0
    limits: p.Limits = p.DEFAULT_LIMITS
    endpoint_file: Path | None = None  # the bound endpoint is written here (useful with tcp://127.0.0.1:*)
    # per-connection budgets (token buckets): a robot at 10-50 Hz sends a few messages per chunk
    msgs_per_s: float = 500.0
    msg_burst: int = 1000
    bytes_per_s: float = 64 * 1024 * 1024
    byte_burst: int = 128 * 1024 * 1024
    max_sessions: int = 64  # welcomed robots at once (and so parked requests: at most one each)
    # sync learner: how long an update that fell due waits for robots mid-episode before it leaves their episodes out
    episode_deadline_s: float = 60.0
    summary_every_s: float = 10.0  # identical refusals are counted and summarised this often, never logged one by one


MAX_PEERS = 4096  # connections whose budgets are remembered (least recently heard forgotten first)
MAX_ABS_EXECUTED = 100.0  # |executed action| beyond this (metres/radians per step) is not a robot's action
LEARNER_RATES = ("updates", "updates_per_s", "utd", "buffer")  # the async off-policy learner's live figures
DRAIN_BUDGET_S = 0.005  # with an observation waiting, stop reading after this long and answer it first


@dataclass
class Session:
    identity: bytes
    envelope: list[bytes]
    robot: str
    session: str
    assembler: EpisodeAssembler  # or the off-policy TransitionAssembler (the same calls)
    last_seen: float
    key: str | None = None  # the CURVE public key (z85) this session authenticated with
    mid_episode: bool = False
    episode: int = -1  # of its latest observation
    left_out_episode: int | None = None  # an episode the sync learner stopped waiting for (not learned from)
    agent_stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Request:
    session: Session
    seq: int
    body: p.Observation
    history: dict[str, np.ndarray]
    learn: bool = True


@dataclass
class Peer:
    """One connection's budgets: messages and bytes per second (token buckets)."""

    msgs: float
    bytes: float
    stamp: float
    dropped: int = 0
    last_notice: float = -1e9

    def admit(self, now: float, size: int, o: ServeOptions) -> bool:
        dt, self.stamp = now - self.stamp, now
        self.msgs = min(o.msg_burst, self.msgs + dt * o.msgs_per_s)
        self.bytes = min(o.byte_burst, self.bytes + dt * o.bytes_per_s)
        if self.msgs < 1 or self.bytes < size:
            self.dropped += 1
            return False
        self.msgs -= 1
        self.bytes -= size
        return True


def escape_log(text: str, limit: int = 600) -> str:
    """A log line that cannot forge others or drive a terminal: control characters escaped, length bounded."""
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text[:limit])
    return out + ("..." if len(text) > limit else "")


class PolicyServer:
    def __init__(self, learner: ServerLearner, options: ServeOptions | None = None, log: Log | None = None) -> None:
        self.learner = learner
        self.options = options or ServeOptions()
        sink = log or (lambda _: None)
        self.log: Log = lambda text: sink(escape_log(text))
        policy = learner.policy
        self.obs_keys = list(policy.obs_shapes)
        self.n_obs_steps, self.act_steps = policy.cfg.n_obs_steps, policy.cfg.act_steps
        self.contract = _served_contract(learner)
        self.expected = {
            f"obs/{k}": ((self.n_obs_steps, *policy.obs_shapes[k]), self.contract.observations[k].dtype)
            for k in self.obs_keys
        }
        self.wire_observations = {
            name: p.ObsBlob(
                dtype=dtype,
                shape=list(shape),
                range=list(r) if (r := self.contract.observations[name[4:]].range) and dtype != "uint8" else None,
            )
            for name, (shape, dtype) in self.expected.items()
        }
        self.sessions: dict[bytes, Session] = {}
        self.peers: OrderedDict[bytes, Peer] = OrderedDict()
        self.parked: dict[bytes, Request] = {}  # at most one per session
        self.seq = 0
        self.rejected: dict[str, int] = defaultdict(int)
        self.counts: dict[str, int] = defaultdict(int)
        self.infer_ms: deque[float] = deque(maxlen=20_000)
        self.batch_sizes: deque[int] = deque(maxlen=20_000)
        self.ctx: zmq.Context | None = None
        self.socket: zmq.Socket | None = None
        self.auth: Any = None
        self.allow: AllowList | None = AllowList(self.options.keys.authorized) if self.options.keys else None
        self.endpoint = ""
        self._reported_failure = False
        self._reported_finish = False
        self._logged_rollbacks = 0
        self._update_due_since: float | None = None
        self._unsummarised: dict[str, int] = defaultdict(int)
        self._logged_kinds: set[str] = set()
        self._last_summary = self._last_refresh = time.monotonic()

    # ------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> str:
        check_bind(self.options.bind, self.options.keys)
        self.ctx = zmq.Context()
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 1_000)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        # a frame larger than any header or blob may be is refused by libzmq itself, before it is allocated (the
        # connection is dropped with it); the whole multipart is bounded by `limits` after it arrived
        limits = self.options.limits
        sock.setsockopt(zmq.MAXMSGSIZE, max(limits.max_blob_bytes, limits.max_header_bytes) + 64 * 1024)
        if _is_ipv6(self.options.bind):
            sock.setsockopt(zmq.IPV6, 1)
        if self.options.keys is not None:
            assert self.allow is not None
            self.allow.load()
            self.auth = secure_server(self.ctx, sock, self.options.keys, self.allow)
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
        self.log(
            f"serving on {self.endpoint} ({security}); learner {self.learner.mode}, policy version "
            f"{self.learner.version}"
        )
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
        """Drain the messages waiting now (not much longer than DRAIN_BUDGET_S once an observation waits: a flood
        never delays others' inference), then answer the observations among them in batches."""
        assert self.socket is not None
        requests: list[Request] = []
        started = time.perf_counter()
        for _ in range(max_messages):
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self.handle(frames, requests)
            if requests and time.perf_counter() - started > DRAIN_BUDGET_S:
                break
        self.answer(requests)

    # ------------------------------------------------------------------------------------------- messages
    def handle(self, frames: list[Any], requests: list[Request]) -> None:
        self.counts["received"] += 1
        identity = frames[0].bytes
        envelope = [identity]
        payload = frames[1:]
        if len(payload) >= 2 and len(payload[0]) == 0:  # a REQ client's delimiter
            envelope, payload = [identity, b""], payload[1:]
        now = time.monotonic()
        peer = self._peer(identity, now)
        if not peer.admit(now, sum(len(f) for f in payload), self.options):
            self.rejected["rate_limited"] += 1
            self._unsummarised["rate_limited"] += 1
            if now - peer.last_notice > 1.0:  # one notice a second, the rest dropped unanswered
                peer.last_notice = now
                self._send(
                    envelope,
                    p.Error(
                        code="rate_limited",
                        reason=(
                            f"over this connection's budget ({self.options.msgs_per_s:g} messages/s, "
                            f"{self.options.bytes_per_s / 2**20:g} MiB/s): messages dropped"
                        ),
                    ),
                )
            return
        try:
            self._dispatch(frames[0], envelope, payload, requests, now)
        except Exception as e:  # a bug must not take the server down: count it, answer, carry on
            self._reject(envelope, "internal", f"{type(e).__name__}: {e}")

    def _dispatch(
        self, first: Any, envelope: list[bytes], payload: list[Any], requests: list[Request], now: float
    ) -> None:
        identity = envelope[0]
        try:
            msg = p.decode(payload, self.options.limits)
        except p.ProtocolError as e:
            if e.code == "schema" and e.msg_type == "hello":  # answered with `refused` only (quotes no seq)
                # an older peer gets it in its own version, so it can read why (a newer one reads our version field)
                version = e.version if e.version in p.REFUSABLE_VERSIONS else p.WIRE_VERSION
                self._send(envelope, p.Refused(code="schema", reason=e.reason), version=version)
                self.counts["refused"] += 1
                self.rejected["schema"] += 1
                self._unsummarised["schema"] += 1
                return
            self._reject(envelope, e.code, e.reason)
            return
        key = _user_id(first) if self.allow is not None else None
        session = self.sessions.get(identity)
        if session is not None and self.allow is not None and self.allow.robot_for(key) != session.robot:
            self._end_session(identity)  # its key was revoked (removed from authorized/) since it connected
            self.log(f"robot {session.robot!r}: its key is no longer allow-listed: session ended")
            session = None
        if session is not None:
            session.last_seen = now
        kind = msg.type
        if kind == "hello":
            self._hello(envelope, msg, key)
        elif kind not in ("observation", "transition", "episode_end", "heartbeat", "stats"):
            self._reject(envelope, "unknown_type", f"{kind!r} is sent by the server, not to it", msg.header.seq)
        elif session is None:
            self._reject(envelope, "not_welcomed", f"{kind} before a successful hello", msg.header.seq)
        elif kind == "heartbeat":
            state = (
                "updating"
                if self.parked
                else "learning"
                if self.learner.learning
                else "run over"
                if self.learner.finished
                else "serving"
            )
            self._send(envelope, p.Heartbeat(state=state, policy_version=self.learner.version), msg.header.seq)
        elif kind == "stats":
            session.agent_stats = dict(msg.body.values)
            self._send(envelope, p.Stats(values=self.public_stats()), msg.header.seq)
        elif kind == "observation":
            self._observation(session, msg, requests)
        elif kind == "transition":
            self._transition(session, msg)
        else:
            self._episode_end(session, msg)

    def _hello(self, envelope: list[bytes], msg: p.Message, key: str | None) -> None:
        hello: p.Hello = msg.body
        robot, identity = msg.header.robot, envelope[0]
        refusal: p.Refused | None = None
        if self.allow is not None:
            allowed = self.allow.robot_for(key)
            if allowed != robot:
                refusal = p.Refused(
                    code="identity",
                    reason=f"this CURVE key may only connect as robot {allowed!r}, not {robot!r}",
                    field="robot",
                )
        if refusal is None:
            refusal = self._contract_refusal(hello)
        if refusal is not None:
            self.counts["refused"] += 1
            self._summarise("refused", f"refused hello from {robot!r} ({refusal.code}): {refusal.reason}")
            self._send(envelope, refusal, msg.header.seq)
            return
        holder = next((s for k, s in self.sessions.items() if s.robot == robot and k != identity), None)
        if holder is not None:
            if self.allow is None:  # without CURVE an id belongs to its first connection until it times out
                self.counts["id_in_use"] += 1
                self._summarise(
                    "id_in_use", f"refused hello as {robot!r} from another connection: that robot id is live"
                )
                self._reject(
                    envelope,
                    "id_in_use",
                    f"robot id {robot!r} is live on another connection; it is free "
                    f"again {self.options.robot_timeout_s:g} s after that connection goes silent",
                    msg.header.seq,
                    summarised=True,
                )
                return
            self._end_session(holder.identity)  # the same key reconnected: its old connection is gone
        if identity not in self.sessions and len(self.sessions) >= self.options.max_sessions:
            self._reject(
                envelope,
                "rate_limited",
                f"the server serves at most {self.options.max_sessions} robots",
                msg.header.seq,
            )
            return
        self._end_session(identity)
        session = Session(
            identity,
            envelope,
            robot,
            uuid.uuid4().hex[:12],
            self.learner.new_assembler(robot),
            time.monotonic(),
            key=key,
        )
        self.sessions[identity] = session
        self.counts["welcomed"] += 1
        self.log(f"robot {session.robot!r} connected ({hello.robot_kind!r}, config {hello.config_hash[:12]!r})")
        policy = self.learner.policy
        self._send(
            envelope,
            p.Welcome(
                session=session.session,
                policy_version=self.learner.version,
                obs_keys=self.obs_keys,
                n_obs_steps=self.n_obs_steps,
                horizon=policy.cfg.horizon,
                act_steps=self.act_steps,
                action_dim=policy.action_dim,
                control_hz=self.contract.control_hz,
                learner=self.learner.mode,
                server_version=_version(),
                observations=self.wire_observations,
                reward_range=list(self.contract.reward_range) if self.contract.reward_range else None,
            ),
            msg.header.seq,
        )

    def _contract_refusal(self, hello: p.Hello) -> p.Refused | None:
        missing = [f for f in Contract.model_fields if f not in hello.contract]
        if missing:
            return p.Refused(
                code="contract",
                reason=f"the hello's contract lacks {', '.join(missing)} (every field is required)",
                field=missing[0],
            )
        try:
            theirs = Contract.from_json_dict(hello.contract)
            unprovided = [k for k in self.obs_keys if k not in theirs.observations]
            if unprovided:
                return p.Refused(
                    code="contract", reason=p.unprovided_reason(unprovided), field=f"observations.{unprovided[0]}"
                )
            self.contract.require_match(
                theirs,
                context="robot vs the served checkpoint",
                ignore=("horizon", "act_steps"),
                compare=("reward_range",),
            )
        except ContractMismatch as e:
            return p.Refused(code="contract", reason=str(e)[:2000], field=e.field)
        except (ValueError, RecursionError) as e:
            return p.Refused(code="contract", reason=f"the hello's contract is invalid: {str(e)[:1000]}")
        task = self.learner.cfg.task.name
        if hello.task != task:
            return p.Refused(
                code="task",
                reason=f"this server fine-tunes a {task!r} policy, the robot runs {hello.task!r}",
                field="task.name",
            )
        return None

    def _end_session(self, identity: bytes) -> None:
        self.sessions.pop(identity, None)
        self.parked.pop(identity, None)

    def _history(self, msg: p.Message, what: str) -> dict[str, np.ndarray]:
        history = {}
        for name, (shape, dtype) in self.expected.items():
            a = msg.arrays.get(name)
            if a is None:
                raise p.ProtocolError("bad_observation", f"{what}: blob {name!r} is missing")
            if a.shape != shape or a.dtype != np.dtype(dtype):
                raise p.ProtocolError(
                    "bad_observation",
                    f"{what}: blob {name!r} is {a.dtype}{list(a.shape)}, the "
                    f"policy reads {dtype}{list(shape)} (n_obs_steps, *shape)",
                )
            problem = self.contract.value_problem(name[4:], a)
            if problem is not None:
                raise p.ProtocolError("bad_observation", f"{what}: {problem}")
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
        session.episode = msg.body.episode
        left_out = msg.body.episode == session.left_out_episode
        request = Request(session, msg.header.seq, msg.body, history, learn=not left_out)
        if msg.body.chunk == 0 and self.learner.update_ready():
            self.parked[session.identity] = request  # it waits at its episode's start while the learner updates
            return
        session.mid_episode = not left_out
        requests.append(request)

    def _transition(self, session: Session, msg: p.Message) -> None:
        body: p.Transition = msg.body
        executed, rewards = msg.arrays.get("executed"), msg.arrays.get("rewards")
        a = self.learner.policy.action_dim
        if (
            executed is None
            or rewards is None
            or executed.dtype != np.float64
            or rewards.dtype != np.float32
            or executed.ndim != 2
            or executed.shape[1] != a
            or not 1 <= len(executed) <= self.act_steps
            or rewards.shape != (len(executed),)
            or set(msg.arrays) != {"executed", "rewards"}
        ):
            self._reject(
                session.envelope,
                "bad_transition",
                f"transition needs exactly the blobs executed float64 "
                f"(k, {a}) with 1 <= k <= {self.act_steps} and rewards float32 (k,)",
                msg.header.seq,
            )
            return
        problem = self.contract.reward_problem(rewards)
        if problem is None and not (np.isfinite(executed).all() and np.abs(executed).max() <= MAX_ABS_EXECUTED):
            problem = f"executed actions must be finite and within +-{MAX_ABS_EXECUTED:g}"
        if problem is not None:
            self._reject(session.envelope, "bad_transition", problem, msg.header.seq)
            return
        if body.episode == session.left_out_episode:
            return
        if body.control == "none":
            # shadow mode: the arm executed nothing (no --execute); never learned from, by RL or IL
            self.counts["shadow_transitions_refused"] += 1
            return
        cut = session.assembler.transition(
            body.episode,
            body.chunk,
            executed,
            rewards,
            body.intervention,
            body.safety_events,
            end=body.end,
            policy_version=body.policy_version,
        )
        self.counts["transitions"] += 1
        self.counts["interventions"] += int(body.intervention)
        if not session.assembler.last_served:
            self.counts["transitions_unserved"] += 1
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
        trace = session.assembler.episode_end(body.episode, body.success, body.end, final)
        session.mid_episode = False
        if body.episode == session.left_out_episode:
            session.left_out_episode, trace = None, None
        self.counts["episodes"] += 1
        self.counts["successes"] += int(body.success)
        self.learner.add_episode(trace, finished_episode=True)

    # ------------------------------------------------------------------------------------------- answers
    def answer(self, requests: list[Request]) -> None:
        for start in range(0, len(requests), self.options.max_batch):
            batch = requests[start : start + self.options.max_batch]
            tick = time.perf_counter()
            results = self._infer(batch)
            infer_ms = (time.perf_counter() - tick) * 1e3
            self.infer_ms.append(infer_ms)
            self.batch_sizes.append(len(batch))
            for r, result in zip(batch, results, strict=True):
                if isinstance(result, str):
                    self._reject(r.session.envelope, "bad_observation", result, r.seq)
                    continue
                version, chunk, row = result
                if self.learner.mode != "off" and r.learn:
                    r.session.assembler.served_chunk(
                        r.body.episode, r.body.chunk, {k: np.array(v) for k, v in r.history.items()}, row
                    )
                self._send(
                    r.session.envelope,
                    p.Action(
                        obs_seq=r.seq,
                        episode=r.body.episode,
                        chunk=r.body.chunk,
                        policy_version=version,
                        infer_ms=infer_ms,
                        run_over=self.learner.finished,
                    ),
                    r.seq,
                    {"actions": chunk},
                )
                self.counts["actions"] += 1

    def _infer(self, batch: list[Request]) -> list[tuple[int, np.ndarray, dict] | str]:
        """One batched forward pass; if it fails, or a row's actions are not finite, the rows are retried one by
        one, so one robot's observation can only cost that robot its action (answered with the reason)."""
        try:
            version, actions, kept = self.learner.infer([r.history for r in batch])
            if np.isfinite(actions).all():
                return [(version, a, k) for a, k in zip(actions, kept, strict=True)]
        except Exception:  # narrowed down row by row below
            if len(batch) == 1:
                return [self._infer_one(batch[0])]
        if len(batch) == 1:
            return ["the policy produced non-finite actions for this observation"]
        return [self._infer_one(r) for r in batch]

    def _infer_one(self, r: Request) -> tuple[int, np.ndarray, dict] | str:
        try:
            version, actions, kept = self.learner.infer([r.history])
        except Exception as e:  # this observation breaks the policy: the robot is told, no one else
            self._summarise(
                "inference", f"inference failed on an observation of {r.session.robot!r}: {type(e).__name__}: {e}"
            )
            return f"the policy cannot act on this observation ({type(e).__name__})"
        if not np.isfinite(actions).all():
            return "the policy produced non-finite actions for this observation"
        return version, actions[0], kept[0]

    def housekeeping(self) -> None:
        self.learner.poll()  # async learner: swap in new weights between batches
        now = time.monotonic()
        for identity, s in list(self.sessions.items()):
            if now - s.last_seen > self.options.robot_timeout_s and identity not in self.parked:
                self._end_session(identity)
                self.log(
                    f"robot {s.robot!r} silent for {self.options.robot_timeout_s:.0f} s: dropped"
                    + (" (its unfinished episode with it)" if s.mid_episode else "")
                )
        if self.learner.rollbacks > self._logged_rollbacks:
            self._logged_rollbacks = self.learner.rollbacks
            self.log(
                f"learner update rolled back ({self.learner.rollbacks} so far): "
                f"{self.learner.last_stats.get('rolled_back', 'non-finite values')}"
            )
        if self.learner.failure and not self._reported_failure:
            self._reported_failure = True
            self.log(f"{self.learner.failure}; serving the last good weights (version {self.learner.version})")
        if self.learner.finished and not self._reported_finish:
            self._reported_finish = True
            self.log(
                f"learning budget reached: {self.learner.env_steps} of finetune.env_steps "
                f"{self.learner.cfg.finetune.env_steps} env steps learned from, final policy version "
                f"{self.learner.version}, checkpoint {self.learner.out / 'last.pt'}; robots are told the run is over "
                "(serving the final weights until stopped)"
            )
        if now - self._last_refresh > 1.0:
            self._last_refresh = now
            self._refresh_allow_list()
        if now - self._last_summary > self.options.summary_every_s:
            self._flush_summary(now)
        self._sync_update(now)

    def _sync_update(self, now: float) -> None:
        if self.learner.update_ready():
            self._update(now)
        else:
            self._update_due_since = None
        if self.parked and not self.learner.update_ready():
            parked, self.parked = list(self.parked.values()), {}
            for r in parked:
                r.session.mid_episode = True
            self.answer(parked)

    def _update(self, now: float) -> None:
        due = self._update_due_since = self._update_due_since or now
        laggards = [s for s in self.sessions.values() if s.mid_episode]
        if laggards and now - due > self.options.episode_deadline_s:
            for s in laggards:  # it keeps being served; what it does until its episode ends is not learned from
                s.mid_episode, s.left_out_episode = False, s.episode
                s.assembler.abandon()
                self.counts["episodes_left_out"] += 1
                self.log(
                    f"robot {s.robot!r} still mid-episode {self.options.episode_deadline_s:g} s after an update "
                    "fell due: that episode is left out of learning"
                )
            laggards = []
        if laggards:
            return
        try:
            row = self.learner.update()
        except Exception as e:  # the learner rolled back; the server keeps serving
            self.learner.failure = self.learner.failure or f"learner update failed: {type(e).__name__}: {e}"
            return
        self._update_due_since = None
        if not row.get("rolled_back"):  # (a rollback is logged by housekeeping)
            self.log(
                f"update {row['step']}: {row['env_steps']} env steps, train success "
                f"{row['train_success']:.0%}, {row['update_s']:.1f} s"
            )
        for s in self.sessions.values():
            s.last_seen = time.monotonic()

    def _refresh_allow_list(self) -> None:
        if self.allow is None:
            return
        changed, errors = self.allow.refresh()
        for error in errors:
            self.log(f"allow list: {error}")
        if changed:
            self.log(f"allow list re-read: {len(self.allow.keys)} keys ({', '.join(sorted(self.allow.keys.values()))})")
            for identity, s in list(self.sessions.items()):
                if self.allow.robot_for(s.key) != s.robot:
                    self._end_session(identity)
                    self.log(f"robot {s.robot!r}: key revoked, session ended")
        refused, keys = self.allow.take_refused()
        if refused:
            self._unsummarised["handshake"] += refused
            if self.counts["handshakes_refused"] == 0:
                self.log(f"refused a CURVE handshake: key {keys[0]}... is not allow-listed")
            self.counts["handshakes_refused"] += refused

    def _flush_summary(self, now: float) -> None:
        counts = {k: v for k, v in self._unsummarised.items() if v}
        if counts:
            self.log(
                f"in the last {now - self._last_summary:.0f} s: "
                + ", ".join(
                    f"{v} {'handshakes refused (unknown keys)' if k == 'handshake' else k + ' refusals'}"
                    for k, v in sorted(counts.items())
                )
            )
        self._unsummarised.clear()
        self._last_summary = now

    def _peer(self, identity: bytes, now: float) -> Peer:
        peer = self.peers.get(identity)
        if peer is None:
            peer = self.peers[identity] = Peer(float(self.options.msg_burst), float(self.options.byte_burst), now)
            if len(self.peers) > MAX_PEERS:
                self.peers.popitem(last=False)
        else:
            self.peers.move_to_end(identity)
        return peer

    # --------------------------------------------------------------------------------------------- helpers
    def _send(
        self,
        envelope: list[bytes],
        body: Any,
        ref_seq: int | None = None,
        arrays: dict[str, np.ndarray] | None = None,
        version: int = p.WIRE_VERSION,
    ) -> None:
        """Send `body`; a reply body with a `ref_seq` field quotes `ref_seq`, the request's seq."""
        assert self.socket is not None
        if ref_seq is not None and "ref_seq" in body.__struct_fields__:
            body = msgspec.structs.replace(body, ref_seq=ref_seq)
        self.seq += 1
        frames = p.encode(body, robot="server", seq=self.seq, arrays=arrays, version=version)
        with contextlib.suppress(zmq.Again, zmq.ZMQError):  # a vanished peer: ROUTER drops, we never block
            self.socket.send_multipart([*envelope, *frames], zmq.NOBLOCK, copy=False)

    def _reject(self, envelope: list[Any], code: str, reason: str, ref_seq: int = -1, summarised: bool = False) -> None:
        """Answer `error` and count it; the first of each code is logged, the rest summarised (cheap refusals)."""
        self.rejected[code] += 1
        if not summarised:
            self._summarise(code, f"rejected a message ({code}): {reason}")
        self._send(envelope, p.Error(code=code, reason=reason[:4000], ref_seq=ref_seq))  # type: ignore[arg-type]

    def _summarise(self, kind: str, line: str) -> None:
        """Log `line` for the first refusal of its kind; later ones are only counted (see `_flush_summary`)."""
        if kind in self._logged_kinds:
            self._unsummarised[kind] += 1
        else:
            self._logged_kinds.add(kind)
            self.log(line)

    def public_stats(self) -> dict[str, Any]:
        """What a welcomed robot may see: figures, not other robots' ids nor the learner's failure text."""
        values = self.stats()
        values["robots"] = len(self.sessions)
        values["failure"] = "yes" if values["failure"] else None
        return values

    def stats(self) -> dict[str, Any]:
        infer = np.array(self.infer_ms) if self.infer_ms else np.zeros(1)
        return {
            "policy_version": self.learner.version,
            "env_steps": self.learner.env_steps,
            "episodes": self.learner.episodes,
            "learning": self.learner.learning,
            "run_over": self.learner.finished,
            "learner": self.learner.mode,
            "robots": ",".join(sorted(s.robot for s in self.sessions.values())),
            "sessions": len(self.sessions),
            "parked": len(self.parked),
            "pending_episodes": len(self.learner.pending),
            "interventions": self.learner.interventions.total,
            "infer_p50_ms": float(np.percentile(infer, 50)),
            "infer_p99_ms": float(np.percentile(infer, 99)),
            "mean_batch": float(np.mean(self.batch_sizes)) if self.batch_sizes else 0.0,
            "rejected": int(sum(self.rejected.values())),
            "failure": self.learner.failure,
            "rollbacks": self.learner.rollbacks,
            **{k: self.learner.last_stats[k] for k in LEARNER_RATES if k in self.learner.last_stats},
            **{f"rejected_{k}": v for k, v in self.rejected.items()},
            **dict(self.counts),
        }


def _served_contract(learner: ServerLearner) -> Contract:
    """The checkpoint's contract; the reward range and value ranges it does not declare (a checkpoint written before
    they were) come from the server's task configuration."""
    contract = learner.contract
    from inril_robot.learning.pretrain import run_contract

    try:
        declared = run_contract(learner.cfg)
    except Exception:  # a configuration that cannot build its env: keep the checkpoint's own
        return contract
    observations = {
        k: spec
        if spec.range is not None or k not in declared.observations
        else spec.model_copy(update={"range": declared.observations[k].range})
        for k, spec in contract.observations.items()
    }
    return contract.model_copy(
        update={"observations": observations, "reward_range": contract.reward_range or declared.reward_range}
    )


def _user_id(frame: Any) -> str | None:
    try:
        return frame.get("User-Id")
    except (zmq.ZMQError, AttributeError):
        return None


def _is_ipv6(endpoint: str) -> bool:
    return endpoint.startswith("tcp://[")


def _version() -> str:
    from inril_robot.learning.policies.checkpoint import package_version

    return package_version()
