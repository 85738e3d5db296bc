"""`inril-robot bench sample-efficiency`: RL-only against IN-RIL variants, same checkpoint, same env-step budget.

For every task, one pre-trained checkpoint (noisy scripted demos -> Gaussian BC, as the quickstart makes it) is
fine-tuned by every arm with N seeds. Per arm we report, each as a mean over seeds with a Student-t 95% interval:

- env steps until the deterministic evaluation first reaches 50% and 80% success (a seed that never does counts as
  the budget, and the table marks the figure ">=" with how many seeds reached it);
- the final success;
- the worst success after fine-tuning starts (a performance collapse shows here), next to the pre-trained success.

Runs are resumable and reused: each (task, arm, seed) lives in its own run folder; a finished one is read back, an
interrupted one resumed. Outputs: `runs.csv` (one row per run), `summary.csv`, `summary.md`, `curves_<task>.png`.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inril_robot.atomic import atomic_open
from inril_robot.config import load_config
from inril_robot.data.store import Dataset
from inril_robot.inril.finetune import finetune
from inril_robot.pretrain import read_metrics
from inril_robot.stats import mean_ci

# arm name -> config overrides (on top of the task preset and the bench's budget)
ARMS: dict[str, list[str]] = {
    "rl-only": ["finetune.inril.il_every=0"],
    "in-ril m=2 pcgrad": ["finetune.inril.il_every=2", "finetune.inril.separation=pcgrad"],
    "in-ril m=5 pcgrad": ["finetune.inril.il_every=5", "finetune.inril.separation=pcgrad"],
    "in-ril m=10 pcgrad": ["finetune.inril.il_every=10", "finetune.inril.separation=pcgrad"],
    "in-ril auto pcgrad": ["finetune.inril.il_every=auto", "finetune.inril.separation=pcgrad"],
    "in-ril m=5 none": ["finetune.inril.il_every=5", "finetune.inril.separation=none"],
    "in-ril m=5 orthogonal": ["finetune.inril.il_every=5", "finetune.inril.separation=orthogonal"],
    "residual rl-only": ["finetune.algo=residual-ppo", "finetune.inril.il_every=0"],
    "residual in-ril m=5": ["finetune.algo=residual-ppo", "finetune.inril.il_every=5",
                            "finetune.inril.separation=residual"],
}
DEFAULT_ARMS = ("rl-only", "in-ril m=5 pcgrad", "in-ril auto pcgrad", "in-ril m=5 none", "in-ril m=5 orthogonal",
                "residual in-ril m=5")
THRESHOLDS = (0.5, 0.8)
Say = Callable[[str], None]


@dataclass
class RunOutcome:
    task: str
    arm: str
    seed: int
    pretrained: float
    final: float
    worst_after_start: float
    steps_to: dict[float, int | None]  # threshold -> env steps of the first evaluation at or above it
    env_steps: int
    curve: list[tuple[int, float]]  # (env steps, eval success)
    wall_s: float

    def row(self) -> dict[str, Any]:
        return {"task": self.task, "arm": self.arm, "seed": self.seed, "pretrained": self.pretrained,
                "final": self.final, "worst_after_start": self.worst_after_start, "env_steps": self.env_steps,
                **{f"steps_to_{int(t * 100)}": ("" if s is None else s) for t, s in self.steps_to.items()},
                "wall_s": round(self.wall_s, 1), "curve": json.dumps(self.curve)}


def outcome_from_curve(task: str, arm: str, seed: int, curve: list[tuple[int, float]], env_steps: int,
                       wall_s: float) -> RunOutcome:
    """Threshold crossings, final and worst success from the evaluation curve (its first point: the pre-trained)."""
    if not curve or curve[0][0] != 0:
        raise ValueError(f"{task}/{arm}/seed {seed}: the evaluation curve must start with the pre-trained policy")
    after = [s for _, s in curve[1:]] or [curve[0][1]]
    steps_to = {t: next((x for x, s in curve if s >= t), None) for t in THRESHOLDS}
    return RunOutcome(task, arm, seed, curve[0][1], curve[-1][1], min(after), steps_to, env_steps, curve, wall_s)


def run_arm(task: str, arm: str, seed: int, checkpoint: Path, demos: Dataset, out: Path, budget: int,
            overrides: list[str], on_progress: Callable[[dict[str, Any]], None] | None = None) -> RunOutcome:
    cfg = load_config(robot="sim", task=task, overrides=[
        f"seed={seed}", f"finetune.env_steps={budget}", *ARMS[arm], *overrides])
    metrics = out / "metrics.csv"
    started = time.perf_counter()
    rows = read_metrics(metrics)
    if not (rows and rows[-1].get("env_steps") is not None and rows[-1]["env_steps"] >= budget
            and rows[-1].get("eval_success") is not None):
        finetune(cfg, checkpoint, demos, out, resume=(out / "run.yaml").exists(), on_progress=on_progress)
        rows = read_metrics(metrics)
    curve = [(int(r["env_steps"]), float(r["eval_success"])) for r in rows if r.get("eval_success") is not None]
    return outcome_from_curve(task, arm, seed, curve, int(rows[-1]["env_steps"]), time.perf_counter() - started)


# ------------------------------------------------------------------------------------------------ summary
def summarize(outcomes: list[RunOutcome], budget: int) -> list[dict[str, Any]]:
    """One row per (task, arm): means over seeds with 95% intervals; never-reached thresholds count as the budget."""
    groups: dict[tuple[str, str], list[RunOutcome]] = {}
    for o in outcomes:
        groups.setdefault((o.task, o.arm), []).append(o)
    rows = []
    for (task, arm), runs in groups.items():
        row: dict[str, Any] = {"task": task, "arm": arm, "seeds": len(runs)}
        for t in THRESHOLDS:
            steps = [budget if o.steps_to[t] is None else o.steps_to[t] for o in runs]
            row[f"steps_to_{int(t * 100)}"] = mean_ci([float(s) for s in steps]).to_dict()
            row[f"reached_{int(t * 100)}"] = sum(o.steps_to[t] is not None for o in runs)
        row["pretrained"] = mean_ci([o.pretrained for o in runs]).to_dict()
        row["final"] = mean_ci([o.final for o in runs]).to_dict()
        row["worst_after_start"] = mean_ci([o.worst_after_start for o in runs]).to_dict()
        row["worst_below_pretrained"] = sum(o.worst_after_start < o.pretrained for o in runs)
        rows.append(row)
    for task in {r["task"] for r in rows}:
        base = next((r for r in rows if r["task"] == task and r["arm"] == "rl-only"), None)
        for r in rows:
            if r["task"] == task and base is not None:
                for t in THRESHOLDS:
                    key = f"steps_to_{int(t * 100)}"
                    r[f"speedup_{int(t * 100)}"] = base[key]["mean"] / max(r[key]["mean"], 1.0)
    return rows


def _fmt_ci(ci: dict[str, Any], percent: bool = False) -> str:
    if ci["n"] == 0:
        return "-"
    if percent:
        return f"{ci['mean']:.0%} [{max(ci['ci95_low'], 0):.0%}, {min(ci['ci95_high'], 1):.0%}]"
    return f"{ci['mean']:,.0f} [{max(ci['ci95_low'], 0):,.0f}, {ci['ci95_high']:,.0f}]"


def markdown_table(rows: list[dict[str, Any]], budget: int, seeds: int, eval_episodes: int) -> str:
    lines = [f"Budget {budget:,} env steps per run, {seeds} seeds per arm, evaluation on {eval_episodes} held-out "
             "episodes (deterministic policy). Means over seeds with Student-t 95% intervals. A seed that never "
             "reached a threshold counts as the budget (\">=\"; reached k/n).", "",
             "| task | arm | steps to 50% | steps to 80% | speed-up to 80% vs RL-only | final success | "
             "worst after start | pre-trained |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = []
        for t in (50, 80):
            reached, n = r[f"reached_{t}"], r["seeds"]
            prefix = ">= " if reached < n else ""
            cells.append(f"{prefix}{_fmt_ci(r[f'steps_to_{t}'])} ({reached}/{n})")
        speedup = r.get("speedup_80")
        lines.append(f"| {r['task']} | {r['arm']} | {cells[0]} | {cells[1]} | "
                     f"{'-' if speedup is None else f'{speedup:.2f}x'} | {_fmt_ci(r['final'], True)} | "
                     f"{_fmt_ci(r['worst_after_start'], True)} | {_fmt_ci(r['pretrained'], True)} |")
    return "\n".join(lines) + "\n"


def plot_curves(outcomes: list[RunOutcome], task: str, budget: int, path: Path) -> None:
    """Mean evaluation success against env steps per arm (last evaluation carried forward), with a 95% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0, budget, 101)
    fig, ax = plt.subplots(figsize=(8, 5))
    for arm in dict.fromkeys(o.arm for o in outcomes if o.task == task):
        runs = [o for o in outcomes if o.task == task and o.arm == arm]
        # the curve starts at 0 env steps, so some evaluation is always at or before a grid point
        curves = np.array([[[s for x, s in o.curve if x <= g][-1] for g in grid] for o in runs])  # (seeds, grid)
        stats = [mean_ci(list(col)) for col in curves.T]
        mean = np.array([s.mean for s in stats])
        ax.plot(grid, mean, lw=1.6, label=f"{arm} ({len(runs)} seeds)")
        if len(runs) > 1:
            ax.fill_between(grid, np.clip([s.low for s in stats], 0, 1), np.clip([s.high for s in stats], 0, 1),
                            alpha=0.15)
    for t in THRESHOLDS:
        ax.axhline(t, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="env steps (executed control steps)", ylabel="evaluation success", ylim=(-0.02, 1.02),
           title=f"sample efficiency · {task} · mean over seeds, 95% band")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def write_reports(outcomes: list[RunOutcome], rows: list[dict[str, Any]], out: Path, budget: int, seeds: int,
                  eval_episodes: int) -> dict[str, str]:
    files = {"runs": str(out / "runs.csv"), "summary_csv": str(out / "summary.csv"),
             "summary_md": str(out / "summary.md")}
    with atomic_open(out / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(outcomes[0].row()))
        writer.writeheader()
        writer.writerows(o.row() for o in outcomes)
    flat = [{k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in r.items()} for r in rows]
    with atomic_open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in flat for k in r)))
        writer.writeheader()
        writer.writerows(flat)
    with atomic_open(out / "summary.md", "w") as f:
        f.write(markdown_table(rows, budget, seeds, eval_episodes))
    for task in dict.fromkeys(o.task for o in outcomes):
        path = out / f"curves_{task}.png"
        plot_curves(outcomes, task, budget, path)
        files[f"curves_{task}"] = str(path)
    return files


def bench_sample_efficiency(out: Path, tasks: list[str], arms: list[str], seeds: int, budget: int,
                            overrides: list[str], prepare: Callable[[str, Path], tuple[Dataset, Path]],
                            say: Say | None = None,
                            on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every (task, arm, seed); `prepare(task, folder)` gives the demos and the pre-trained checkpoint of a task."""
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; available: {', '.join(ARMS)}")
    say = say or (lambda _: None)
    out.mkdir(parents=True, exist_ok=True)
    outcomes: list[RunOutcome] = []
    started = time.perf_counter()
    total = len(tasks) * len(arms) * seeds
    for task in tasks:
        say(f"{task}: demonstrations and pre-trained checkpoint -> {out / task / 'pretrained'}")
        demos, checkpoint = prepare(task, out / task / "pretrained")
        for seed in range(seeds):  # seed-major: an interrupted bench still has every arm for its first seeds
            for arm in arms:
                say(f"[{len(outcomes) + 1}/{total}] {task} · {arm} · seed {seed}")
                folder = out / task / arm.replace(" ", "_").replace("=", "") / f"seed{seed}"
                outcomes.append(run_arm(task, arm, seed, checkpoint, demos, folder, budget, overrides, on_progress))
    rows = summarize(outcomes, budget)
    cfg = load_config(robot="sim", task=tasks[0], overrides=overrides)
    files = write_reports(outcomes, rows, out, budget, seeds, cfg.finetune.eval_episodes)
    return {"tasks": tasks, "arms": arms, "seeds": seeds, "budget": budget, "overrides": overrides,
            "summary": rows, "runs": [o.row() for o in outcomes], "files": files,
            "wall_s": time.perf_counter() - started}
