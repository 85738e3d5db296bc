"""`bench markers`: marker pose error against the simulator's truth, and state policies on estimated vs true poses.

Up to three arms over the same held-out seeds (paired), everything else equal:

- ``a``: the policy trained on true poses, observing the simulator's object poses;
- ``b``: the same policy observing the poses estimated from the markers the sim renders (`markers.enabled`);
- ``c`` (with an estimated-pose checkpoint): a policy trained on demos recorded with markers enabled (so its
  dataset holds what a real cell gives), observing marker poses.

Every step of a marker arm compares the estimate with the truth:

- `fresh`: steps where the object was detected in that step's frames (the estimator's accuracy);
- `observed`: every step, stale poses included (what the policy saw, e.g. while the gripper hides the markers);
- `near_fresh` / `near_observed`: the same on the steps where the TCP is within `NEAR_M` of the object (the grasp,
  where the fingers hide markers).
"""

from __future__ import annotations

import itertools
import multiprocessing
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inril_robot.config import RunConfig
from inril_robot.core.seeds import HELDOUT_SEED_BASE
from inril_robot.reporting.rates import wilson_interval
from inril_robot.runtime.env import RobotEnv
from inril_robot.runtime.rollout import run_policy
from inril_robot.vision.markers import pose_error

Progress = Callable[[str], None]
NEAR_M = 0.06  # TCP-object distance under which a step counts as "near the grasp"
ERROR_KINDS = ("fresh", "observed", "near_fresh", "near_observed")


@dataclass
class PoseErrors:
    position_m: list[float] = field(default_factory=list)
    rotation_rad: list[float] = field(default_factory=list)

    def add(self, pos: float, rot: float) -> None:
        self.position_m.append(pos)
        self.rotation_rad.append(rot)

    def summary(self) -> dict[str, float | int]:
        if not self.position_m:
            return {"steps": 0}
        pos_mm, rot_deg = np.asarray(self.position_m) * 1000, np.degrees(self.rotation_rad)
        return {
            "steps": len(pos_mm),
            "position_median_mm": float(np.median(pos_mm)),
            "position_p95_mm": float(np.percentile(pos_mm, 95)),
            "rotation_median_deg": float(np.median(rot_deg)),
            "rotation_p95_deg": float(np.percentile(rot_deg, 95)),
        }


@dataclass
class MarkerStats:
    """What a marker arm's estimates were, step by step, against the truth."""

    errors: dict[str, PoseErrors] = field(default_factory=lambda: {k: PoseErrors() for k in ERROR_KINDS})
    lost_steps: int = 0
    steps: int = 0
    rejected: Counter = field(default_factory=Counter)

    def record(self, env: RobotEnv) -> None:
        source = env.marker_source
        if source is None:
            return
        truth = env.robot.object_poses()  # type: ignore[attr-defined]
        tcp = env.robot.state().ee_pos
        self.rejected.update(r.reason.split(" ", 1)[0] for r in source.tracker.rejected)
        for name, est in source.estimates.items():
            pos, rot = pose_error(est.pose, truth[name])
            near = float(np.linalg.norm(tcp - truth[name].pos)) < NEAR_M
            kinds = ["observed", *(["near_observed"] if near else [])]
            if est.age_s == 0.0:
                kinds += ["fresh", *(["near_fresh"] if near else [])]
            for kind in kinds:
                self.errors[kind].add(pos, rot)
            self.lost_steps += est.lost
            self.steps += 1

    def summary(self) -> dict[str, Any]:
        return {
            **{f"pose_error_{k}": e.summary() for k, e in self.errors.items()},
            "lost_fraction": self.lost_steps / max(self.steps, 1),
            "rejected_markers": dict(self.rejected),
        }


def _run(
    cfg: RunConfig, checkpoint: Path, episodes: int, seed: int, label: str, say: Progress | None
) -> tuple[list[bool], float, MarkerStats | None]:
    """`episodes` episodes from `seed` of one arm: (successes, wall seconds, marker statistics when the arm observes
    marker poses)."""
    from inril_robot.learning.policies.checkpoint import load_checkpoint
    from inril_robot.learning.policies.runner import PolicyRunner

    say = say or _stderr
    stats = MarkerStats() if cfg.markers.enabled else None
    with RobotEnv(cfg) as env:
        runner = PolicyRunner(load_checkpoint(checkpoint, expect_contract=env.contract).policy, env.contract)

        def on_step(episode: int, step: int, done: bool | None) -> None:
            if done is not None and (episode + 1) % 10 == 0:
                say(f"  {label}: episode {episode + 1}/{episodes}")
            if stats is not None:
                stats.record(env)

        started = time.perf_counter()
        summary = run_policy(env, runner, episodes, seed=seed, on_step=on_step, on_reset=runner.reset)
    return [e.success for e in summary.episodes], time.perf_counter() - started, stats


def _merge(parts: list[tuple[list[bool], float, MarkerStats | None]]) -> tuple[list[bool], float, MarkerStats | None]:
    """One arm's chunks, in seed order, as if run at once (wall: the slowest chunk)."""
    stats = None
    for _, _, part in parts:
        if part is not None:
            stats = stats or MarkerStats()
            for kind, errors in part.errors.items():
                stats.errors[kind].position_m += errors.position_m
                stats.errors[kind].rotation_rad += errors.rotation_rad
            stats.lost_steps += part.lost_steps
            stats.steps += part.steps
            stats.rejected.update(part.rejected)
    return [s for part in parts for s in part[0]], max(part[1] for part in parts), stats


def _chunks(episodes: int, n: int) -> list[tuple[int, int]]:
    """(first episode, count) of `n` near-equal consecutive chunks."""
    bounds = np.linspace(0, episodes, n + 1).round().astype(int)
    return [(int(lo), int(hi - lo)) for lo, hi in itertools.pairwise(bounds) if hi > lo]


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _paired(x: list[int], y: list[int]) -> dict[str, int]:
    return {
        "only_first": sum(a and not b for a, b in zip(x, y, strict=True)),
        "only_second": sum(b and not a for a, b in zip(x, y, strict=True)),
        "both": sum(a and b for a, b in zip(x, y, strict=True)),
    }


def marker_bench(
    cfg: RunConfig,
    checkpoint: Path,
    episodes: int = 100,
    seed: int = HELDOUT_SEED_BASE,
    say: Progress | None = None,
    estimated_checkpoint: Path | None = None,
    workers: int = 1,
    only: str = "abc",
) -> dict[str, Any]:
    """Success of `checkpoint` (a state policy trained on true poses) on true vs marker-estimated poses, and of
    `estimated_checkpoint` (trained on marker poses) on marker poses, over the same `episodes` held-out seeds, with
    the estimates' error against the truth (median, 95th percentile) in each marker arm. `workers` > 1 runs the
    episodes in chunks in that many processes (episode i keeps seed + i); `only` picks arms (e.g. "c": every arm's
    per-episode successes are in the result, so separate runs pair up)."""
    say = say or (lambda _: None)
    truth_cfg = cfg.model_copy(update={"markers": cfg.markers.model_copy(update={"enabled": False})})
    marker_cfg = cfg.model_copy(update={"markers": cfg.markers.model_copy(update={"enabled": True})})
    arms: list[tuple[str, RunConfig, Path, str]] = [
        ("a", truth_cfg, checkpoint, "true-pose policy, true poses"),
        ("b", marker_cfg, checkpoint, "true-pose policy, marker poses"),
    ]
    if estimated_checkpoint is not None:
        arms.append(("c", marker_cfg, estimated_checkpoint, "estimated-pose policy, marker poses"))
    arms = [arm for arm in arms if arm[0] in only]
    if not arms:
        raise ValueError(f"no arm to run: {only!r} names none of {'abc' if estimated_checkpoint else 'ab'}")
    out: dict[str, Any] = {
        "task": cfg.task.name,
        "episodes": episodes,
        "seed": seed,
        "dictionary": cfg.markers.dictionary,
        "marker_size_m": cfg.markers.size,
        "cameras": [f"{c.name} {c.width}x{c.height}" for c in cfg.markers.cameras],
        "near_m": NEAR_M,
        "arms": {},
    }
    if workers > 1:  # episodes are independent (episode i: seed + i): chunks of every arm in `workers` processes
        jobs = [
            (key, (arm_cfg, ckpt, count, seed + first, f"arm {key} [{first}, {first + count})", None))
            for key, arm_cfg, ckpt, _ in arms
            for first, count in _chunks(episodes, workers if arm_cfg.markers.enabled else 1)  # rendering: the cost
        ]
        say(f"{len(arms)} arms of {episodes} episodes: {len(jobs)} chunks in {workers} processes")
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [(key, pool.submit(_run, *job)) for key, job in jobs]
            done = [_merge([f.result() for k, f in futures if k == key]) for key, *_ in arms]
    else:
        done = []
        for key, arm_cfg, ckpt, label in arms:
            say(f"arm {key} ({label}): {episodes} episodes")
            done.append(_run(arm_cfg, ckpt, episodes, seed, f"arm {key}", say))
    results: dict[str, list[bool]] = {}
    for (key, arm_cfg, ckpt, label), (successes, wall, stats) in zip(arms, done, strict=True):
        results[key] = successes
        out["arms"][key] = {
            "label": label,
            "checkpoint": str(ckpt),
            "poses": "markers" if arm_cfg.markers.enabled else "simulator",
            "success": wilson_interval(sum(successes), episodes).to_dict(),
            "successes": [int(x) for x in successes],  # per episode, seed + i
            "wall_s": wall,
            **(stats.summary() if stats is not None else {}),
        }
    out["paired"] = paired_counts({k: v["successes"] for k, v in out["arms"].items()})
    if "a" in results and "b" in results:  # the first table's keys (issue 19), kept for scripts that read them
        b = out["arms"]["b"]
        out.update(
            checkpoint=str(checkpoint),
            success_true_poses=out["arms"]["a"]["success"],
            success_estimated_poses=b["success"],
            pose_error_fresh=b["pose_error_fresh"],
            pose_error_observed=b["pose_error_observed"],
            lost_fraction=b["lost_fraction"],
        )
    return out


def paired_counts(successes: dict[str, list[int]]) -> dict[str, dict[str, int]]:
    """Per pair of arms (a_vs_b, b_vs_c, a_vs_c), the episodes that succeed only in the first, only in the second,
    and in both (same seeds)."""
    pairs = (("a", "b"), ("b", "c"), ("a", "c"))
    return {f"{x}_vs_{y}": _paired(successes[x], successes[y]) for x, y in pairs if x in successes and y in successes}
