"""`bench markers`: marker pose error against the simulator's truth, and a state policy on estimated vs true poses.

The same checkpoint runs the same held-out seeds twice (paired): once observing the simulator's object poses, once
observing the poses estimated from the markers the sim renders (`markers.enabled`), everything else equal. Every
step of the marker arm compares the estimate with the truth:

- `fresh`: steps where the object was detected in that step's frames (the detector's accuracy);
- `observed`: every step, stale poses included (what the policy saw, e.g. while the gripper hides the markers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inril_robot.config import RunConfig
from inril_robot.core.seeds import HELDOUT_SEED_BASE
from inril_robot.reporting.rates import wilson_interval
from inril_robot.runtime.env import RobotEnv
from inril_robot.runtime.rollout import run_episodes
from inril_robot.vision.markers import pose_error

Progress = Callable[[str], None]


@dataclass
class PoseErrors:
    position_m: list[float]
    rotation_rad: list[float]

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


def _run(
    cfg: RunConfig, checkpoint: Path, episodes: int, seed: int, errors: dict[str, PoseErrors] | None, say: Progress
) -> tuple[list[bool], dict[str, Any]]:
    from inril_robot.learning.policies.checkpoint import load_checkpoint
    from inril_robot.learning.policies.runner import PolicyRunner

    lost_steps = total_steps = 0
    with RobotEnv(cfg) as env:
        runner = PolicyRunner(load_checkpoint(checkpoint, expect_contract=env.contract).policy, env.contract)

        def on_step(episode: int, step: int, done: bool | None) -> None:
            nonlocal lost_steps, total_steps
            if done is not None and (episode + 1) % 10 == 0:
                say(f"  {'markers' if errors is not None else 'truth'}: episode {episode + 1}/{episodes}")
            if errors is None or env.marker_source is None:
                return
            truth = env.robot.object_poses()  # type: ignore[attr-defined]
            for name, est in env.marker_source.estimates.items():
                pos, rot = pose_error(est.pose, truth[name])
                for kind in ("observed", "fresh") if est.age_s == 0.0 else ("observed",):
                    errors[kind].position_m.append(pos)
                    errors[kind].rotation_rad.append(rot)
                lost_steps += est.lost
                total_steps += 1

        started = time.perf_counter()
        summary = run_episodes(env, runner, episodes, seed=seed, on_step=on_step, on_reset=runner.reset)
    extra = {"wall_s": time.perf_counter() - started, "steps": summary.env_steps}
    if errors is not None:
        extra["lost_fraction"] = lost_steps / max(total_steps, 1)
    return [e.success for e in summary.episodes], extra


def marker_bench(
    cfg: RunConfig, checkpoint: Path, episodes: int = 100, seed: int = HELDOUT_SEED_BASE, say: Progress | None = None
) -> dict[str, Any]:
    """Success of `checkpoint` (a state policy) on true vs marker-estimated poses over the same `episodes` held-out
    seeds, and the estimate's error against the truth (median, 95th percentile)."""
    say = say or (lambda _: None)
    truth_cfg = cfg.model_copy(update={"markers": cfg.markers.model_copy(update={"enabled": False})})
    marker_cfg = cfg.model_copy(update={"markers": cfg.markers.model_copy(update={"enabled": True})})
    errors = {"fresh": PoseErrors([], []), "observed": PoseErrors([], [])}
    say(f"{episodes} episodes observing the simulator's poses")
    truth, truth_extra = _run(truth_cfg, checkpoint, episodes, seed, None, say)
    say(f"{episodes} episodes observing poses estimated from markers ({cfg.markers.dictionary})")
    est, est_extra = _run(marker_cfg, checkpoint, episodes, seed, errors, say)
    only_truth = sum(t and not e for t, e in zip(truth, est, strict=True))
    only_est = sum(e and not t for t, e in zip(truth, est, strict=True))
    return {
        "checkpoint": str(checkpoint),
        "task": cfg.task.name,
        "episodes": episodes,
        "seed": seed,
        "dictionary": cfg.markers.dictionary,
        "marker_size_m": cfg.markers.size,
        "cameras": [f"{c.name} {c.width}x{c.height}" for c in cfg.markers.cameras],
        "success_true_poses": wilson_interval(sum(truth), episodes).to_dict(),
        "success_estimated_poses": wilson_interval(sum(est), episodes).to_dict(),
        "paired": {"succeeded_only_with_true": only_truth, "succeeded_only_with_estimated": only_est},
        "pose_error_fresh": errors["fresh"].summary(),
        "pose_error_observed": errors["observed"].summary(),
        "lost_fraction": est_extra["lost_fraction"],
        "wall_s": {"true": truth_extra["wall_s"], "estimated": est_extra["wall_s"]},
    }
