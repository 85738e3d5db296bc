"""Run episodes of a policy in a `RobotEnv` and summarise them (success with a Wilson interval): `eval` and `sim run`.

The steps go through the one control loop (`runtime.loop.ControlLoop`, ``policy`` mode: the teleop can only stop
the arm or give the operator's verdict), so every action passes the safety envelope inside `RobotEnv.step`, as in
`collect` and the robot agent. In simulation the loop is unpaced and success is the simulator's.

On a real arm (`RobotCell`): the loop runs at the control rate, the reset phase runs between episodes
(`runtime.resets`: open, retreat, the operator resets the scene, randomised start pose, confirm), and success comes
from the operator's keys (keep = success, discard = failure, at any step; asked at the time limit) and, when given,
from a success detector (the env's own, `reward.source=detector`, or an injected callable on the observation: the
model runs wherever it was built, this module never imports it); the operator's key overrides the detector. Every
episode gets a video."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inril_robot.hardware import Teleop
from inril_robot.reporting.rates import Rate, wilson_interval
from inril_robot.reporting.video import VideoWriter, fit_height, overlay, tile
from inril_robot.runtime.env import RobotEnv
from inril_robot.runtime.loop import ControlLoop
from inril_robot.runtime.resets import ResetPhase

Policy = Callable[[RobotEnv, dict[str, np.ndarray]], np.ndarray]
#: observation -> True (success: the episode ends), False (no success yet; at the time limit a failure), None (no
#: opinion, e.g. below its confidence threshold: at the time limit the operator is asked)
SuccessDetector = Callable[[dict[str, np.ndarray]], bool | None]


@dataclass
class RobotCell:
    """What an evaluation on a real arm adds: the operator's teleop (verdict keys, e-stop, the scene reset) and an
    optional success detector."""

    teleop: Teleop | None
    detector: SuccessDetector | None = None
    say: Callable[[str], None] = lambda _: None
    prompt: Callable[[str], None] | None = None  # confirmations without a teleop
    scripted_reset: Callable[[ControlLoop], None] | None = None


def scripted_policy(env: RobotEnv, obs: dict[str, np.ndarray]) -> np.ndarray:
    return env.expert_action()


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    length: int
    ret: float
    decided_by: str = "simulator"  # simulator | operator | detector | time limit


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


def run_policy(
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
    cell: RobotCell | None = None,
) -> RolloutSummary:
    """Episode i uses seed `seed + i`, so a run is reproducible and any single episode can be replayed.

    `on_reset(seed)` is called after each reset, before the first action (a stateful policy starts its episode).
    Videos (H.264, the cameras side by side scaled to `video_height`, an overlay of episode, step, reward and
    success): `video` holds the first `video_episodes` episodes back to back, `video_dir` one file per episode
    (`episode_000.mp4`, ...) for the first `video_episodes` episodes. `cell`: a real arm (see the module doc).
    """
    results: list[EpisodeResult] = []
    fps = env.cfg.robot.control_hz
    writer = VideoWriter(video, fps=fps) if video else None
    episode_files: list[str] = []
    steps_total = events = 0
    real = cell is not None
    loop = ControlLoop(
        env,
        cell.teleop if cell else None,
        mode="policy",
        period=None if real else 0.0,
        verdicts=real,
        prompt=cell.prompt if cell else None,
    )
    resets = ResetPhase(loop, cell.say, operator=True, scripted_reset=cell.scripted_reset) if cell else None
    reset_logs: list[list[dict[str, Any]]] = []
    start = time.perf_counter()
    try:
        for i in range(episodes):
            if resets is not None:
                obs, info = resets.run(seed + i, i)
                reset_logs.append(resets.log)
            else:
                obs, info = env.reset(seed=seed + i)
                loop.begin(obs, info)
            if on_reset:
                on_reset(seed + i)
            writers = [w for w in (writer,) if w is not None and i < video_episodes]
            if video_dir is not None and i < video_episodes:
                writers.append(VideoWriter(video_dir / f"episode_{i:03d}.mp4", fps=fps))
                episode_files.append(str(writers[-1].path))
            caption = _Caption(i, seed + i, env.cfg.task.max_steps)
            for w in writers:
                w.add(_frame(obs, video_height, caption.lines(), loop.state if real else None))
            ret, success, length, decided_by = 0.0, False, 0, "simulator"
            while True:
                step = loop.step(policy(env, loop.obs))
                if step.verdict is not None:  # the operator's key: the episode ends on this tick, no step taken
                    success, decided_by, done = step.verdict, "operator", True
                else:
                    events += len(step.info["safety_events"])
                    ret += step.reward
                    length += 1
                    done = step.done
                    success = bool(step.info["success"])
                    if cell is not None:
                        detected = env.success_source.kind == "detector" and success  # the env's own detector
                        success, decided_by, done = _cell_outcome(cell, loop, step.next_obs, done, length, detected)
                if writers:
                    shown = step.next_obs if step.executed is not None else loop.obs
                    lines = caption.lines(length, step.reward, ret, success if done else None)
                    frame = _frame(shown, video_height, lines, loop.state if real else None)
                    for w in writers:
                        for _ in range(round(fps) if done else 1):  # hold the outcome on screen for a second
                            w.add(frame)
                if on_step:
                    on_step(i, length, success if done else None)
                if done:
                    break
            if real:
                env.robot.hold()  # the episode is over: the arm stops now, before the reset phase
            for w in writers:
                if w is not writer:
                    w.close()
            steps_total += length
            results.append(EpisodeResult(seed + i, success, length, ret, decided_by))
    finally:
        if writer:
            writer.close()
    extra: dict[str, Any] = {"safety_events": events, "overruns": loop.scheduler.overruns}
    if video_dir is not None:
        extra["episode_videos"] = episode_files
    if real:
        extra["resets"] = reset_logs
        extra["decided_by"] = {k: sum(e.decided_by == k for e in results) for k in {e.decided_by for e in results}}
    return RolloutSummary(
        task=env.cfg.task.name,
        policy=policy_name,
        episodes=results,
        wall_s=time.perf_counter() - start,
        env_steps=steps_total,
        video=str(video) if video else None,
        extra=extra,
    )


def _cell_outcome(
    cell: RobotCell, loop: ControlLoop, obs: dict[str, np.ndarray], done: bool, length: int, detected: bool = False
) -> tuple[bool, str, bool]:
    """(success, decided by, done) on a real arm after a step without the operator's key: the detector's success
    ends the episode; at the time limit (or a stop) the detector's "no" is a failure, and without a detector (or
    when it has no opinion) the operator is asked. `detected`: the env's own detector (`reward.source=detector`)
    fired on this step; below its threshold it has no opinion (set for precision, its "no" is not a failure)."""
    opinion = cell.detector(obs) if cell.detector is not None else (True if detected else None)
    if opinion:
        return True, "detector", True
    if not done and length < loop.env.cfg.task.max_steps:
        return False, "", False
    if opinion is False:
        return False, "detector", True
    return loop.decide(cell.say, f"episode over after {length} steps: success?"), "operator", True


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


def _frame(obs: dict[str, np.ndarray], height: int | None, lines: list[str], state: Any = None) -> np.ndarray:
    images = [obs[k] for k in obs if k.endswith("_rgb")]
    if not images and state is not None:  # a cell without cameras: the video shows the arm's state as text
        pos = ", ".join(f"{1e3 * v:.1f}" for v in state.ee_pos)
        lines = [*lines, f"TCP [{pos}] mm  gripper {1e3 * state.gripper_width:.1f} mm"]
        images = [np.zeros((240, 480, 3), np.uint8)]
    if not images:
        raise ValueError("recording a video needs at least one camera (e.g. --cameras sim_front)")
    frame = tile(images)
    return overlay(fit_height(frame, height) if height else frame, lines)
