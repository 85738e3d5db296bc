"""The robot bridge end to end: real ZMQ sockets over TCP loopback, real simulated robots, real run folders.

Servers run either in a thread of this process (`served`) or as `inril-robot serve` subprocesses (when a test kills
them); agents run in threads (simulated robots, unpaced unless the test is about timing) or as `inril-robot
finetune --server` subprocesses (when a test kills them). Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import zmq
from typer.testing import CliRunner

from inril_robot.bridge import protocol as p
from inril_robot.bridge.agent import AgentOptions, AgentResult, RobotAgent
from inril_robot.bridge.client import BridgeClient, Refusal
from inril_robot.bridge.launch import LocalServer
from inril_robot.bridge.learning import ServerLearner
from inril_robot.bridge.security import client_keys, generate, server_keys
from inril_robot.bridge.server import PolicyServer, ServeOptions
from inril_robot.cli import app
from inril_robot.config import RunConfig, load_config
from inril_robot.data import Dataset
from inril_robot.learning.inril.common import evaluate
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.pretrain import pretrain
from inril_robot.learning.rl.rollouts import EpisodeTrace, raw_actions
from inril_robot.learning.rl.vec_env import VecEnv
from inril_robot.runtime.env import RobotEnv
from tests.test_pretrain import reach_cfg, record_demos

runner = CliRunner()
# fine-tuning settings small enough for CI; IL steps do much of the early work on an under-trained BC policy
FT = [
    "finetune.episodes_per_iteration=8",
    "finetune.ppo.minibatch_size=32",
    "finetune.ppo.epochs=2",
    "finetune.ppo.critic_warmup_iterations=0",
    "finetune.ppo.target_kl=null",
    "finetune.inril.il_every=1",
    "finetune.inril.il_steps=4",
    "finetune.inril.il_batch_size=64",
    "finetune.inril.il_lr=1e-3",
    "finetune.inril.il_lr_ratio=null",
    "finetune.guard.enabled=false",
]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Dataset]:
    """An under-trained reach BC policy (about 10% success) and its demonstrations."""
    root = tmp_path_factory.mktemp("bridge")
    demos = record_demos(root / "demos", "reach", 10)
    result = pretrain(reach_cfg(overrides=["train.steps=300", "train.eval_every=0"]), demos, root / "pre", resume=False)
    return Path(result.last_checkpoint), demos


def cfg_for(*overrides: str) -> RunConfig:
    return load_config(robot="sim", task="reach", overrides=[*FT, *overrides])


@contextlib.contextmanager
def served(learner: ServerLearner, log: list[str] | None = None, **options: object) -> Iterator[PolicyServer]:
    """A server on a free loopback port, its loop in a thread (its log lines appended to `log`); on exit the loop
    must still be running (nothing a test sent stopped it)."""
    server = PolicyServer(
        learner,
        ServeOptions(bind="tcp://127.0.0.1:*", **options),  # type: ignore[arg-type]
        log=log.append if log is not None else None,
    )
    server.start()
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop.is_set,), daemon=True)
    thread.start()
    try:
        yield server
        assert thread.is_alive(), "the serving loop exited"
    finally:
        stop.set()
        thread.join(10)
        server.close()
        learner.close()


def run_agent(
    cfg: RunConfig, endpoint: str, results: list[AgentResult], status: list[dict] | None = None, **options: object
) -> threading.Thread:
    def go() -> None:
        with RobotEnv(cfg) as env:
            agent = RobotAgent(
                cfg,
                env,
                AgentOptions(server=endpoint, **options),  # type: ignore[arg-type]
                on_status=status.append if status is not None else None,
            )
            results.append(agent.run())

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def success_rate(cfg: RunConfig, checkpoint: Path, episodes: int) -> float:
    policy = ckpt.load_checkpoint(checkpoint).policy
    with VecEnv(cfg, 1, list(policy.obs_shapes), policy.cfg.n_obs_steps, subprocess=False) as vec:
        return evaluate(vec, policy, episodes, torch.device("cpu"))["success"]["rate"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hello_for(cfg: RunConfig) -> p.Hello:
    from inril_robot.learning.pretrain import run_contract

    return p.Hello(contract=run_contract(cfg).to_json_dict(), task=cfg.task.name, config_hash="test", robot_kind="sim")


# ------------------------------------------------------------------------------------------ fine-tuning
def test_finetune_through_the_bridge_improves_reach(pretrained: tuple[Path, Dataset], tmp_path: Path) -> None:
    """`finetune --robot sim --bridge`: a local `serve` process, the agent in this process, then evaluation."""
    checkpoint, demos = pretrained
    started = time.perf_counter()
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "finetune",
            "--robot",
            "sim",
            "--bridge",
            "--checkpoint",
            str(checkpoint),
            "--demos",
            str(demos.root),
            "--out",
            str(out),
            "--speed",
            "0",
            "--episodes",
            "80",
            "--json",
            *[a for s in FT for a in ("--set", s)],
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["episodes"] == 80 and payload["stopped"] is None and payload["watchdog_holds"] == 0
    assert len(Dataset(out / "episodes")) == 80  # every step recorded, episode by episode
    trained = ckpt.load_checkpoint(out / "server" / "last.pt")
    assert trained.extra["policy_version"] >= 8 and trained.extra["trained_by"] == "inril-robot serve"
    cfg = cfg_for()
    before, after = success_rate(cfg, checkpoint, 40), success_rate(cfg, out / "server" / "last.pt", 40)
    print(
        f"reach through the bridge: success {before:.0%} -> {after:.0%} after {payload['env_steps']} env steps, "
        f"{time.perf_counter() - started:.0f} s"
    )
    assert after >= before + 0.1


def test_four_robots_fine_tune_against_one_server(pretrained: tuple[Path, Dataset], tmp_path: Path) -> None:
    checkpoint, demos = pretrained
    cfg = cfg_for("task.max_steps=20", "finetune.episodes_per_iteration=4")
    learner = ServerLearner(cfg, checkpoint, demos, tmp_path / "srv", mode="async")
    results: list[AgentResult] = []
    with served(learner) as server:
        threads = [
            run_agent(
                cfg,
                server.endpoint,
                results,
                robot_id=f"arm{i}",
                episodes=4,
                speed=0,
                seed_offset=1000 * i,
                record=tmp_path / f"arm{i}",
            )
            for i in range(4)
        ]
        seen: set[str] = set()
        while any(t.is_alive() for t in threads):
            seen |= {s.robot for s in server.sessions.values()}
            time.sleep(0.01)
        stats = server.stats()
    assert seen == {"arm0", "arm1", "arm2", "arm3"}
    assert sorted(r.robot for r in results) == ["arm0", "arm1", "arm2", "arm3"]
    assert all(r.episodes == 4 and r.stopped is None for r in results)
    assert stats["episodes"] == 16 and stats["actions"] == stats["transitions"] == sum(r.env_steps for r in results)
    assert learner.version >= 3 and stats["rejected"] == 0
    assert max(max(r.policy_versions) for r in results) >= 1  # robots got swapped-in weights


def test_interventions_are_flagged_recorded_and_fed_to_il(pretrained: tuple[Path, Dataset], tmp_path: Path) -> None:
    from inril_robot.hardware import Teleop, TeleopCommand

    class ExpertTakesOver(Teleop):
        """The scripted expert takes control for steps 2..4 of every episode (a real teleop would be a human)."""

        def __init__(self, env: RobotEnv) -> None:
            self.env = env

        def read(self) -> TeleopCommand:
            a = self.env.expert_action()
            return TeleopCommand(
                delta_pos=a[:3], delta_rot=a[3:6], gripper=float(a[6]), intervene=2 <= self.env.steps < 5
            )

    checkpoint, demos = pretrained
    cfg = cfg_for("task.max_steps=15")
    learner = ServerLearner(cfg, checkpoint, demos, tmp_path / "srv", mode="sync")
    with served(learner) as server, RobotEnv(cfg) as env:
        options = AgentOptions(server=server.endpoint, episodes=2, speed=0, record=tmp_path / "store")
        result = RobotAgent(cfg, env, options, teleop=ExpertTakesOver(env)).run()
    assert result.interventions == 2 * 3 and result.stopped is None
    episode = Dataset(tmp_path / "store")[0]
    flags = episode.load("intervention")
    assert flags[2:5].all() and not flags[:2].any() and not flags[5:].any()
    assert (episode.load("control")[2:5] == 1).all()  # "human"
    assert learner.interventions.total == 6  # (history, executed chunk) pairs for the IL batches


# ------------------------------------------------------------------------------------------------ faults
def test_server_killed_mid_episode_agent_holds_then_carries_on(
    pretrained: tuple[Path, Dataset], tmp_path: Path
) -> None:
    checkpoint, demos = pretrained
    cfg = cfg_for("task.max_steps=20")
    bind = f"tcp://127.0.0.1:{free_port()}"
    args = ["--checkpoint", str(checkpoint), "--demos", str(demos.root), *[a for s in FT for a in ("--set", s)]]
    server = LocalServer(args, tmp_path / "srv", tmp_path, bind=bind)
    results: list[AgentResult] = []
    status: list[dict] = []
    thread = run_agent(cfg, server.endpoint, results, status, episodes=2, speed=1.0, reconnect_after_s=0.5)
    env_steps_before = _wait_for(lambda: status[-1]["env_steps"] if status else 0, minimum=5)
    server.proc.send_signal(signal.SIGKILL)  # mid-episode: the agent is waiting for its next chunk any moment
    server.proc.wait()
    killed_at = time.time()
    time.sleep(1.5)
    replacement = LocalServer([*args, "--resume"], tmp_path / "srv", tmp_path, bind=bind)
    try:
        thread.join(120)
    finally:
        replacement.stop()
    assert not thread.is_alive()
    (result,) = results
    assert result.stopped is None and result.episodes == 2
    assert result.watchdog_holds >= 1 and result.reconnects >= 1
    first_hold = result.hold_events[0]
    period = 1.0 / cfg.robot.control_hz
    assert first_hold["after_request_s"] <= 2 * period + 0.05  # held within two control periods of asking
    assert first_hold["time"] - killed_at <= 3 * period + 0.1  # (the request went out at most one period after)
    assert any("reconnecting" in f or "nothing heard" in f for f in result.faults)
    assert env_steps_before >= 5


def _wait_for(probe: object, minimum: int, timeout_s: float = 60.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()  # type: ignore[operator]
        if value >= minimum:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_agent_killed_server_keeps_serving_others_and_its_learner(
    pretrained: tuple[Path, Dataset], tmp_path: Path, mode: str
) -> None:
    checkpoint, demos = pretrained
    cfg = cfg_for("task.max_steps=20", "finetune.episodes_per_iteration=2")
    learner = ServerLearner(cfg, checkpoint, demos, tmp_path / "srv", mode=mode)
    with served(learner, robot_timeout_s=1.0) as server:
        doomed = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inril_robot.cli",
                "finetune",
                "--robot",
                "sim",
                "--server",
                server.endpoint,
                "--robot-id",
                "doomed",
                "--checkpoint",
                str(checkpoint),
                "--out",
                str(tmp_path / "doomed"),
                "--speed",
                "1",
                "--episodes",
                "100",
                "--json",
                *[a for s in FT for a in ("--set", s)],
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            _wait_for(lambda: int(any(s.robot == "doomed" and s.mid_episode for s in server.sessions.values())), 1)
        finally:
            doomed.kill()
            doomed.wait()
        version_at_kill = learner.version
        results: list[AgentResult] = []
        run_agent(cfg, server.endpoint, results, robot_id="survivor", episodes=6, speed=0).join(120)
        # the async learner never parks the survivor, which can finish before the dead robot's timeout
        _wait_for(lambda: int(all(s.robot != "doomed" for s in server.sessions.values())), 1, timeout_s=10.0)
        stats = server.stats()
    (survivor,) = results
    assert survivor.episodes == 6 and survivor.stopped is None and survivor.watchdog_holds == 0
    assert learner.version >= version_at_kill + 2  # the learner kept going from where it was
    assert "doomed" not in stats["robots"].split(",")
    state = ckpt.safe_torch_load(tmp_path / "srv" / "last.train.pt")
    assert state["version"] == learner.version and state["learner"]["iterations"] == learner.version


def _wait_until(done: object, learner: ServerLearner, timeout_s: float = 60.0, failure_ok: bool = False) -> None:
    """Poll the async learner (as the serving loop does) until `done()`."""
    deadline = time.monotonic() + timeout_s
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        assert failure_ok or learner.failure is None, learner.failure
        learner.poll()
        time.sleep(0.02)


def _episodes(learner: ServerLearner, n: int, steps: int = 10, reward: float | None = None) -> list[EpisodeTrace]:
    """Episodes sampled by `learner`'s serving actor on random observations; rewards random 0/1 or all `reward`."""
    rng = np.random.default_rng(0)
    shapes = learner.policy.obs_shapes
    traces = []
    for e in range(n):
        t = EpisodeTrace(seed=e)
        for _ in range(steps):
            history = {
                k: rng.standard_normal((learner.policy.cfg.n_obs_steps, *s)).astype(np.float32)
                for k, s in shapes.items()
            }
            t.obs.append(history)
            t.kept.append(learner.infer([history])[2][0])
            t.rewards.append(float(rng.random() < 0.2) if reward is None else reward)
            t.steps += 1
        t.final_obs = t.obs[-1]
        traces.append(t)
    return traces


def test_async_learner_process_resumes_and_a_crash_is_reported(
    pretrained: tuple[Path, Dataset], tmp_path: Path
) -> None:
    """The async learner is a separate process: it trains, checkpoints and resumes like the sync one, exits with
    the server, and its death is reported while inference carries on with the last weights."""
    checkpoint, demos = pretrained
    cfg = cfg_for("finetune.episodes_per_iteration=2")
    learner = ServerLearner(cfg, checkpoint, demos, tmp_path / "srv", mode="async")
    process = learner.process
    assert process is not None and process.proc.pid != os.getpid() and process.proc.is_alive()
    served_before = {k: v.clone() for k, v in learner._serving[1].state_dict().items()}
    for trace in _episodes(learner, 4):
        learner.add_episode(trace, finished_episode=True)
    _wait_until(lambda: learner.version == 2, learner)
    assert learner.env_steps == 40 and learner.in_flight == 0 and learner.failure is None
    served = learner._serving[1].state_dict()
    assert any(not torch.equal(served[k], served_before[k]) for k in served)  # new weights were swapped in
    learner.close()
    assert process.exit_code == 0 and not process.proc.is_alive() and learner.failure is None
    state = ckpt.safe_torch_load(tmp_path / "srv" / "last.train.pt")
    assert state["version"] == 2 and state["episodes"] == 4 and state["learner"]["iterations"] == 2
    trained = ckpt.load_checkpoint(tmp_path / "srv" / "last.pt").policy.state_dict()

    resumed = ServerLearner(cfg, checkpoint, demos, tmp_path / "srv", mode="async", resume=True)
    try:
        assert (resumed.version, resumed.env_steps, resumed.episodes) == (2, 40, 4)
        weights = resumed._serving[1].policy.state_dict()
        assert all(torch.equal(weights[k], v) for k, v in trained.items())  # serving the resumed weights
        assert resumed.process is not None
        os.kill(resumed.process.proc.pid, signal.SIGKILL)
        _wait_until(lambda: resumed.failure is not None, resumed, failure_ok=True)
        assert "learner process exited unexpectedly" in (resumed.failure or "") and not resumed.learning
        version, actions, _ = resumed.infer([t.obs[0] for t in _episodes(resumed, 1, steps=1)])
        assert version == 2 and np.all(np.isfinite(actions))
        resumed.add_episode(_episodes(resumed, 1)[0], finished_episode=True)  # ignored, not queued for a dead process
    finally:
        started = time.monotonic()
        resumed.close()
    assert time.monotonic() - started < 10 and not resumed.process.proc.is_alive()


# ------------------------------------------------------------------------------------------------ fuzzing
def test_fuzzed_server_keeps_answering_a_valid_client(pretrained: tuple[Path, Dataset], tmp_path: Path) -> None:
    checkpoint, _ = pretrained
    cfg = cfg_for()
    learner = ServerLearner(cfg, checkpoint, None, tmp_path / "srv", mode="off")
    policy = ckpt.load_checkpoint(checkpoint).policy
    keys = list(policy.obs_shapes)
    rng = np.random.default_rng(0)
    sent = 0
    with served(learner, msgs_per_s=1e6, msg_burst=10**6) as server:  # decoding is tested here, budgets elsewhere
        client = BridgeClient(server.endpoint, "valid", hello_for(cfg))
        client.connect()
        fuzzer = zmq.Context.instance().socket(zmq.DEALER)
        fuzzer.setsockopt(zmq.LINGER, 0)
        fuzzer.connect(server.endpoint)
        checked = 0
        for i in range(3000):
            fuzzer.send_multipart(_fuzz_frames(rng, keys), copy=True)
            sent += 1
            if i % 100 == 0:  # meanwhile the valid robot keeps getting the right actions
                history = {k: rng.uniform(-1, 1, (1, *policy.obs_shapes[k])).astype(np.float32) for k in keys}
                seq = client.send(
                    p.Observation(episode=0, chunk=1 + i, step=i), {f"obs/{k}": v for k, v in history.items()}
                )
                msg = client.poll(5.0)
                while msg is not None and not (msg.type == "action" and msg.body.obs_seq == seq):
                    msg = client.poll(5.0)
                assert msg is not None, "the server stopped answering the valid client"
                obs = {k: torch.from_numpy(v)[None] for k, v in history.items()}
                with torch.no_grad():
                    expected = raw_actions(policy, policy.predict_normalized(obs, deterministic=True), 1)[0]
                np.testing.assert_allclose(msg.arrays["actions"], expected, rtol=1e-5, atol=1e-6)
                checked += 1
        with socket.create_connection(("127.0.0.1", int(server.endpoint.rsplit(":", 1)[1]))) as raw:
            raw.sendall(rng.bytes(4096))  # not even ZMQ: libzmq drops the connection
        replies = 0
        deadline = time.monotonic() + 60.0  # a loaded machine answers late, not never
        while replies < sent and time.monotonic() < deadline:
            if fuzzer.poll(500):
                fuzzer.recv_multipart()
                replies += 1
        time.sleep(0.2)
        stats = server.stats()
        client.close()
        fuzzer.close(0)
    assert checked == 30
    # every one was counted and answered: an error, or a refusal for the bad hellos
    assert stats["rejected"] + stats["refused"] >= 0.99 * sent and replies >= 0.99 * sent
    assert stats["rejected_malformed"] > 0 and stats["rejected_oversized"] > 0 and stats["rejected_schema"] > 0
    assert stats["rejected_not_welcomed"] > 0 and stats["rejected_unknown_type"] > 0
    assert stats["actions"] == checked  # nothing the fuzzer sent produced an action


def _fuzz_frames(rng: np.random.Generator, keys: list[str]) -> list[bytes]:
    kind = rng.integers(0, 8)
    if kind == 0:
        return [rng.bytes(int(rng.integers(0, 200)))]
    if kind == 1:
        return [rng.bytes(int(rng.integers(1, 50))) for _ in range(int(rng.integers(1, 5)))]
    header = {
        "v": p.WIRE_VERSION,
        "type": str(rng.choice(["observation", "transition", "episode_end", "hello", "action", "nonsense"])),
        "robot": "fuzz",
        "seq": int(rng.integers(0, 1000)),
        "t_capture": 0.0,
        "t_send": 0.0,
        "blobs": [],
        "body": {},
    }
    if kind == 2:
        header["v"] = int(rng.choice([v for v in range(1, 100) if v != p.WIRE_VERSION]))
    elif kind == 3:
        header["body"] = {"episode": int(rng.integers(-5, 5)), "chunk": "x"}
    elif kind == 4:
        header["blobs"] = [{"name": f"obs/{keys[0]}", "dtype": "float32", "shape": [1, 3]}]
        header["type"], header["body"] = "observation", {"episode": 0, "chunk": 0, "step": 0}
        return [_pack(header), rng.bytes(int(rng.integers(0, 24)))]
    elif kind == 5:
        header["type"], header["body"] = "heartbeat", {}
        header["blobs"] = [{"name": "a", "dtype": "float64", "shape": [int(rng.integers(10**6, 10**9))] * 3}]
        return [_pack(header), b""]
    elif kind == 6:
        header["type"], header["body"] = (
            "hello",
            {"contract": {"control_hz": -1}, "task": "reach", "config_hash": "x", "robot_kind": "sim"},
        )
    else:
        header["type"] = "observation"
        header["body"] = {"episode": 0, "chunk": 1, "step": 0}  # well-formed, but this peer never said hello
    return [_pack(header)]


def _pack(header: dict) -> bytes:
    import msgspec

    return msgspec.msgpack.encode(header)


# ----------------------------------------------------------------------------------------------- security
def test_non_loopback_bind_without_keys_refuses_to_start(pretrained: tuple[Path, Dataset], tmp_path: Path) -> None:
    checkpoint, demos = pretrained
    result = runner.invoke(
        app,
        [
            "serve",
            "--checkpoint",
            str(checkpoint),
            "--demos",
            str(demos.root),
            "--bind",
            "tcp://0.0.0.0:5599",
            "--out",
            str(tmp_path / "srv"),
        ],
    )
    assert result.exit_code == 2
    assert "refusing to bind tcp://0.0.0.0:5599 without authentication" in result.output
    assert not (tmp_path / "srv").exists()


def test_curve_server_gives_no_actions_to_an_unknown_key(pretrained: tuple[Path, Dataset], tmp_path: Path) -> None:
    checkpoint, _ = pretrained
    cfg = cfg_for()
    generate(tmp_path / "keys", ["arm1"])
    generate(tmp_path / "other", ["stranger"])  # a valid key pair, but not in the server's allow list
    learner = ServerLearner(cfg, checkpoint, None, tmp_path / "srv", mode="off")
    with served(learner, keys=server_keys(tmp_path / "keys")) as server:
        known = BridgeClient(
            server.endpoint,
            "arm1",
            hello_for(cfg),
            client_keys(tmp_path / "keys" / "arm1.key_secret", tmp_path / "keys" / "server.key"),
        )
        assert known.connect().obs_keys
        stranger = BridgeClient(
            server.endpoint,
            "stranger",
            hello_for(cfg),
            client_keys(tmp_path / "other" / "stranger.key_secret", tmp_path / "keys" / "server.key"),
        )
        with pytest.raises(Refusal) as info:
            stranger.connect(timeout_s=3.0)
        assert info.value.code == "key" and "allow list" in info.value.reason
        plain = BridgeClient(server.endpoint, "plain", hello_for(cfg))  # no CURVE at all
        with pytest.raises(Exception, match=r"handshake|no answer"):
            plain.connect(timeout_s=1.0)
        stats = server.stats()
        for c in (known, stranger, plain):
            c.close()
    assert stats["welcomed"] == 1 and stats.get("actions", 0) == 0 and stats["robots"] == "arm1"


def test_handshake_refusals_name_the_reason(pretrained: tuple[Path, Dataset], tmp_path: Path) -> None:
    checkpoint, _ = pretrained
    cfg = cfg_for()
    learner = ServerLearner(cfg, checkpoint, None, tmp_path / "srv", mode="off")
    with served(learner) as server:
        wrong_rate = BridgeClient(server.endpoint, "fast", hello_for(cfg_for("robot.control_hz=20")))
        with pytest.raises(Refusal) as info:
            wrong_rate.connect()
        assert info.value.code == "contract" and info.value.field == "control_hz"
        lift = load_config(robot="sim", task="lift")
        wrong_task = BridgeClient(server.endpoint, "lifter", hello_for(lift))
        with pytest.raises(Refusal) as info:
            wrong_task.connect()
        assert info.value.code == "contract"  # lift observes the cube: the contract differs before the task does
        future = zmq.Context.instance().socket(zmq.DEALER)
        future.connect(server.endpoint)
        future.send(_pack({"v": 99, "type": "hello", "robot": "future", "seq": 1, "body": {}}))
        assert future.poll(5000)
        reply = p.decode(future.recv_multipart())
        assert reply.type == "refused" and reply.body.code == "schema" and "wire version 99" in reply.body.reason
        future.close(0)
        for c in (wrong_rate, wrong_task):
            c.close()


def test_agent_survives_an_arm_fault_and_the_faulted_episode_is_never_learned(
    pretrained: tuple[Path, Dataset], tmp_path: Path
) -> None:
    """An arm fault mid-episode (injected: the simulator has no reflexes; on franky-sim see tests/test_franka.py)
    -> pause with the reason, the operator confirms, recover, home, next episode; the faulted episode is not in the
    recorded store nor in the learner's episodes."""
    from inril_robot.core.seeds import train_seed
    from inril_robot.core.state import RobotState
    from inril_robot.hardware import Robot, RobotFault

    class FaultsOnce(Robot):
        def __init__(self, inner: Robot, at_apply: int) -> None:
            self.inner, self.at_apply, self.applies, self.recovered = inner, at_apply, 0, 0

        def apply(self, action: np.ndarray) -> None:
            self.applies += 1
            if self.applies == self.at_apply:
                raise RobotFault("motion aborted by reflex! [cartesian_reflex]")
            self.inner.apply(action)

        def recover(self) -> None:
            self.recovered += 1

        def connect(self) -> None:
            self.inner.connect()

        def state(self) -> RobotState:
            return self.inner.state()

        def hold(self) -> None:
            self.inner.hold()

        def home(self) -> None:
            self.inner.home()

        def stop(self) -> None:
            self.inner.stop()

        def close(self) -> None:
            self.inner.close()

        def __getattr__(self, name: str) -> object:
            return getattr(self.inner, name)

    checkpoint, demos = pretrained
    cfg = cfg_for("task.max_steps=10", "finetune.episodes_per_iteration=100")
    learner = ServerLearner(cfg, checkpoint, demos, tmp_path / "srv", mode="sync")
    confirmations: list[str] = []
    said: list[str] = []
    with served(learner) as server, RobotEnv(cfg) as env:
        env.robot = FaultsOnce(env.robot, at_apply=14)  # step 4 of episode 1
        options = AgentOptions(server=server.endpoint, episodes=3, speed=0, record=tmp_path / "store")
        result = RobotAgent(cfg, env, options, prompt=confirmations.append, say=said.append).run()
        assert env.robot.recovered == 1
        pending = [t.seed for t in learner.pending]
    assert result.stopped is None and result.faulted_episodes == 1 and result.episodes == 3, result
    assert len(confirmations) == 1 and any("PAUSED" in s and "cartesian_reflex" in s for s in said)
    assert "episode 1" in result.faults[0]
    assert 1 not in pending and len(pending) == 3 and learner.episodes == 3  # episodes 0, 2, 3; never 1
    store = Dataset(tmp_path / "store")
    assert sorted(e.meta["seed"] for e in store.episodes) == sorted(train_seed(cfg.seed, i) for i in (0, 2, 3))


def test_shadow_mode_transitions_are_marked_and_never_learned(pretrained: tuple[Path, Dataset], tmp_path: Path) -> None:
    """A real robot without --execute (shadow mode: the arm holds) runs the whole loop, but its transitions carry
    control "none" and the server refuses them: nothing reaches the learner; the store marks the episodes shadow."""
    from inril_robot.runtime.registry import make_robot
    from inril_robot.runtime.shadow import ShadowRobot
    from inril_robot.tasks import make_task

    checkpoint, demos = pretrained
    cfg = cfg_for("task.max_steps=8", "finetune.episodes_per_iteration=100")
    learner = ServerLearner(cfg, checkpoint, demos, tmp_path / "srv", mode="sync")
    robot = ShadowRobot(make_robot(cfg, make_task(cfg.task).scene_objects()))
    with served(learner) as server, RobotEnv(cfg, robot=robot) as env:
        options = AgentOptions(server=server.endpoint, episodes=2, speed=0, record=tmp_path / "store")
        result = RobotAgent(cfg, env, options).run()
        refused = server.counts["shadow_transitions_refused"]
        pending = list(learner.pending)
    assert result.episodes == 2 and refused >= 2 and pending == [], (refused, pending)
    assert all(e.meta["shadow"] and (e.load("control") == 4).all() for e in Dataset(tmp_path / "store").episodes)


class _SlowSceneReset:
    """An operator who takes `seconds` to reset the scene (the teleop idle meanwhile), then keeps, and confirms."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.since, self.phase = seconds, 0.0, ""

    def say(self, text: str) -> None:
        if "reset the scene" in text:
            self.phase, self.since = "operator", time.monotonic()
        elif "confirm to start" in text:
            self.phase = "confirm"

    def read(self) -> object:
        from inril_robot.hardware import TeleopCommand

        if self.phase == "operator" and time.monotonic() - self.since > self.seconds:
            self.phase = ""
            return TeleopCommand(keep=True)
        if self.phase == "confirm":
            self.phase = ""
            return TeleopCommand(keep=True)
        return TeleopCommand()

    def close(self) -> None:
        pass


@pytest.mark.timeout(180)
@pytest.mark.parametrize("heartbeats", [True, False])
def test_heartbeats_keep_a_robot_whose_operator_resets_the_scene(
    pretrained: tuple[Path, Dataset], tmp_path: Path, heartbeats: bool
) -> None:
    """A scene reset 3x longer than the server's robot timeout: with the loop's heartbeats the session stays (no
    drop, no reconnect); without them (the control) the server drops the robot."""
    checkpoint, demos = pretrained
    cfg = cfg_for("task.max_steps=3")
    learner = ServerLearner(cfg, checkpoint, demos, tmp_path / "srv", mode="sync")
    log: list[str] = []
    operator = _SlowSceneReset(seconds=3.0)
    with served(learner, log, robot_timeout_s=1.0) as server, RobotEnv(cfg) as env:
        agent = RobotAgent(
            cfg, env, AgentOptions(server=server.endpoint, episodes=2, speed=0), operator, say=operator.say
        )  # type: ignore[arg-type]
        agent.resets.operator = True  # a person resets the scene, as on a cell (simulation scripts it by default)
        if not heartbeats:
            agent.loop.heartbeat = None
        result = agent.run()
    dropped = [line for line in log if "dropped" in line]
    assert result.episodes == 2 and result.stopped is None, result
    if heartbeats:
        assert not dropped and result.reconnects == 0, (log, result)
    else:
        assert dropped and result.reconnects >= 1, (log, result)
