"""Data for a success detector in simulation, and its measured precision and recall (`bench detector`).

`record_labelled_episodes` records scripted episodes with the policy's cameras. Half of them (`cut_fraction`) are
cut at a random step in the first 40% of the time limit, mostly before the expert finishes, so the failures include
the scenes a detector confuses most with success (cube in the gripper, half lifted); the others run to success or
the time limit. Episodes are stored as `collect` stores them (episode success = the simulator's), so
`train_detector` reads them as it reads real ones.

A store keeps the observation each action was taken from, so an episode that ends on the step that succeeds has no
frame *after* success: its last frames show the cube just below the lift height, and a detector trained on them fires
a control step early. A real operator presses keep after seeing the success; here a successful episode goes on for
`hold_steps` more expert steps, recorded, so the last frames (the positives) are the scene after success.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from inril_robot.config import RunConfig
from inril_robot.data.store import Dataset, DatasetWriter
from inril_robot.runtime.env import RobotEnv

Progress = Callable[[str], None]


def record_labelled_episodes(
    cfg: RunConfig,
    out: Path,
    episodes: int,
    seed: int = 0,
    cut_fraction: float = 0.5,
    hold_steps: int = 2,
    say: Progress | None = None,
) -> Dataset:
    """`episodes` scripted episodes with images in `out` (resumes: only the missing ones are recorded)."""
    if not cfg.cameras:
        raise ValueError("a success detector learns from images: give the run cameras (e.g. --cameras sim_front)")
    rng = np.random.default_rng(seed)
    # cut before the expert usually finishes (lift: ~40 steps of 100), so a cut episode is a failure mid-task
    cuts = [
        int(rng.integers(3, max(4, cfg.task.max_steps * 2 // 5))) if rng.random() < cut_fraction else cfg.task.max_steps
        for _ in range(episodes)
    ]
    with RobotEnv(cfg) as env, DatasetWriter(out, env.contract, task=cfg.task.name) as writer:
        for i in range(writer.next_index(), episodes):
            obs, info = env.reset(seed=seed + i)
            episode = writer.begin_episode(seed=seed + i, notes=f"detector data, cut at {cuts[i]} steps")
            succeeded_at: int | None = None  # the step on which the episode succeeded
            while True:
                action = env.expert_action()
                state = info["state"]
                next_obs, reward, terminated, truncated, info = env.step(action)
                if terminated and succeeded_at is None:
                    succeeded_at = env.steps
                if succeeded_at is None:
                    done = truncated or env.steps >= cuts[i]
                else:  # after success: hold, unless the cube drops (then a failure, all its frames negatives)
                    done = env.steps - succeeded_at >= hold_steps or not info["success"]
                episode.add_step(obs, action, info["executed_action"], reward, done, "scripted", robot_state=state)
                obs = next_obs
                if done:
                    break
            episode.commit(success=bool(info["success"]))
            if say is not None and (i + 1) % 10 == 0:
                say(f"recorded {i + 1}/{episodes} episodes")
    return Dataset(out)


def detector_bench(
    cfg: RunConfig, out: Path, episodes: int = 200, seed: int = 0, say: Progress | None = None, **training: Any
) -> dict[str, Any]:
    """Record (or reuse) `episodes` labelled episodes in out/episodes, train a detector to out/detector.pt, and
    return its measured precision/recall on held-out episodes."""
    from inril_robot.learning.policies.success import DetectorTraining, train_detector

    say = say or (lambda _: None)
    started = time.perf_counter()
    dataset = record_labelled_episodes(cfg, out / "episodes", episodes, seed, say=say)
    recorded = time.perf_counter() - started
    opts = DetectorTraining(**training)
    detector = train_detector(dataset, opts=opts, progress=lambda step, loss: say(f"step {step}: loss {loss:.3f}"))
    detector.save(out / "detector.pt", opts.encoder)
    return {
        "dataset": str(out / "episodes"),
        "detector": str(out / "detector.pt"),
        "episodes": len(dataset),
        "successes": sum(e.success for e in dataset.episodes),
        "cameras": [f"{c.name} {c.width}x{c.height}" for c in cfg.cameras],
        "training_steps": opts.steps,
        **detector.metrics,
        "wall_s": {"record": recorded, "total": time.perf_counter() - started},
    }
