"""`inril-robot bench sim`: simulator throughput against the raw physics bound measured in the same run.

For each task the scripted expert runs episodes while `RobotEnv.step` is timed (the expert's own time is excluded);
physics snapshots are taken along the way. The raw `mj_step` rate from those same states (approach, grasp, carry:
the contacts a real episode has), divided by the physics substeps per control step, is the bound an env step could
reach with zero overhead. Both run on one core, in one process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from inril_robot.config import RunConfig
from inril_robot.runtime.env import RobotEnv


@dataclass
class SimBenchResult:
    task: str
    substeps: int
    raw_physics_steps_per_s: float
    bound_env_steps_per_s: float
    env_steps_per_s: float
    env_steps: int

    @property
    def fraction_of_bound(self) -> float:
        return self.env_steps_per_s / self.bound_env_steps_per_s

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "fraction_of_bound": self.fraction_of_bound}


def env_rate(env: RobotEnv, seconds: float, snapshot_every: int = 7) -> tuple[float, int, list[Any]]:
    """Env steps/s timed around `env.step` only; also returns physics snapshots taken along the episodes."""
    import mujoco

    world = env.robot.sim  # type: ignore[attr-defined]
    snapshots: list[Any] = []
    stepping, steps, episode = 0.0, 0, 0
    wall = time.perf_counter()
    while time.perf_counter() - wall < seconds:
        env.reset(seed=episode)
        episode += 1
        done = False
        while not done:
            action = env.expert_action()
            t0 = time.perf_counter()
            _, _, terminated, truncated, _ = env.step(action)
            stepping += time.perf_counter() - t0
            steps += 1
            done = terminated or truncated
            if steps % snapshot_every == 0:
                snap = mujoco.MjData(world.model)
                mujoco.mj_copyData(snap, world.model, world.data)
                snapshots.append(snap)
    return steps / stepping, steps, snapshots


def raw_physics_rate(env: RobotEnv, snapshots: list[Any], repeats: int = 3) -> float:
    """Raw `mj_step` steps/s from the same states the env went through (approach, grasp, carry, insert)."""
    import mujoco

    world = env.robot.sim  # type: ignore[attr-defined]
    scratch = mujoco.MjData(world.model)
    elapsed, steps = 0.0, 0
    for snap in snapshots:
        for _ in range(repeats):
            mujoco.mj_copyData(scratch, world.model, snap)
            t0 = time.perf_counter()
            mujoco.mj_step(world.model, scratch, nstep=world.substeps)
            elapsed += time.perf_counter() - t0
            steps += world.substeps
    return steps / elapsed


def bench_task(cfg: RunConfig, seconds: float = 3.0) -> SimBenchResult:
    env = RobotEnv(cfg)
    try:
        rate, steps, snapshots = env_rate(env, seconds)
        raw = raw_physics_rate(env, snapshots)
        substeps = env.robot.sim.substeps  # type: ignore[attr-defined]
    finally:
        env.close()
    return SimBenchResult(cfg.task.name, substeps, raw, raw / substeps, rate, steps)


def summarize(results: list[SimBenchResult]) -> dict[str, Any]:
    return {
        "tasks": [r.to_dict() for r in results],
        "min_fraction_of_bound": float(np.min([r.fraction_of_bound for r in results])),
    }
