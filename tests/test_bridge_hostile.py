"""The policy server under hostile and broken input (issue 15): fuzz from several clients, poisoned learning,
floods, identity hijacks, key hygiene. Real ZMQ sockets over TCP loopback, real policies and learners; nothing mocked.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import numpy as np
import pytest
import torch
import zmq
from typer.testing import CliRunner

from inril_robot.bridge import protocol as p
from inril_robot.bridge.client import BridgeClient, Refusal
from inril_robot.bridge.learning import ServerLearner
from inril_robot.bridge.security import SecurityError, client_keys, generate, server_keys
from inril_robot.bridge.server import PolicyServer, Request, ServeOptions, Session
from inril_robot.cli import app
from inril_robot.config import RunConfig, load_config
from inril_robot.data import Dataset
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.pretrain import run_contract
from inril_robot.learning.rl.rollouts import raw_actions
from tests.test_bridge import _episodes, hello_for, served

runner = CliRunner()
FT = [
    "finetune.episodes_per_iteration=2",
    "finetune.ppo.minibatch_size=8",
    "finetune.ppo.epochs=1",
    "finetune.ppo.critic_warmup_iterations=0",
    "finetune.ppo.target_kl=null",
    "finetune.inril.il_every=1",
    "finetune.inril.il_steps=1",
    "finetune.inril.il_batch_size=16",
    "finetune.guard.enabled=false",
]


@pytest.fixture
def trained(small_reach_policy: tuple[Path, Path]) -> tuple[Path, Path]:
    return small_reach_policy


class Client(BridgeClient):
    """A BridgeClient closed at the end of the test whatever happened (a ZMQ context left to the garbage collector
    can wait forever for a socket of a failed test, hanging the next one)."""

    open: ClassVar[list[BridgeClient]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        Client.open.append(self)


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while Client.open:
        c = Client.open.pop()
        if not c.ctx.closed:
            c.close()


def cfg_for(*overrides: str) -> RunConfig:
    return load_config(robot="sim", task="reach", overrides=[*FT, *overrides])


def inference_only(trained: tuple[Path, Path], tmp_path: Path) -> tuple[RunConfig, ServerLearner]:
    cfg = cfg_for()
    return cfg, ServerLearner(cfg, trained[0], None, tmp_path / "srv", mode="off")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def dealer(endpoint: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def wait_for(sock_or_client: Any, want: Any, timeout_s: float = 5.0) -> p.Message | None:
    """The first decoded message for which `want(msg)` holds, skipping others."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if isinstance(sock_or_client, BridgeClient):
            msg = sock_or_client.poll(0.05)
        elif sock_or_client.poll(50):
            msg = p.decode(sock_or_client.recv_multipart())
        else:
            msg = None
        if msg is not None and want(msg):
            return msg
    return None


def observation(shapes: dict[str, tuple[int, ...]], rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {f"obs/{k}": rng.uniform(-1, 1, (1, *s)).astype(np.float32) for k, s in shapes.items()}


# ---------------------------------------------------------------------------------------------------- fuzzing
def _fuzz(rng: np.random.Generator, shapes: dict[str, tuple[int, ...]], robot: str, big: memoryview) -> list[Any]:
    """One hostile message from a welcomed fuzzer: non-finite/huge values, bit flips, garbage, oversized, poison."""
    kind = int(rng.integers(0, 10))
    obs = observation(shapes, rng)
    if kind <= 2:  # a value no sensor produces
        key = str(rng.choice(list(obs)))
        obs[key].flat[int(rng.integers(0, obs[key].size))] = rng.choice([np.nan, np.inf, -np.inf, 1e37, -3.4e38])
        return p.encode(p.Observation(episode=0, chunk=1, step=1), robot=robot, seq=1, arrays=obs)
    if kind <= 4:  # bit flips anywhere in a valid observation
        frames = [
            bytearray(bytes(memoryview(f)))
            for f in p.encode(p.Observation(episode=0, chunk=1, step=1), robot=robot, seq=1, arrays=obs)
        ]
        for _ in range(int(rng.integers(1, 9))):
            f = frames[int(rng.integers(0, len(frames)))]
            if f:
                f[int(rng.integers(0, len(f)))] ^= 1 << int(rng.integers(0, 8))
        return [bytes(f) for f in frames]
    if kind == 5:
        return [rng.bytes(int(rng.integers(0, 300))) for _ in range(int(rng.integers(1, 4)))]
    if kind == 6:  # poisoned learning: the largest finite rewards, NaN executed actions
        rewards = np.array([rng.choice([3.4e38, -3.4e38, np.nan, 1e6])], np.float32)
        executed = np.zeros((1, 7)) if rng.random() < 0.5 else np.full((1, 7), np.nan)
        return p.encode(
            p.Transition(
                episode=0,
                chunk=1,
                policy_version=0,
                success=False,
                end="none",
                intervention=False,
                control="policy",
                safety_events=0,
            ),
            robot=robot,
            seq=1,
            arrays={"executed": executed, "rewards": rewards},
        )
    if kind == 7:  # shapes that overflow, too many dimensions, a contract nested deeply
        header = {
            "v": p.WIRE_VERSION,
            "type": "observation",
            "robot": robot,
            "seq": 1,
            "t_capture": 0.0,
            "t_send": 0.0,
            "blobs": [
                {
                    "name": "obs/ee_pos",
                    "dtype": "float32",
                    "shape": [2**31, 2**31, 0] if rng.random() < 0.5 else [1] * 12,
                }
            ],
            "body": {"episode": 0, "chunk": 1, "step": 0},
        }
        return [msgspec.msgpack.encode(header), b""]
    if kind == 8:  # a contract nested 20,000 deep (written by hand: no msgpack library encodes that)
        enc = msgspec.msgpack.encode
        body = (
            b"\x84"
            + enc("contract")
            + b"\x81\xa1a" * 20_000
            + b"\x80"
            + enc("task")
            + enc("reach")
            + enc("config_hash")
            + enc("\x1b[2J")
            + enc("robot_kind")
            + enc("sim\nforged")
        )
        header = {
            "v": p.WIRE_VERSION,
            "type": "hello",
            "robot": robot,
            "seq": 1,
            "t_capture": 0.0,
            "t_send": 0.0,
            "blobs": [],
            "body": msgspec.Raw(body),
        }
        return [enc(header)]
    # an oversized multipart: 3 blobs of 24 MiB, each under the frame limit, together over the message limit
    if rng.random() < 0.1:
        header = {
            "v": p.WIRE_VERSION,
            "type": "heartbeat",
            "robot": robot,
            "seq": 1,
            "t_capture": 0.0,
            "t_send": 0.0,
            "blobs": [{"name": f"b{i}", "dtype": "uint8", "shape": [len(big)]} for i in range(3)],
            "body": {},
        }
        return [msgspec.msgpack.encode(header), big, big, big]
    return p.encode(
        p.EpisodeEnd(episode=0, steps=1, success=False, end="time_limit", interventions=0),
        robot=robot,
        seq=1,
        arrays={"obs/ee_pos": np.full((1, 3), np.nan, np.float32)},
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("mode", "n"), [("off", 2000), ("sync", 600)])
def test_mixed_fuzz_from_several_clients_leaves_a_valid_robot_served(
    trained: tuple[Path, Path], tmp_path: Path, mode: str, n: int
) -> None:
    checkpoint, demos = trained
    cfg = cfg_for()
    learner = ServerLearner(cfg, checkpoint, Dataset(demos) if mode == "sync" else None, tmp_path / "srv", mode=mode)
    policy = ckpt.load_checkpoint(checkpoint).policy
    shapes = dict(policy.obs_shapes)
    rng = np.random.default_rng(1)
    big = memoryview(np.zeros(24 * 2**20, np.uint8))
    with served(learner, msgs_per_s=1e6, msg_burst=10**6) as server:
        valid = Client(server.endpoint, "valid", hello_for(cfg))
        valid.connect()
        fuzzers = []
        for i in range(3):
            f = Client(server.endpoint, f"fuzz{i}", hello_for(cfg))
            f.connect()
            fuzzers.append(f)
        gc.collect()
        before = rss_mib()
        checked = 0
        for i in range(n):
            f = fuzzers[i % 3]
            assert f.socket is not None
            f.socket.send_multipart(_fuzz(rng, shapes, f.robot, big), copy=False)
            if i % 20 == 0:
                obs = observation(shapes, rng)
                seq = valid.send(p.Observation(episode=0, chunk=1 + i, step=i), obs)
                msg = wait_for(valid, lambda m, s=seq: m.type == "action" and m.body.obs_seq == s, 30.0)
                assert msg is not None, f"the valid robot got no action after {i} fuzz messages"
                actions = msg.arrays["actions"]
                assert actions.shape == (policy.cfg.act_steps, 7) and np.isfinite(actions).all()
                if mode == "off":  # deterministic: bit-identical to the policy run here
                    with torch.no_grad():
                        expected = raw_actions(
                            policy,
                            policy.predict_normalized(
                                {k[4:]: torch.from_numpy(v)[None] for k, v in obs.items()}, deterministic=True
                            ),
                            1,
                        )[0]
                    np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-6)
                checked += 1
        fuzz_actions = []
        for f in fuzzers:  # whatever the fuzzers got back: never a non-finite action
            while (m := f.poll(0.2)) is not None:
                if m.type == "action":
                    fuzz_actions.append(m.arrays["actions"])
        gc.collect()
        after = rss_mib()
        stats = server.stats()
        for c in (valid, *fuzzers):
            c.close()
    rejected = {k: v for k, v in stats.items() if k.startswith("rejected_")}
    print(
        f"fuzz ({mode}): {n} hostile messages from 3 clients, {checked} valid round trips; RSS {before:.0f} -> "
        f"{after:.0f} MiB; rejected {stats['rejected']} {rejected}"
    )
    assert checked == n // 20
    assert stats["rejected_bad_observation"] > 0 and stats["rejected_bad_transition"] > 0
    assert stats["rejected_malformed"] > 0 and stats["rejected_oversized"] > 0
    assert stats.get("rejected_internal", 0) == 0
    assert all(np.isfinite(a).all() for a in fuzz_actions)
    assert after - before < 200, f"RSS grew {after - before:.0f} MiB"


@pytest.mark.timeout(60)
def test_one_bad_row_in_a_batch_costs_only_that_robot_its_action(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """Behind the boundary checks: a batch whose forward pass fails (torch's Normal refuses a NaN mean) is retried
    row by row, so the good rows still get their actions."""
    checkpoint, demos = trained
    learner = ServerLearner(cfg_for(), checkpoint, Dataset(demos), tmp_path / "srv", mode="sync")
    server = PolicyServer(learner, ServeOptions())
    try:
        rng = np.random.default_rng(0)
        shapes = dict(learner.policy.obs_shapes)
        good = {k[4:]: v for k, v in observation(shapes, rng).items()}
        bad = {k: v.copy() for k, v in good.items()}
        next(iter(bad.values()))[0, 0] = np.nan
        session = Session(b"x", [b"x"], "arm", "s", None, 0.0)  # type: ignore[arg-type]
        body = p.Observation(episode=0, chunk=0, step=0)
        results = server._infer(
            [Request(session, 1, body, good), Request(session, 2, body, bad), Request(session, 3, body, good)]
        )
        assert isinstance(results[0], tuple) and isinstance(results[2], tuple) and isinstance(results[1], str)
        assert np.isfinite(results[0][1]).all()
    finally:
        learner.close()


# -------------------------------------------------------------------------------------------------- poisoning
def _finite(state: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.timeout(120)
def test_poisoned_transitions_never_reach_a_checkpoint(trained: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, demos = trained
    cfg = cfg_for()
    out = tmp_path / "srv"
    # at the boundary: rewards outside the task's declared range and non-finite executed actions are refused
    with served(ServerLearner(cfg, checkpoint, Dataset(demos), tmp_path / "edge", mode="sync")) as server:
        client = Client(server.endpoint, "arm", hello_for(cfg))
        client.connect()
        for rewards, executed in (
            ([3.4e38], np.zeros((1, 7))),
            ([np.nan], np.zeros((1, 7))),
            ([0.5], np.full((1, 7), np.inf)),
            ([2.0], np.zeros((1, 7))),
        ):
            seq = client.send(
                p.Transition(
                    episode=0,
                    chunk=0,
                    policy_version=0,
                    success=False,
                    end="none",
                    intervention=False,
                    control="policy",
                    safety_events=0,
                ),
                {"executed": executed, "rewards": np.array(rewards, np.float32)},
            )
            reply = wait_for(client, lambda m, s=seq: m.type == "error" and m.body.ref_seq == s)
            assert reply is not None and reply.body.code == "bad_transition", rewards
        assert "declared range [0, 1]" in reply.body.reason
        client.close()
    # behind it (a learner fed directly): poison makes the update roll back, the learner carries on from there
    learner = ServerLearner(cfg, checkpoint, Dataset(demos), out, mode="sync")
    good_weights = {k: v.clone() for k, v in learner.actor.state_dict().items()}
    for poison in (3.4e38, float("nan"), -3.4e38):
        for t in _episodes(learner, 2, steps=6, reward=poison):
            learner.add_episode(t, finished_episode=True)
        row = learner.update()
        assert "rolled back" in row["rolled_back"] and learner.version == 0
        weights = learner.actor.state_dict()
        assert all(torch.equal(weights[k], v) for k, v in good_weights.items())  # the last good weights, exactly
    assert learner.rollbacks == 3
    for t in _episodes(learner, 2, steps=6, reward=1.0):
        learner.add_episode(t, finished_episode=True)
    row = learner.update()
    assert "rolled_back" not in row and learner.version == 1 and _finite(learner.actor.state_dict())
    learner.close()  # writes the final checkpoints
    assert _finite(ckpt.load_checkpoint(out / "last.pt").policy.state_dict())
    assert ckpt.safe_torch_load(out / "last.train.pt")["version"] == 1


@pytest.mark.timeout(60)
def test_non_finite_weights_are_never_written_nor_loaded(trained: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, _ = trained
    loaded = ckpt.load_checkpoint(checkpoint)
    policy = loaded.policy
    with torch.no_grad():
        next(iter(policy.parameters())).view(-1)[0] = float("nan")
    with pytest.raises(ckpt.CheckpointError, match=r"refusing to write .*NaN/inf"):
        ckpt.save_checkpoint(tmp_path / "nan.pt", policy, contract=loaded.contract, run_cfg=loaded.run_cfg, step=0)
    assert not (tmp_path / "nan.pt").exists()
    payload = torch.load(checkpoint, weights_only=True)  # a hostile file: NaN written past our writer
    name = next(k for k, v in payload["state_dict"].items() if v.is_floating_point() and v.numel())
    payload["state_dict"][name].view(-1)[0] = float("inf")
    torch.save(payload, tmp_path / "hostile.pt")
    with pytest.raises(ckpt.CheckpointError, match=r"hostile.pt is unusable: 1 tensor with NaN/inf values"):
        ckpt.load_checkpoint(tmp_path / "hostile.pt")
    result = runner.invoke(app, ["eval", "--checkpoint", str(tmp_path / "hostile.pt"), "--episodes", "1"])
    assert result.exit_code == 2 and "NaN/inf" in result.output and "Traceback" not in result.output


# ------------------------------------------------------------------------------------------------------ flood
@pytest.mark.timeout(120)
def test_a_flood_of_refused_hellos_does_not_starve_another_robot(trained: tuple[Path, Path], tmp_path: Path) -> None:
    cfg, learner = inference_only(trained, tmp_path)
    log: list[str] = []
    policy = learner.policy
    rng = np.random.default_rng(0)
    junk = {**run_contract(cfg).to_json_dict(), "x" * 3000: 1}  # an unknown contract key of 3,000 characters
    hello = p.encode(p.Hello(contract=junk, task="reach", config_hash="h", robot_kind="sim"), robot="flood", seq=1)
    with served(learner, log) as server:
        valid = Client(server.endpoint, "valid", hello_for(cfg))
        valid.connect()

        def round_trips(n: int) -> np.ndarray:
            times = []
            for i in range(n):
                seq = valid.send(p.Observation(episode=0, chunk=1 + i, step=i), observation(policy.obs_shapes, rng))
                tick = time.perf_counter()
                assert wait_for(valid, lambda m, s=seq: m.type == "action" and m.body.obs_seq == s, 10.0)
                times.append(time.perf_counter() - tick)
            return np.array(times) * 1e3

        quiet = round_trips(100)
        flooder = dealer(server.endpoint)
        stop = threading.Event()
        sent = [0]

        def flood() -> None:
            while not stop.is_set() and sent[0] < 10_000:
                flooder.send_multipart(hello, copy=False)
                sent[0] += 1

        thread = threading.Thread(target=flood, daemon=True)
        thread.start()
        loud = round_trips(200)
        stop.set()
        thread.join(10)
        time.sleep(0.3)
        stats = server.stats()
        valid.close()
        flooder.close(0)
    p99_quiet, p99_loud = np.percentile(quiet, 99), np.percentile(loud, 99)
    print(
        f"flood: {sent[0]} hellos sent while 200 valid round trips ran; valid robot's round trip p50/p99 "
        f"{np.median(quiet):.2f}/{p99_quiet:.2f} ms quiet, {np.median(loud):.2f}/{p99_loud:.2f} ms under the flood; "
        f"refused {stats['refused']}, rate-limited {stats.get('rejected_rate_limited', 0)}"
    )
    assert p99_loud < 100.0, f"p99 {p99_loud:.1f} ms under the flood"
    assert stats["refused"] + stats.get("rejected_rate_limited", 0) >= 0.9 * sent[0]
    refusal_lines = [line for line in log if "refused hello" in line]
    assert len(refusal_lines) == 1 and len(refusal_lines[0]) < 700  # the first one, bounded; the rest summarised


# -------------------------------------------------------------------------------------------- stalled episode
@pytest.mark.timeout(120)
def test_sync_learner_waits_for_a_stalled_episode_only_until_its_deadline(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint, demos = trained
    cfg = cfg_for()
    learner = ServerLearner(cfg, checkpoint, Dataset(demos), tmp_path / "srv", mode="sync")
    shapes = learner.policy.obs_shapes
    rng = np.random.default_rng(0)
    log: list[str] = []
    with served(learner, log, episode_deadline_s=1.5, robot_timeout_s=30.0) as server:
        staller, worker = (Client(server.endpoint, r, hello_for(cfg)) for r in ("staller", "worker"))
        staller.connect()
        worker.connect()
        seq = staller.send(p.Observation(episode=0, chunk=0, step=0), observation(shapes, rng))
        assert wait_for(staller, lambda m: m.type == "action" and m.body.obs_seq == seq)  # now it is mid-episode
        for episode in range(2):  # the worker finishes the episodes an update needs
            seq = worker.send(p.Observation(episode=episode, chunk=0, step=0), observation(shapes, rng))
            assert wait_for(worker, lambda m, s=seq: m.type == "action" and m.body.obs_seq == s)
            worker.send(
                p.Transition(
                    episode=episode,
                    chunk=0,
                    policy_version=0,
                    success=False,
                    end="time_limit",
                    intervention=False,
                    control="policy",
                    safety_events=0,
                ),
                {"executed": np.zeros((1, 7)), "rewards": np.zeros(1, np.float32)},
            )
            worker.send(p.EpisodeEnd(episode=episode, steps=1, success=False, end="time_limit", interventions=0))
        tick = time.monotonic()
        for _ in range(50):  # parked: repeated requests replace each other, the parked list stays bounded
            seq = worker.send(p.Observation(episode=2, chunk=0, step=0), observation(shapes, rng))
        assert len(server.parked) <= 1
        beats = threading.Event()

        def heartbeats() -> None:  # the staller only sends heartbeats, as long as it likes
            while not beats.is_set():
                staller.send(p.Heartbeat(state="stalling"))
                time.sleep(0.2)

        thread = threading.Thread(target=heartbeats, daemon=True)
        thread.start()
        answer = wait_for(worker, lambda m, s=seq: m.type == "action" and m.body.obs_seq == s, 20.0)
        waited = time.monotonic() - tick
        beats.set()
        thread.join(5)
        stats = server.stats()
        staller.close()
        worker.close()
    assert answer is not None and answer.body.policy_version == 1
    print(f"the parked robot waited {waited:.2f} s for a staller (deadline 1.5 s)")
    assert 1.4 <= waited < 6.0 and stats["episodes_left_out"] == 1
    assert any("left out of learning" in line for line in log)


# --------------------------------------------------------------------------------------------------- identity
@pytest.mark.timeout(90)
def test_a_second_connection_cannot_take_over_a_live_robot_id(trained: tuple[Path, Path], tmp_path: Path) -> None:
    cfg, learner = inference_only(trained, tmp_path)
    log: list[str] = []
    shapes = learner.policy.obs_shapes
    rng = np.random.default_rng(0)
    with served(learner, log, robot_timeout_s=1.0) as server:
        owner = Client(server.endpoint, "arm1", hello_for(cfg))
        owner.connect()
        hijacker = dealer(server.endpoint)
        for attempt in range(20):
            hijacker.send_multipart(p.encode(hello_for(cfg), robot="arm1", seq=attempt))
            reply = wait_for(hijacker, lambda m: m.type in ("error", "welcome", "refused"))
            assert reply is not None and reply.type == "error" and reply.body.code == "id_in_use"
        hijacker.send_multipart(
            p.encode(p.Observation(episode=0, chunk=0, step=0), robot="arm1", seq=99, arrays=observation(shapes, rng))
        )
        reply = wait_for(hijacker, lambda m: m.type in ("error", "action"))
        assert reply is not None and reply.type == "error" and reply.body.code == "not_welcomed"
        seq = owner.send(p.Observation(episode=0, chunk=0, step=0), observation(shapes, rng))
        assert wait_for(owner, lambda m: m.type == "action" and m.body.obs_seq == seq)  # still the owner's
        assert [s.robot for s in server.sessions.values()] == ["arm1"]
        owner.close()  # it goes silent: after robot_timeout_s the id is free again
        time.sleep(1.6)
        hijacker.send_multipart(p.encode(hello_for(cfg), robot="arm1", seq=100))
        assert wait_for(hijacker, lambda m: m.type == "welcome")
        hijacker.close(0)
    assert sum("refused hello as 'arm1' from another connection" in line for line in log) == 1


@pytest.mark.timeout(90)
def test_curve_keys_bind_robot_ids_and_revocation_needs_no_restart(trained: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, _ = trained
    cfg = cfg_for()
    keys = tmp_path / "keys"
    generate(keys, ["arm1", "arm2"])
    log: list[str] = []

    def keyed(robot: str, key: str) -> BridgeClient:
        return Client(
            server.endpoint, robot, hello_for(cfg), client_keys(keys / f"{key}.key_secret", keys / "server.key")
        )

    learner = ServerLearner(cfg, checkpoint, None, tmp_path / "srv", mode="off")
    with served(learner, log, keys=server_keys(keys)) as server:
        arm1 = keyed("arm1", "arm1")
        arm1.connect()
        with pytest.raises(Refusal) as info:  # arm2's (allow-listed) key claiming arm1
            keyed("arm1", "arm2").connect()
        assert info.value.code == "identity" and "only connect as robot 'arm2'" in info.value.reason
        again = keyed("arm1", "arm1")  # the same key on a new connection: a reconnect, it replaces the old session
        again.connect()
        assert len(server.sessions) == 1
        arm2 = keyed("arm2", "arm2")
        arm2.connect()
        (keys / "authorized" / "arm2.key").unlink()  # revoked, while arm2 is connected
        time.sleep(1.5)
        arm2.send(p.Heartbeat())
        reply = wait_for(arm2, lambda m: m.type in ("error", "heartbeat"))
        assert reply is not None and reply.type == "error" and reply.body.code == "not_welcomed"
        with pytest.raises(Refusal) as info:
            keyed("arm2", "arm2").connect(timeout_s=3.0)
        assert info.value.code == "key"
        for _ in range(20):  # refused handshakes: logged once, then summarised
            with contextlib.suppress(Refusal, Exception):
                keyed("arm2", "arm2").connect(timeout_s=0.3)
        time.sleep(1.2)
        stats = server.stats()
    assert stats["handshakes_refused"] >= 2 and stats["robots"] == "arm1"
    assert sum("refused a CURVE handshake" in line for line in log) == 1
    assert any("key revoked" in line or "no longer allow-listed" in line for line in log)


def test_key_hygiene_is_refused_with_the_file_named(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    generate(keys, ["arm1"])
    keys.chmod(0o700)
    (keys / "authorized").chmod(0o700)
    server_keys(keys)  # as generated: fine
    secret = keys / "server.key_secret"
    secret.chmod(0o644)
    with pytest.raises(SecurityError, match=r"server.key_secret is readable by group/others .*chmod 600"):
        server_keys(keys)
    secret.chmod(0o600)
    (keys / "authorized").chmod(0o777)
    with pytest.raises(SecurityError, match=r"authorized is writable by group/others"):
        server_keys(keys)
    (keys / "authorized").chmod(0o700)
    (keys / "authorized" / "empty.key").write_text("")
    with pytest.raises(SecurityError, match=r"authorized/empty.key is unreadable"):
        server_keys(keys)
    (keys / "authorized" / "empty.key").unlink()
    os.rename(secret, keys / "real_secret")
    secret.symlink_to(keys / "real_secret")
    with pytest.raises(SecurityError, match="is a symlink"):
        server_keys(keys)


def test_log_lines_escape_what_a_client_sent(trained: tuple[Path, Path], tmp_path: Path) -> None:
    cfg, learner = inference_only(trained, tmp_path)
    log: list[str] = []
    with served(learner, log) as server:
        hello = p.Hello(
            contract=run_contract(cfg).to_json_dict(),
            task="reach",
            config_hash="\x1b[2J\nforged",
            robot_kind="sim\nserve robot 'root' connected",
        )
        c = Client(server.endpoint, "arm", hello)
        c.connect()
        c.close()
    text = "\n".join(log)
    assert "\x1b" not in text and all("\n" not in line for line in log) and "\\n" in text


def test_an_ipv6_loopback_bind_that_passes_the_check_also_binds(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    checkpoint, _ = trained
    learner = ServerLearner(cfg_for(), checkpoint, None, tmp_path / "srv", mode="off")
    server = PolicyServer(learner, ServeOptions(bind="tcp://[::1]:*"))
    try:
        assert server.start().startswith("tcp://[::1]:")
    finally:
        server.close()
        learner.close()
