"""`inril-robot quickstart`: the whole path in simulation on a CPU, one command.

1. record scripted demonstrations (deliberately noisy, so imitation leaves room for RL);
2. pre-train a Gaussian policy on them (behaviour cloning);
3. fine-tune that checkpoint twice with the same env-step budget: RL only (PPO) and IN-RIL (PPO with an IL step every
   m RL steps, PCGrad separation); each run evaluates the pre-trained policy first and its own result last;
4. evaluate the pre-trained checkpoint and both final checkpoints on `heldout_episodes` seeds no stage ever used,
   and write a results table (each arm's move from its start, flagged when it ended below) and one learning-curve
   PNG with both runs.

Every stage resumes: running the same command again continues where it stopped and redoes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inril_robot.config import RunConfig, load_config
from inril_robot.core.atomic import atomic_open
from inril_robot.data.store import Dataset
from inril_robot.learning.inril.common import evaluate_checkpoint
from inril_robot.learning.inril.finetune import FinetuneResult, finetune
from inril_robot.learning.pretrain import pretrain
from inril_robot.runtime.collect import collect
from inril_robot.runtime.env import RobotEnv
from inril_robot.runtime.registry import make_teleop

Stage = Callable[[str], None]
ProgressFn = Callable[[str, dict[str, Any]], None]  # (arm, finetune progress event)
ARMS = {
    "RL only": ["finetune.inril.il_every=0"],
    "IN-RIL": ["finetune.inril.il_every=5", "finetune.inril.separation=pcgrad"],
}


@dataclass
class QuickstartResult:
    out: str
    task: str
    demos: int
    demo_steps: int
    pretrain_steps: int
    finetune_env_steps: int
    results: dict[str, dict[str, Any]]  # arm -> pre-trained / final / best / worst success
    files: dict[str, str]
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def quickstart_config(task: str, demos_noise: float, steps: int, overrides: list[str]) -> RunConfig:
    return load_config(
        robot="sim",
        task=task,
        algo="bc_gaussian",
        overrides=[
            f"task.expert_noise={demos_noise}",
            f"train.steps={steps}",
            f"train.eval_every={max(steps // 2, 1)}",
            f"train.checkpoint_every={max(steps // 2, 1)}",
            "train.eval_episodes=20",
            *overrides,
        ],
    )


def prepare_pretrained(cfg: RunConfig, out: Path, demos: int, say: Stage) -> tuple[Dataset, Path]:
    """Scripted demos in out/demos and a BC checkpoint in out/pretrain (each stage resumes)."""
    say(
        f"recording {demos} scripted {cfg.task.name} demonstrations (expert noise {cfg.task.expert_noise}) -> "
        f"{out / 'demos'}"
    )
    with RobotEnv(cfg) as env:
        collect(cfg, out / "demos", demos, env, make_teleop(cfg, env))
    dataset = Dataset(out / "demos")
    say(f"pre-training a Gaussian policy for {cfg.train.steps} steps -> {out / 'pretrain'}")
    result = pretrain(cfg, dataset, out / "pretrain", resume=(out / "pretrain" / "run.yaml").exists())
    return dataset, Path(result.last_checkpoint)


def run_quickstart(
    out: Path,
    *,
    task: str = "lift",
    demos: int = 50,
    demo_noise: float = 0.5,
    steps: int = 2000,
    env_steps: int = 12_000,
    eval_episodes: int = 50,
    heldout_episodes: int = 100,
    seed: int = 0,
    overrides: list[str] | None = None,
    on_stage: Stage | None = None,
    on_progress: ProgressFn | None = None,
) -> QuickstartResult:
    """`seed` seeds fine-tuning (training episodes, exploration, minibatches); demos and pre-training use seed 0,
    so several seeds in one `out` share the pre-trained checkpoint (paired)."""
    out = Path(out)
    cfg = quickstart_config(task, demo_noise, steps, overrides or [])
    timings: dict[str, float] = {}
    say = on_stage or (lambda _: None)

    started = time.perf_counter()
    dataset, checkpoint = prepare_pretrained(cfg, out, demos, lambda text: say(f"1-2/4 {text}"))
    timings["demos + pretrain"] = time.perf_counter() - started

    runs: dict[str, FinetuneResult] = {}
    for i, (arm, arm_overrides) in enumerate(ARMS.items()):
        arm_cfg = quickstart_config(
            task,
            demo_noise,
            steps,
            [
                f"seed={seed}",
                f"finetune.env_steps={env_steps}",
                f"finetune.eval_episodes={eval_episodes}",
                "finetune.eval_every=4",
                *arm_overrides,
                *(overrides or []),
            ],
        )
        folder = out / (("finetune_rl_only" if i == 0 else "finetune_inril") + (f"_seed{seed}" if seed else ""))
        say(f"3/4 fine-tuning ({arm}) for {env_steps:,} env steps -> {folder}")
        started = time.perf_counter()
        runs[arm] = finetune(
            arm_cfg,
            checkpoint,
            dataset,
            folder,
            resume=(folder / "run.yaml").exists(),
            on_progress=(lambda e, a=arm: on_progress(a, e)) if on_progress else None,
        )
        timings[f"finetune {arm}"] = time.perf_counter() - started

    say(f"4/4 held-out evaluation on {heldout_episodes} never-used seeds: the pre-trained and both final checkpoints")
    started = time.perf_counter()
    pre = evaluate_checkpoint(cfg, checkpoint, heldout_episodes, cache=out / "pretrain" / "heldout.json")
    results = {
        arm: _result_row(
            r,
            pre,
            evaluate_checkpoint(cfg, Path(r.last_checkpoint), heldout_episodes, cache=Path(r.out) / "heldout.json"),
        )
        for arm, r in runs.items()
    }
    timings["held-out evaluation"] = time.perf_counter() - started
    curves = out / "learning_curves.png"
    plot_comparison(
        {arm: Path(r.files["metrics"]) for arm, r in runs.items()},
        curves,
        f"{task}: RL only vs IN-RIL from the same pre-trained checkpoint",
    )
    files = {
        "demos": str(out / "demos"),
        "pretrained": str(checkpoint),
        "learning_curves": str(curves),
        **{f"checkpoint {arm}": r.last_checkpoint for arm, r in runs.items()},
        **{f"metrics {arm}": r.files["metrics"] for arm, r in runs.items()},
    }
    return QuickstartResult(
        str(out), task, len(dataset), dataset.num_steps, cfg.train.steps, env_steps, results, files, timings
    )


def _result_row(run: FinetuneResult, heldout_pre: dict[str, Any], heldout_final: dict[str, Any]) -> dict[str, Any]:
    """An arm's in-run and held-out results; `moved` is the held-out change from the pre-trained checkpoint and
    `below_start` flags an arm that ended below it."""
    successes = [e["success_rate"] for e in run.evals]
    moved = heldout_final["success"]["rate"] - heldout_pre["success"]["rate"]
    return {
        "pretrained": run.pretrained["success"] if run.pretrained else None,
        "final": run.final["success"] if run.final else None,
        "best": run.best["success"] if run.best else None,
        "worst_after_start": min(successes[1:]) if len(successes) > 1 else None,
        "heldout_pretrained": heldout_pre["success"],
        "heldout_final": heldout_final["success"],
        "heldout_stops": {"pretrained": heldout_pre["stops"], "final": heldout_final["stops"]},
        "moved": moved,
        "below_start": moved < 0,
        "env_steps": run.env_steps,
        "wall_s": run.wall_s,
        "checkpoint": run.last_checkpoint,
    }


def plot_comparison(metrics: dict[str, Path], path: Path, title: str) -> None:
    """Evaluation success (Wilson 95% band) against env steps, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from inril_robot.learning.runs import read_metrics

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, csv_path in metrics.items():
        rows = [r for r in read_metrics(csv_path) if r.get("eval_success") is not None]
        x = [r["env_steps"] for r in rows]
        ax.fill_between(x, [r["eval_ci_low"] for r in rows], [r["eval_ci_high"] for r in rows], alpha=0.15)
        ax.plot(x, [r["eval_success"] for r in rows], marker="o", lw=1.6, label=name)
    ax.set(
        xlabel="env steps (executed control steps)",
        ylabel="evaluation success (held-out seeds)",
        ylim=(-0.02, 1.02),
        title=title,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
