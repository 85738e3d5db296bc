"""`inril-robot quickstart`: the whole path in simulation on a CPU, one command.

Today: record scripted demonstrations (deliberately noisy, so imitation leaves room for RL), pre-train a policy on
them, and evaluate it on held-out seeds. The IN-RIL fine-tuning stage (IN-RIL vs RL-only side by side) joins this
pipeline with the fine-tuning engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inril_robot.collect import collect
from inril_robot.config import RunConfig, load_config
from inril_robot.data.store import Dataset
from inril_robot.env import RobotEnv
from inril_robot.policies.checkpoint import load_checkpoint
from inril_robot.policies.runner import PolicyRunner
from inril_robot.pretrain import EVAL_SEED_BASE, pretrain, run_contract
from inril_robot.registry import make_teleop
from inril_robot.rollout import run_episodes

Stage = Callable[[str], None]


@dataclass
class QuickstartResult:
    out: str
    task: str
    demos: int
    demo_steps: int
    pretrain_steps: int
    eval: dict[str, Any]
    files: dict[str, str]
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def quickstart_config(task: str, demos_noise: float, steps: int, overrides: list[str]) -> RunConfig:
    return load_config(robot="sim", task=task, algo="bc_gaussian", overrides=[
        f"task.expert_noise={demos_noise}", f"train.steps={steps}", f"train.eval_every={max(steps // 2, 1)}",
        f"train.checkpoint_every={max(steps // 2, 1)}", "train.eval_episodes=20", *overrides,
    ])


def run_quickstart(out: Path, *, task: str = "lift", demos: int = 50, demo_noise: float = 0.5, steps: int = 2000,
                   eval_episodes: int = 50, overrides: list[str] | None = None,
                   on_stage: Stage | None = None) -> QuickstartResult:
    out = Path(out)
    cfg = quickstart_config(task, demo_noise, steps, overrides or [])
    timings: dict[str, float] = {}
    say = on_stage or (lambda _: None)

    say(f"1/3 recording {demos} scripted {task} demonstrations (expert noise {demo_noise}) -> {out / 'demos'}")
    started = time.perf_counter()
    with RobotEnv(cfg) as env:
        collect(cfg, out / "demos", demos, env, make_teleop(cfg, env))
    dataset = Dataset(out / "demos")
    timings["collect"] = time.perf_counter() - started

    say(f"2/3 pre-training a Gaussian policy for {steps} steps -> {out / 'pretrain'}")
    started = time.perf_counter()
    result = pretrain(cfg, dataset, out / "pretrain", resume=(out / "pretrain" / "run.yaml").exists())
    timings["pretrain"] = time.perf_counter() - started

    say(f"3/3 evaluating the pre-trained policy on {eval_episodes} held-out seeds")
    started = time.perf_counter()
    with RobotEnv(cfg) as env:
        loaded = load_checkpoint(Path(result.last_checkpoint), expect_contract=run_contract(cfg))
        runner = PolicyRunner(loaded.policy, run_contract(cfg), "cpu")
        summary = run_episodes(env, runner, eval_episodes, seed=EVAL_SEED_BASE, on_reset=runner.reset,
                               policy_name="gaussian")
    timings["eval"] = time.perf_counter() - started
    files = {"demos": str(out / "demos"), "checkpoint": result.last_checkpoint,
             "curves": str(out / "pretrain" / "curves.png"), "metrics": str(out / "pretrain" / "metrics.csv")}
    return QuickstartResult(str(out), task, len(dataset), dataset.num_steps, result.step, summary.to_dict(), files,
                            timings)
