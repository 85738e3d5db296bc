"""`inril-robot bench latency`: what the bridge adds to a raw ZMQ round trip, and what the learner costs inference.

1. Raw echo: a ROUTER thread echoes the exact frames a robot's observation consists of (msgpack header, two
   224x224x3 uint8 images, proprioception) back to a DEALER: the floor for moving those bytes.
2. Bridge: the same observation through `BridgeClient` -> `PolicyServer` (decode, checks, batching, one chunk from a
   trivial policy that returns zeros, encode) -> the action message: the protocol and server overhead.
3. Inference with the learner: a real Gaussian state policy served by `ServerLearner` in async mode, round trips
   timed while the learner process is idle and again while it runs IN-RIL/PPO updates back to back.
Everything but that learner process runs in this process, measured in the same run, so the ratios compare like with
like.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import zmq
from rich.table import Table

from inril_robot.bridge import protocol as p
from inril_robot.bridge.client import BridgeClient
from inril_robot.bridge.episodes import EpisodeAssembler
from inril_robot.bridge.server import PolicyServer, ServeOptions
from inril_robot.core.contract import Contract, ObsSpec
from inril_robot.reporting.targets import Target
from inril_robot.runtime.timing import percentiles

IMAGE = (224, 224, 3)


def bench_contract() -> Contract:
    obs = {
        "ee_pos": ObsSpec(shape=(3,), dtype="float32"),
        "ee_quat": ObsSpec(shape=(4,), dtype="float32"),
        "gripper_width": ObsSpec(shape=(1,), dtype="float32"),
        "front_rgb": ObsSpec(shape=IMAGE, dtype="uint8"),
        "wrist_rgb": ObsSpec(shape=IMAGE, dtype="uint8"),
    }
    return Contract(observations=obs, cameras={"front": IMAGE[:2], "wrist": IMAGE[:2]})


class TrivialHost:
    """The part of `ServerLearner` the server uses, with a policy that costs nothing: zero actions, no learning."""

    mode = "off"
    version = 0
    learning = False
    finished = False  # never reaches a learning budget
    failure = None
    env_steps = episodes = rollbacks = 0

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        self.pending: list[Any] = []
        shapes = {k: v.shape for k, v in contract.observations.items()}
        self.policy = SimpleNamespace(
            obs_shapes=shapes,
            action_dim=contract.action_dim,
            cfg=SimpleNamespace(n_obs_steps=1, act_steps=1, horizon=1),
        )
        self.cfg = SimpleNamespace(task=SimpleNamespace(name="bench"))
        self.interventions = SimpleNamespace(total=0)

    def infer(self, histories: list[dict[str, np.ndarray]]) -> tuple[int, np.ndarray, list[dict[str, Any]]]:
        return 0, np.zeros((len(histories), 1, self.contract.action_dim)), [{} for _ in histories]

    def update_ready(self) -> bool:
        return False

    def new_assembler(self, robot: str) -> EpisodeAssembler:
        return EpisodeAssembler(horizon=1)

    def poll(self) -> None:
        pass

    def add_episode(self, *_: Any, **__: Any) -> None:
        pass


def observation_arrays(contract: Contract, rng: np.random.Generator) -> dict[str, np.ndarray]:
    arrays = {}
    for key, spec in contract.observations.items():
        if spec.dtype == "uint8":
            arrays[f"obs/{key}"] = rng.integers(0, 256, (1, *spec.shape), dtype=np.uint8)
        else:
            arrays[f"obs/{key}"] = rng.standard_normal((1, *spec.shape)).astype(spec.dtype)
    return arrays


class _ServerThread:
    def __init__(self, host: Any) -> None:
        # the bench sends 301 KB observations back to back, far above a robot's rate: the per-connection budgets
        # (which would drop its messages after the burst) are lifted, since this measures latency, not the budget
        unlimited = math.inf
        self.server = PolicyServer(
            host,
            ServeOptions(
                bind="tcp://127.0.0.1:*", msgs_per_s=unlimited, bytes_per_s=unlimited, msg_burst=2**31, byte_burst=2**62
            ),
        )
        self.endpoint = self.server.start()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.server.serve, args=(self.stop.is_set,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.server.close()


def _client(endpoint: str, contract: Contract, task: str) -> BridgeClient:
    client = BridgeClient(
        endpoint, "bench", p.Hello(contract=contract.to_json_dict(), task=task, config_hash="bench", robot_kind="sim")
    )
    client.connect()
    return client


def _round_trips(client: BridgeClient, arrays: dict[str, np.ndarray], n: int, warmup: int = 50) -> list[float]:
    samples = []
    body = p.Observation(episode=0, chunk=1, step=0)
    for i in range(warmup + n):
        t0 = time.perf_counter()
        seq = client.send(body, arrays)
        while True:
            msg = client.poll(5.0)
            if msg is None:
                raise RuntimeError("bench: the server stopped answering")
            if msg.type == "action" and msg.body.obs_seq == seq:
                break
        if i >= warmup:
            samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def raw_echo(frames: list[Any], n: int, warmup: int = 50) -> list[float]:
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    router.bind("tcp://127.0.0.1:*")
    dealer.connect(router.getsockopt_string(zmq.LAST_ENDPOINT))
    total = warmup + n

    def echo() -> None:
        for _ in range(total):
            router.send_multipart(router.recv_multipart(copy=False), copy=False)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    samples = []
    for i in range(total):
        t0 = time.perf_counter()
        dealer.send_multipart(frames, copy=False)
        dealer.recv_multipart(copy=False)
        if i >= warmup:
            samples.append((time.perf_counter() - t0) * 1e3)
    thread.join()
    router.close(0)
    dealer.close(0)
    ctx.term()
    return samples


def _learner_inference(seconds: float) -> dict[str, Any]:
    """Round trips to a real Gaussian policy served with an async learner: idle, then while it trains."""
    from inril_robot.bridge.learning import PackedTrace, ServerLearner
    from inril_robot.config import load_config
    from inril_robot.learning.policies import checkpoint as ckpt
    from inril_robot.learning.policies.factory import make_policy
    from inril_robot.learning.policies.normalizer import Normalizer
    from inril_robot.learning.pretrain import policy_obs_keys, run_contract
    from inril_robot.learning.rl.rollouts import EpisodeTrace

    cfg = load_config(
        robot="sim",
        task="reach",
        algo="bc_gaussian",
        overrides=[
            "finetune.inril.il_every=0",
            "finetune.episodes_per_iteration=8",
            "finetune.env_steps=100000000",
            "finetune.ppo.epochs=4",
            "finetune.ppo.minibatch_size=64",
            "finetune.ppo.target_kl=null",
            "finetune.checkpoint_every=1000000",
            "finetune.ppo.critic_warmup_iterations=0",
        ],
    )
    contract = run_contract(cfg)
    keys = policy_obs_keys(contract, "state")
    shapes = {k: tuple(contract.observations[k].shape) for k in keys}
    stats = {k: {"mean": [0.0] * int(np.prod(s)), "std": [1.0] * int(np.prod(s))} for k, s in shapes.items()}
    policy = make_policy(
        cfg.policy,
        Normalizer(stats, {"min": [-0.02] * 6 + [0.0], "max": [0.02] * 6 + [1.0]}),
        shapes,
        contract.action_dim,
    )
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = ckpt.save_checkpoint(Path(tmp) / "bench.pt", policy, contract=contract, run_cfg=cfg, step=0)
        learner = ServerLearner(cfg, path, None, Path(tmp) / "run", mode="async")
        threads = torch.get_num_threads()  # while serving next to the learner process (close() restores it)
        server = _ServerThread(learner)
        client = _client(server.endpoint, contract, cfg.task.name)
        arrays = {f"obs/{k}": rng.standard_normal((1, *s)).astype(np.float32) for k, s in shapes.items()}

        def episodes() -> list[EpisodeTrace]:
            traces = []
            for e in range(8):
                t = EpisodeTrace(seed=e)
                for _ in range(50):
                    history = {k: rng.standard_normal((1, *s)).astype(np.float32) for k, s in shapes.items()}
                    _, _, kept = learner.infer([history])
                    t.obs.append(history)
                    t.kept.append(kept[0])
                    t.rewards.append(float(rng.random() < 0.05))
                    t.steps += 1
                t.final_obs = t.obs[-1]
                traces.append(t)
            return traces

        batch = [PackedTrace.pack(t) for t in episodes()]
        try:

            def timed() -> list[float]:
                samples: list[float] = []
                end = time.perf_counter() + seconds
                while time.perf_counter() < end:
                    samples += _round_trips(client, arrays, 100, warmup=0)
                return samples

            _round_trips(client, arrays, 200)
            idle = timed()
            updates0 = learner.version
            feeding = threading.Event()

            def feed() -> None:  # keep the learner process busy for the whole window: one batch queued behind
                while not feeding.is_set():
                    if learner.in_flight < 2:
                        learner.submit(batch)
                    time.sleep(0.005)

            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()
            time.sleep(0.2)
            busy = timed()
            feeding.set()
            feeder.join()
            updates = learner.version - updates0
        finally:
            client.close()
            server.close()
            learner.close()
    idle_p, busy_p = percentiles(idle), percentiles(busy)
    return {
        "idle": idle_p,
        "training": busy_p,
        "updates_during_window": updates,
        "p99_ratio": busy_p["p99_ms"] / idle_p["p99_ms"],
        "target_p99_ratio": 1.2,
        "torch_threads": threads,
        "learner": "process",
        "failure": learner.failure,
    }


def bench_latency(repeats: int = 2000, learner_seconds: float = 8.0) -> dict[str, Any]:
    contract = bench_contract()
    rng = np.random.default_rng(0)
    arrays = observation_arrays(contract, rng)
    frames = p.encode(p.Observation(episode=0, chunk=1, step=0), robot="bench", seq=1, arrays=arrays)
    payload_bytes = sum(memoryview(f).nbytes for f in frames)

    host = TrivialHost(contract)
    server = _ServerThread(host)
    client = _client(server.endpoint, contract, "bench")
    try:
        raw, bridge = [], []
        for _ in range(4):  # interleaved blocks: drift on a shared machine hits both alike
            raw += raw_echo(frames, repeats // 4)
            bridge += _round_trips(client, arrays, repeats // 4)
    finally:
        client.close()
        server.close()
    raw_p, bridge_p = percentiles(raw), percentiles(bridge)
    return {
        "payload_bytes": payload_bytes,
        "images": "2 x 224x224x3 uint8",
        "repeats": repeats,
        "raw_echo": raw_p,
        "bridge": bridge_p,
        "p50_ratio": bridge_p["p50_ms"] / raw_p["p50_ms"],
        "p99_ratio": bridge_p["p99_ms"] / raw_p["p99_ms"],
        "target_p50_ratio": 1.5,
        "learner": _learner_inference(learner_seconds),
    }


def latency_targets(r: dict[str, Any]) -> list[Target]:
    """The bridge's p50 overhead over the raw echo, and inference p99 with the learner training vs idle."""
    return [
        Target("bridge p50 / raw echo p50", r["p50_ratio"], r["target_p50_ratio"], "<=", "x"),
        Target(
            "inference p99 learner training / idle",
            r["learner"]["p99_ratio"],
            r["learner"]["target_p99_ratio"],
            "<=",
            "x",
        ),
    ]


def _mark(met: bool) -> str:
    return "[green]met[/]" if met else "[bold red]MISSED[/]"


def render_latency(r: dict[str, Any]) -> Table:
    bridge_target, learner_target = latency_targets(r)
    t = Table(
        "measurement",
        "p50 ms",
        "p99 ms",
        "ratio",
        "target",
        "",
        title=f"bench latency · {r['images']} + proprioception ({r['payload_bytes']:,} bytes) · TCP loopback",
    )
    t.add_row(
        "raw ZMQ echo (same bytes)", f"{r['raw_echo']['p50_ms']:.3f}", f"{r['raw_echo']['p99_ms']:.3f}", "1.00x", ""
    )
    t.add_row(
        "bridge obs -> action",
        f"{r['bridge']['p50_ms']:.3f}",
        f"{r['bridge']['p99_ms']:.3f}",
        f"p50 {r['p50_ratio']:.2f}x",
        f"p50 <= {r['target_p50_ratio']}x",
        _mark(bridge_target.met),
    )
    lr = r["learner"]
    t.add_row("inference, learner idle", f"{lr['idle']['p50_ms']:.3f}", f"{lr['idle']['p99_ms']:.3f}", "1.00x", "")
    t.add_row(
        f"inference, learner training ({lr['updates_during_window']} updates)",
        f"{lr['training']['p50_ms']:.3f}",
        f"{lr['training']['p99_ms']:.3f}",
        f"p99 {lr['p99_ratio']:.2f}x",
        f"p99 <= {lr['target_p99_ratio']}x",
        _mark(learner_target.met),
    )
    return t
