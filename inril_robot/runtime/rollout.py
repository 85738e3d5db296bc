"""Run episodes of a policy (the scripted expert, for now) in a `RobotEnv` and summarise them.

Every action passes the safety envelope inside `RobotEnv.step` before it reaches the robot, as in `collect`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inril_robot.reporting.rates import Rate, wilson_interval
from inril_robot.reporting.video import VideoWriter, fit_height, overlay, tile
from inril_robot.runtime.env import RobotEnv

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
    video_dir: Path | None = None,
    video_height: int | None = None,
) -> RolloutSummary:
    """Episode i uses seed `seed + i`, so a run is reproducible and any single episode can be replayed.

    `on_reset(seed)` is called after each reset, before the first action (a stateful policy starts its episode).
    Videos (H.264, the cameras side by side scaled to `video_height`, an overlay of episode, step, reward and
    success): `video` holds the first `video_episodes` episodes back to back, `video_dir` one file per episode
    (`episode_000.mp4`, ...) for the first `video_episodes` episodes.
    """
    results: list[EpisodeResult] = []
    fps = env.cfg.robot.control_hz
    writer = VideoWriter(video, fps=fps) if video else None
    episode_files: list[str] = []
    steps_total = events = 0
    start = time.perf_counter()
    try:
        for i in range(episodes):
            obs, info = env.reset(seed=seed + i)
            if on_reset:
                on_reset(seed + i)
            writers = [w for w in (writer,) if w is not None and i < video_episodes]
            if video_dir is not None and i < video_episodes:
                writers.append(VideoWriter(video_dir / f"episode_{i:03d}.mp4", fps=fps))
                episode_files.append(str(writers[-1].path))
            caption = _Caption(i, seed + i, env.cfg.task.max_steps)
            for w in writers:
                w.add(_frame(obs, video_height, caption.lines()))
            ret, success, length = 0.0, False, 0
            while True:
                obs, reward, terminated, truncated, info = env.step(policy(env, obs))
                events += len(info["safety_events"])
                ret += reward
                length += 1
                done = terminated or truncated
                if writers:
                    lines = caption.lines(length, reward, ret, bool(info["success"]) if done else None)
                    frame = _frame(obs, video_height, lines)
                    for w in writers:
                        for _ in range(round(fps) if done else 1):  # hold the outcome on screen for a second
                            w.add(frame)
                if on_step:
                    on_step(i, length, bool(info["success"]) if done else None)
                if done:
                    success = bool(info["success"])
                    break
            for w in writers:
                if w is not writer:
                    w.close()
            steps_total += length
            results.append(EpisodeResult(seed + i, success, length, ret))
    finally:
        if writer:
            writer.close()
    extra: dict[str, Any] = {"safety_events": events}
    if video_dir is not None:
        extra["episode_videos"] = episode_files
    return RolloutSummary(
        task=env.cfg.task.name,
        policy=policy_name,
        episodes=results,
        wall_s=time.perf_counter() - start,
        env_steps=steps_total,
        video=str(video) if video else None,
        extra=extra,
    )


@dataclass
class _Caption:
    episode: int
    seed: int
    max_steps: int

    def lines(self, step: int = 0, reward: float = 0.0, ret: float = 0.0, success: bool | None = None) -> list[str]:
        outcome = "running" if success is None else ("SUCCESS" if success else "failed")
        return [
            f"episode {self.episode} (seed {self.seed})  {outcome}",
            f"step {step}/{self.max_steps}  reward {reward:.2f}  return {ret:.2f}",
        ]


def _frame(obs: dict[str, np.ndarray], height: int | None, lines: list[str]) -> np.ndarray:
    images = [obs[k] for k in obs if k.endswith("_rgb")]
    if not images:
        raise ValueError("recording a video needs at least one camera (e.g. --cameras sim_front)")
    frame = tile(images)
    return overlay(fit_height(frame, height) if height else frame, lines)
