"""Run episodes of a policy (the scripted expert, for now) in a `RobotEnv` and summarise them.

Every action passes the safety envelope inside `RobotEnv.step` before it reaches the robot, as in `collect`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inril_robot.env import RobotEnv
from inril_robot.stats import Rate, wilson_interval
from inril_robot.video import VideoWriter, tile

Policy = Callable[[RobotEnv, dict[str, np.ndarray]], np.ndarray]


def scripted_policy(env: RobotEnv, obs: dict[str, np.ndarray]) -> np.ndarray:
    return env.expert_action()


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    length: int
    ret: float


@dataclass
class RolloutSummary:
    task: str
    policy: str
    episodes: list[EpisodeResult]
    wall_s: float
    env_steps: int
    video: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> Rate:
        return wilson_interval(sum(e.success for e in self.episodes), len(self.episodes))

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "policy": self.policy,
            "episodes": len(self.episodes),
            "success": self.success.to_dict(),
            "mean_length": float(np.mean([e.length for e in self.episodes])) if self.episodes else 0.0,
            "mean_return": float(np.mean([e.ret for e in self.episodes])) if self.episodes else 0.0,
            "env_steps": self.env_steps,
            "wall_s": self.wall_s,
            "env_steps_per_s": self.env_steps / self.wall_s if self.wall_s > 0 else 0.0,
            "video": self.video,
            "per_episode": [e.__dict__ for e in self.episodes],
            **self.extra,
        }


def run_episodes(
    env: RobotEnv,
    policy: Policy,
    episodes: int,
    seed: int = 0,
    video: Path | None = None,
    video_episodes: int = 3,
    on_step: Callable[[int, int, bool | None], None] | None = None,
    policy_name: str = "scripted",
    on_reset: Callable[[int], None] | None = None,
) -> RolloutSummary:
    """Episode i uses seed `seed + i`, so a run is reproducible and any single episode can be replayed.

    `on_reset(seed)` is called after each reset, before the first action (a stateful policy starts its episode).
    """
    results: list[EpisodeResult] = []
    writer = VideoWriter(video, fps=env.cfg.robot.control_hz) if video else None
    steps_total = events = 0
    start = time.perf_counter()
    try:
        for i in range(episodes):
            obs, info = env.reset(seed=seed + i)
            if on_reset:
                on_reset(seed + i)
            record = writer is not None and i < video_episodes
            if record:
                writer.add(_frame(env, obs))
            ret, success, length = 0.0, False, 0
            while True:
                obs, reward, terminated, truncated, info = env.step(policy(env, obs))
                events += len(info["safety_events"])
                ret += reward
                length += 1
                if record:
                    writer.add(_frame(env, obs))
                done = terminated or truncated
                if on_step:
                    on_step(i, length, bool(info["success"]) if done else None)
                if done:
                    success = bool(info["success"])
                    break
            steps_total += length
            results.append(EpisodeResult(seed + i, success, length, ret))
    finally:
        if writer:
            writer.close()
    return RolloutSummary(
        task=env.cfg.task.name, policy=policy_name, episodes=results, wall_s=time.perf_counter() - start,
        env_steps=steps_total, video=str(video) if video else None, extra={"safety_events": events},
    )


def _frame(env: RobotEnv, obs: dict[str, np.ndarray]) -> np.ndarray:
    images = [obs[k] for k in obs if k.endswith("_rgb")]
    if not images:
        raise ValueError("recording a video needs at least one camera (e.g. --cameras sim_front)")
    return tile(images)
