"""`inril-robot bench data`: episode-store write and training-read throughput.

Write: episodes of two 224x224 RGB cameras plus proprioception are recorded through `EpisodeWriter` (buffering,
chunked appends, checksums, fsync, atomic commit: everything a real collection pays) and the achieved frames/s is
compared with what real time needs (cameras x control_hz). Read: `WindowSampler` draws random windows of `horizon`
steps across episodes, first cold (decoding episodes) then warm (cached), against a baseline in the same run:
slicing the same windows out of in-memory numpy arrays.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from inril_robot.core.contract import Contract, ObsSpec
from inril_robot.data.sampler import WindowSampler
from inril_robot.data.store import Dataset, DatasetWriter


def synthetic_frames(steps: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Camera-like frames: smooth gradients that move, plus sensor noise (compresses like real images, not zeros)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = np.empty((steps, size, size, 3), dtype=np.uint8)
    for t in range(steps):
        base = 110 + 60 * np.sin((xx + 3 * t) / 23.0) * np.cos((yy - 2 * t) / 31.0)
        noisy = base[..., None] + rng.normal(0, 4, (size, size, 3))
        frames[t] = np.clip(noisy, 0, 255).astype(np.uint8)
    return frames


def bench_data(
    episodes: int = 4,
    steps: int = 100,
    size: int = 224,
    horizon: int = 16,
    windows: int = 2000,
    control_hz: float = 10.0,
    root: Path | None = None,
) -> dict[str, Any]:
    cameras = ("front", "wrist")
    contract = Contract(
        control_hz=control_hz,
        observations={
            "ee_pos": ObsSpec(shape=(3,), dtype="float32"),
            **{f"{c}_rgb": ObsSpec(shape=(size, size, 3), dtype="uint8") for c in cameras},
        },
        cameras={c: (size, size) for c in cameras},
    )
    rng = np.random.default_rng(0)
    frames = synthetic_frames(steps, size, rng)
    workdir = Path(tempfile.mkdtemp(prefix="inril-bench-", dir=root))
    try:
        write_s = 0.0
        with DatasetWriter(workdir, contract, task="bench") as writer:
            for e in range(episodes):
                t0 = time.perf_counter()
                ep = writer.begin_episode(seed=e)
                for t in range(steps):
                    obs = {"ee_pos": np.full(3, t, np.float32), "front_rgb": frames[t], "wrist_rgb": frames[-1 - t]}
                    ep.add_step(
                        obs,
                        np.zeros(7),
                        np.zeros(7),
                        0.0,
                        t == steps - 1,
                        "scripted",
                        capture_times={c: t / control_hz for c in cameras},
                    )
                ep.commit(success=True)
                write_s += time.perf_counter() - t0
        frames_written = episodes * steps * len(cameras)
        size_bytes = sum(p.stat().st_size for p in workdir.rglob("*") if p.is_file())

        ds = Dataset(workdir)
        keys = ["obs/front_rgb", "obs/wrist_rgb", "obs/ee_pos", "action/executed"]
        sampler = WindowSampler(ds, keys, horizon)
        picks = np.random.default_rng(1).integers(0, len(sampler), windows)
        t0 = time.perf_counter()
        for i in picks[: len(ds) * 4]:  # cold: every episode decoded once
            sampler[int(i)]
        cold_s = time.perf_counter() - t0
        cold_n = min(len(picks), len(ds) * 4)
        t0 = time.perf_counter()
        for i in picks:
            sampler[int(i)]
        warm_s = time.perf_counter() - t0

        memory = [{k: ds[p].load(k) for k in keys} for p in range(len(ds))]
        t0 = time.perf_counter()
        for i in picks:
            position, current = sampler.index[int(i)]
            steps_idx = np.minimum(np.arange(current, current + horizon), steps - 1)
            {k: a[steps_idx] for k, a in memory[int(position)].items()}
        numpy_s = time.perf_counter() - t0

        # integrity: reading every array with and without the sha256 check (fresh Dataset objects: nothing cached
        # in Python), alternated three times, best of each (the page cache is warm for both)
        unverified_s = verified_s = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for episode in Dataset(workdir).episodes:
                for k in episode.array_keys():
                    episode.load(k, verify=False)
            unverified_s = min(unverified_s, time.perf_counter() - t0)
            t0 = time.perf_counter()
            corrupt = Dataset(workdir).verify()
            verified_s = min(verified_s, time.perf_counter() - t0)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    realtime_fps = len(cameras) * control_hz
    write_fps = frames_written / write_s
    return {
        "write": {
            "frames_per_s": write_fps,
            "realtime_frames_per_s": realtime_fps,
            "times_realtime": write_fps / realtime_fps,
            "episodes": episodes,
            "steps_per_episode": steps,
            "image_size": size,
            "bytes_on_disk": size_bytes,
            "compression_ratio": frames_written * size * size * 3 / size_bytes,
        },
        "read": {
            "horizon": horizon,
            "windows": windows,
            "cold_windows_per_s": cold_n / cold_s,
            "warm_windows_per_s": windows / warm_s,
            "numpy_baseline_windows_per_s": windows / numpy_s,
            "warm_fraction_of_numpy": numpy_s / warm_s,
        },
        "verify": {
            "read_all_s": unverified_s,
            "read_and_verify_all_s": verified_s,
            "sha256_overhead": verified_s / unverified_s - 1.0,
            "corrupt_episodes": len(corrupt),
            "megabytes_per_s": frames_written * size * size * 3 / 2**20 / verified_s,
        },
    }


def rendered_frames(steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Two 128 px cameras (front, wrist) rendered by the simulated lift scene while a scripted expert lifts the cube
    and the episodes restart: what a robot's replay really holds (rendered frames compress far better than noise)."""
    from inril_robot.config import load_config
    from inril_robot.hardware.teleop import command_to_action
    from inril_robot.runtime.env import RobotEnv
    from inril_robot.runtime.registry import make_teleop

    cfg = load_config(robot="sim", task="lift", cameras="sim_front_wrist", overrides=["teleop.kind=scripted"])
    out: dict[str, list[np.ndarray]] = {"front_rgb": [], "wrist_rgb": []}
    with RobotEnv(cfg) as env:
        teleop = make_teleop(cfg, env)
        episode = 0
        obs, _ = env.reset(seed=seed)
        while len(out["front_rgb"]) < steps:
            for k in out:
                out[k].append(np.asarray(obs[k]))
            action = command_to_action(teleop.read(), float(obs["gripper_width"][0] < 0.04))
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                episode += 1
                obs, _ = env.reset(seed=seed + episode)
        teleop.close()
    return {k: np.stack(v) for k, v in out.items()}


def bench_replay(transitions: int = 600, episode_steps: int = 50, root: Path | None = None) -> dict[str, Any]:
    """The replay log (`data/replay.py`) with two 128 px cameras: bytes per transition on disk, memory per 100k
    transitions (compressed as the log holds them; decompressed with next observations shared; decompressed as
    separate obs/next_obs copies, the layout of a flat in-memory buffer), append rate with fsync vs one robot's
    10 Hz, and the rate at which `--resume` reads transitions back."""
    from inril_robot.data.replay import EpisodeChain, ReplayLog, ReplaySpec, ReplayWriter, Step, load_arrays

    frames = rendered_frames(transitions + 1)
    spec = ReplaySpec(
        {
            "front_rgb": ((1, 128, 128, 3), "uint8"),
            "wrist_rgb": ((1, 128, 128, 3), "uint8"),
            "state": ((1, 17), "float32"),
        },
        (1, 7),
    )
    rng = np.random.default_rng(0)
    obs = [
        {
            "front_rgb": frames["front_rgb"][i][None],
            "wrist_rgb": frames["wrist_rgb"][i][None],
            "state": rng.normal(size=(1, 17)).astype(np.float32),
        }
        for i in range(transitions + 1)
    ]
    workdir = Path(tempfile.mkdtemp(prefix="inril-bench-replay-", dir=root))
    try:
        t0 = time.perf_counter()
        with ReplayWriter(workdir / "replay", spec) as writer:
            for start in range(0, transitions, episode_steps):
                chain = EpisodeChain("bench", start // episode_steps, writer.new_episode())
                for i in range(start, min(start + episode_steps, transitions)):
                    chain.add(
                        Step(
                            obs[i],
                            rng.uniform(-1, 1, (1, 7)).astype(np.float32),
                            np.zeros((1, 7), np.float32),
                            0.0,
                            False,
                            False,
                            False,
                            i - start,
                            1,
                            0,
                            obs[i + 1],
                        )
                    )
                for arrays in chain.take(closing=True):
                    writer.append(
                        arrays, robot="bench", robot_episode=chain.robot_episode, episode=chain.episode, closed=True
                    )
        write_s = time.perf_counter() - t0
        summary = ReplayLog(workdir / "replay").summary()
        t0 = time.perf_counter()
        arrays, _ = load_arrays(workdir / "replay")
        load_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    memory = bench_replay_buffer(arrays)
    image_bytes = sum(int(np.prod(s)) for k, (s, d) in spec.obs.items() if d == "uint8")
    other_bytes = sum(v.nbytes for k, v in arrays.items() if not k.startswith(("obs/", "next_obs/"))) / transitions
    state_bytes = 17 * 4
    per_100k = 100_000
    return {
        "transitions": transitions,
        "cameras": "front + wrist, 128x128 RGB, rendered (sim lift, scripted expert)",
        "disk_bytes_per_transition": summary.bytes / transitions,
        "disk_gb_per_100k": summary.bytes / transitions * per_100k / 1e9,
        "ram_gb_per_100k_shared_next_obs": (image_bytes + state_bytes + other_bytes) * per_100k / 1e9,
        "ram_gb_per_100k_obs_and_next_obs": (2 * (image_bytes + state_bytes) + other_bytes) * per_100k / 1e9,
        "compression_ratio": (image_bytes + state_bytes + other_bytes) * transitions / summary.bytes,
        "append_transitions_per_s": transitions / write_s,
        "append_times_realtime_10hz": transitions / write_s / 10.0,
        "load_transitions_per_s": transitions / load_s,
        "resume_load_s_per_100k": load_s / transitions * per_100k,
        **memory,
    }


def bench_replay_buffer(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The learner's in-memory buffer (`learning.rl.replay.ReplayBuffer`, CPU) filled with the log's transitions as
    the server's learner adds them (one at a time, obs and next_obs given): the bytes it holds per 100k transitions
    (each history stored once), the same as obs/next_obs pairs, the resident memory it added (VmRSS), and its add
    rate (a digest of every history: the price of storing it once)."""
    from inril_robot.learning.rl.replay import ReplayBuffer, log_transitions

    n = len(arrays["reward"])
    buffer = ReplayBuffer(n)
    rss0 = _rss_bytes()
    t0 = time.perf_counter()
    buffer.extend(log_transitions(arrays))
    add_s = time.perf_counter() - t0
    rss = _rss_bytes() - rss0
    held = buffer.nbytes()
    history = held["histories"] / held["stored_histories"]
    per_100k = 100_000 / n / 1e9
    return {
        "buffer_gb_per_100k": (held["histories"] + held["per_transition"]) * per_100k,
        "buffer_gb_per_100k_as_pairs": (2 * history * n + held["per_transition"]) * per_100k,
        "buffer_rss_gb_per_100k": rss * per_100k,
        "buffer_histories_per_transition": held["stored_histories"] / n,
        "buffer_add_per_s": n / add_s,
    }


def _rss_bytes() -> int:
    """This process's resident memory (Linux /proc; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
