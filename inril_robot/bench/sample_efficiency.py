"""`inril-robot bench sample-efficiency`: RL-only against IN-RIL variants and baselines, paired seeds, held-out tests.

For every task, one pre-trained checkpoint (scripted demos -> Gaussian BC, as the quickstart makes it) is fine-tuned
by every arm with the same seeds (seed s gives every arm the same training-episode seeds: paired). Per run:

- the in-run evaluation curve (`finetune.eval_episodes`, >= 50 by default here, on the in-run evaluation seeds) and
  its area under the curve (AUC: mean success over the budget, trapezoids, the last evaluation carried to the budget);
- a final **held-out** evaluation of `last.pt` on `heldout_episodes` (>= 100) seeds that nothing else ever used, next
  to the pre-trained checkpoint's held-out success on the same seeds;
- a collapse: final held-out success more than `COLLAPSE_DROP` (15 points) below the pre-trained held-out success.

Per arm: means over seeds with Student-t 95% intervals, collapse counts, and **paired differences** against RL only
(and the aggressive IN-RIL arm against the aggressive RL-only): mean per-seed difference with its t interval and the
number of seeds the arm won. The decision rules (`DECISION_RULES`) are fixed before the runs and printed with the
table, each with its verdict. Extreme-value statistics (first crossing of a threshold, the worst evaluation) are not
reported: binomial noise alone biases them.

Runs are resumable and reused: each (task, arm, seed) lives in its own run folder; a finished one is read back (its
held-out result is cached in `heldout.json`), an interrupted one resumed. Outputs: `runs.csv`, `summary.csv`,
`summary.md` (table + verdicts), `curves_<task>.png`.
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

from inril_robot.config import RunConfig, load_config
from inril_robot.core.atomic import atomic_open
from inril_robot.data.store import Dataset
from inril_robot.learning.inril.common import evaluate_checkpoint
from inril_robot.learning.inril.finetune import finetune
from inril_robot.learning.runs import read_metrics
from inril_robot.reporting.rates import mean_ci

AGGRESSIVE = ["finetune.ppo.lr_schedule=fixed", "finetune.ppo.actor_lr=1e-4", "finetune.ppo.target_kl=null"]
# BC-regularised RL: lambda chosen so the BC gradient is of the order of the PPO gradient (the IL NLL's gradient norm
# measured 8-10x PPO's on lift, review D9)
BC_COEF = 0.1
# the IL-only control: IN-RIL's IL steps at a fixed lr where the tied IL lr sits on lift (measured 0.7-1e-5), the
# RL steps computed but not applied
IL_ONLY_LR = 1e-5
# arm name -> config overrides (on top of the task preset and the bench's budget)
ARMS: dict[str, list[str]] = {
    "rl-only": ["finetune.inril.il_every=0"],
    "rl-only aggressive": ["finetune.inril.il_every=0", *AGGRESSIVE],
    "bc-regularised rl": ["finetune.inril.il_every=0", f"finetune.inril.bc_coef={BC_COEF}"],
    "il-only control": [
        "finetune.inril.il_every=5",
        "finetune.inril.separation=none",
        "finetune.inril.apply_rl=false",
        "finetune.inril.il_lr_ratio=null",
        f"finetune.inril.il_lr={IL_ONLY_LR}",
    ],
    "in-ril m=2 pcgrad": ["finetune.inril.il_every=2", "finetune.inril.separation=pcgrad"],
    "in-ril m=5 pcgrad": ["finetune.inril.il_every=5", "finetune.inril.separation=pcgrad"],
    "in-ril m=5 pcgrad aggressive": ["finetune.inril.il_every=5", "finetune.inril.separation=pcgrad", *AGGRESSIVE],
    "in-ril m=10 pcgrad": ["finetune.inril.il_every=10", "finetune.inril.separation=pcgrad"],
    "in-ril auto pcgrad": ["finetune.inril.il_every=auto", "finetune.inril.separation=pcgrad"],
    "in-ril m=5 none": ["finetune.inril.il_every=5", "finetune.inril.separation=none"],
    "in-ril m=5 orthogonal": ["finetune.inril.il_every=5", "finetune.inril.separation=orthogonal"],
    "residual rl-only": ["finetune.algo=residual-ppo", "finetune.inril.il_every=0"],
    "residual in-ril m=5": [
        "finetune.algo=residual-ppo",
        "finetune.inril.il_every=5",
        "finetune.inril.separation=residual",
    ],
}
# off-policy arms (docs/inril.md "Off-policy"): RLPD = SAC with demos in every batch (50/50, recorded rewards); SAC +
# IN-RIL keeps demos on the IL side only (no reward labels); IDQL trains on its own replay (the paper's base)
ARMS.update(
    {
        "rlpd": ["finetune.algo=sac", "finetune.inril.il_every=0", "finetune.offpolicy.demo_fraction=0.5"],
        "sac in-ril m=5": [
            "finetune.algo=sac",
            "finetune.inril.il_every=5",
            "finetune.inril.separation=pcgrad",
            "finetune.offpolicy.demo_fraction=0.0",
        ],
        "rlpd in-ril m=5": [
            "finetune.algo=sac",
            "finetune.inril.il_every=5",
            "finetune.inril.separation=pcgrad",
            "finetune.offpolicy.demo_fraction=0.5",
        ],
        # a bounded residual on the BC policy, demos in every batch; IN-RIL: IL steps train the base (separation)
        "residual rlpd": [
            "finetune.algo=residual-sac",
            "finetune.inril.il_every=0",
            "finetune.offpolicy.demo_fraction=0.5",
        ],
        "residual rlpd in-ril m=5": [
            "finetune.algo=residual-sac",
            "finetune.inril.il_every=5",
            "finetune.inril.separation=residual",
            "finetune.offpolicy.demo_fraction=0.5",
        ],
        "idql": ["finetune.algo=idql", "finetune.inril.il_every=0", "finetune.offpolicy.demo_fraction=0.0"],
        "idql in-ril m=5": [
            "finetune.algo=idql",
            "finetune.inril.il_every=5",
            "finetune.inril.separation=pcgrad",
            "finetune.offpolicy.demo_fraction=0.0",
        ],
    }
)
OFF_POLICY_ARMS = (
    "rlpd",
    "sac in-ril m=5",
    "rlpd in-ril m=5",
    "residual rlpd",
    "residual rlpd in-ril m=5",
    "idql",
    "idql in-ril m=5",
)
DIFFUSION_ARMS = ("idql", "idql in-ril m=5")
# the baseline each arm's paired differences are taken against
BASELINE = {
    "in-ril m=5 pcgrad aggressive": "rl-only aggressive",
    "residual in-ril m=5": "residual rl-only",
    "sac in-ril m=5": "rlpd",
    "rlpd in-ril m=5": "rlpd",
    "residual rlpd in-ril m=5": "residual rlpd",
    "idql in-ril m=5": "idql",
}
STEPS_PER_ROBOT_MINUTE = 600  # 10 Hz control: env steps a person supervises per minute


@dataclass(frozen=True)
class Regime:
    """A pre-trained checkpoint (how it is made) and the arms fine-tuned from it."""

    description: str
    tasks: tuple[str, ...]
    demos: int
    demo_noise: float
    pretrain_steps: int
    arms: tuple[str, ...]


REGIMES: dict[str, Regime] = {
    "A": Regime(
        "today's checkpoint: 50 demos at noise 0.5, 2,000 BC steps (converged on its demos)",
        ("lift",),
        50,
        0.5,
        2000,
        (
            "rl-only",
            "in-ril m=5 pcgrad",
            "in-ril m=5 none",
            "bc-regularised rl",
            "rl-only aggressive",
            "in-ril m=5 pcgrad aggressive",
        ),
    ),
    "B": Regime(
        "headroom: 100 demos at noise 0.2 (better than the policy), 300 BC steps (under-trained)",
        ("lift", "peg"),
        100,
        0.2,
        300,
        ("rl-only", "in-ril m=5 pcgrad", "in-ril m=2 pcgrad", "il-only control"),
    ),
}
COLLAPSE_DROP = 0.15
HELDOUT_EPISODES = 100
DECISION_RULES = (
    (
        "collapse",
        "IN-RIL prevents the aggressive RL-only collapse: 'in-ril m=5 pcgrad aggressive' has fewer collapses "
        "than 'rl-only aggressive' and a final held-out success >= it in every paired seed",
    ),
    (
        "final",
        "IN-RIL m=5 PCGrad beats RL only: the paired final held-out difference's 95% interval lies above 0 "
        "(below 0: it hurts; containing 0: no detectable difference)",
    ),
    (
        "auc",
        "IN-RIL is more sample-efficient: some IN-RIL arm's paired AUC difference against RL only has a 95% "
        "interval above 0, and it also beats the IL-only control's AUC when that arm ran",
    ),
    (
        "separation",
        "separation matters: 'in-ril m=5 pcgrad' minus 'in-ril m=5 none' (paired final held-out) has a 95% "
        "interval excluding 0",
    ),
)
Say = Callable[[str], None]


@dataclass
class RunOutcome:
    task: str
    arm: str
    seed: int
    pretrained: float  # in-run evaluation of the pre-trained policy (the curve's first point)
    final: float  # the last in-run evaluation
    auc: float
    heldout_pretrained: float
    heldout_final: float
    env_steps: int
    curve: list[tuple[int, float]]  # (env steps, eval success)
    wall_s: float

    @property
    def collapsed(self) -> bool:
        return self.heldout_final < self.heldout_pretrained - COLLAPSE_DROP

    def row(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "arm": self.arm,
            "seed": self.seed,
            "pretrained": self.pretrained,
            "final": self.final,
            "auc": round(self.auc, 4),
            "heldout_pretrained": self.heldout_pretrained,
            "heldout_final": self.heldout_final,
            "collapsed": int(self.collapsed),
            "env_steps": self.env_steps,
            "wall_s": round(self.wall_s, 1),
            "curve": json.dumps(self.curve),
        }


def curve_auc(curve: list[tuple[int, float]], budget: int) -> float:
    """Mean success over [0, budget]: trapezoids between evaluations, the last one carried to the budget."""
    if not curve or curve[0][0] != 0:
        raise ValueError("the evaluation curve must start with the pre-trained policy at 0 env steps")
    xs = [float(x) for x, _ in curve] + ([float(budget)] if curve[-1][0] < budget else [])
    ys = [s for _, s in curve] + ([curve[-1][1]] if curve[-1][0] < budget else [])
    end = max(xs[-1], 1.0)
    return float(np.trapezoid(ys, xs) / end) if len(xs) > 1 else float(ys[0])


def outcome_from_curve(
    task: str,
    arm: str,
    seed: int,
    curve: list[tuple[int, float]],
    budget: int,
    wall_s: float,
    heldout_pretrained: float = float("nan"),
    heldout_final: float = float("nan"),
) -> RunOutcome:
    if not curve or curve[0][0] != 0:
        raise ValueError(f"{task}/{arm}/seed {seed}: the evaluation curve must start with the pre-trained policy")
    return RunOutcome(
        task,
        arm,
        seed,
        curve[0][1],
        curve[-1][1],
        curve_auc(curve, budget),
        heldout_pretrained,
        heldout_final,
        curve[-1][0],
        curve,
        wall_s,
    )


def arm_config(task: str, arm: str, seed: int, budget: int, overrides: list[str]) -> RunConfig:
    return load_config(
        robot="sim", task=task, overrides=[f"seed={seed}", f"finetune.env_steps={budget}", *ARMS[arm], *overrides]
    )


def finished(out: Path, budget: int) -> bool:
    rows = read_metrics(out / "metrics.csv")
    return bool(
        rows
        and rows[-1].get("env_steps") is not None
        and rows[-1]["env_steps"] >= budget
        and rows[-1].get("eval_success") is not None
    )


def run_arm(
    task: str,
    arm: str,
    seed: int,
    checkpoint: Path,
    demos: Dataset,
    out: Path,
    budget: int,
    overrides: list[str],
    heldout_pretrained: float,
    heldout_episodes: int = HELDOUT_EPISODES,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> RunOutcome:
    cfg = arm_config(task, arm, seed, budget, overrides)
    metrics = out / "metrics.csv"
    started = time.perf_counter()
    if not finished(out, budget):
        finetune(cfg, checkpoint, demos, out, resume=(out / "run.yaml").exists(), on_progress=on_progress)
    rows = read_metrics(metrics)
    curve = [(int(r["env_steps"]), float(r["eval_success"])) for r in rows if r.get("eval_success") is not None]
    heldout = evaluate_checkpoint(cfg, out / "last.pt", heldout_episodes, cache=out / "heldout.json")
    return outcome_from_curve(
        task, arm, seed, curve, budget, time.perf_counter() - started, heldout_pretrained, heldout["success"]["rate"]
    )


def _run_one(run: tuple[Any, ...]) -> RunOutcome:
    import torch

    torch.set_num_threads(1)
    return run_arm(*run)


def _run_parallel(runs: list[tuple[Any, ...]], jobs: int, say: Say) -> list[RunOutcome]:
    """The runs in `jobs` worker processes (spawned: no forked torch or MuJoCo state); a line as each one ends, the
    outcomes in the runs' order (a failed run raises after the others finished)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    results: dict[int, RunOutcome] = {}
    errors: list[str] = []
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_run_one, run): i for i, run in enumerate(runs)}
        say(f"{len(runs)} runs in {min(jobs, len(runs))} processes")
        for future in as_completed(futures):
            i = futures[future]
            task, arm, seed = runs[i][:3]
            try:
                results[i] = o = future.result()
            except Exception as e:
                errors.append(f"{task} · {arm} · seed {seed}: {type(e).__name__}: {e}")
                say(f"[{len(results) + len(errors)}/{len(runs)}] {task} · {arm} · seed {seed} failed: {e}")
                continue
            say(
                f"[{len(results) + len(errors)}/{len(runs)}] {task} · {arm} · seed {seed}: held-out "
                f"{o.heldout_pretrained:.0%} -> {o.heldout_final:.0%} ({o.wall_s / 60:.1f} min)"
            )
    if errors:
        raise RuntimeError("runs failed: " + "; ".join(errors))
    return [results[i] for i in range(len(runs))]


def kind_of(arm: str) -> str:
    """The pre-trained policy an arm starts from: IDQL fine-tunes a diffusion policy, every other arm the Gaussian."""
    return "diffusion" if arm in DIFFUSION_ARMS else "gaussian"


def prepare_diffusion(task: str, demos: Dataset, folder: Path, overrides: list[str], steps: int = 2000) -> Path:
    """A diffusion BC checkpoint on the bench's demonstrations (preset bc_diffusion, `steps` gradient steps); an
    existing one is reused."""
    from inril_robot.learning.pretrain import pretrain

    if (folder / "last.pt").is_file():
        return folder / "last.pt"
    cfg = load_config(
        robot="sim",
        task=task,
        algo="bc_diffusion",
        overrides=[f"train.steps={steps}", "train.eval_every=0", f"train.checkpoint_every={steps}", *overrides],
    )
    return Path(pretrain(cfg, demos, folder, resume=(folder / "run.yaml").exists()).last_checkpoint)


# ------------------------------------------------------------------------------------------------ summary
def paired(outcomes: list[RunOutcome], task: str, arm: str, base: str, metric: str) -> dict[str, Any] | None:
    """Per-seed `metric` differences arm - base over the seeds both ran: mean, t interval, wins."""
    by_seed = {(o.arm, o.seed): getattr(o, metric) for o in outcomes if o.task == task}
    seeds = sorted(s for a, s in by_seed if a == arm and (base, s) in by_seed)
    if not seeds or arm == base:
        return None
    diffs = [by_seed[(arm, s)] - by_seed[(base, s)] for s in seeds]
    return {
        "base": base,
        **mean_ci(diffs).to_dict(),
        "wins": sum(d > 0 for d in diffs),
        "ties": sum(d == 0 for d in diffs),
        "diffs": diffs,
    }


def summarize(outcomes: list[RunOutcome]) -> list[dict[str, Any]]:
    """One row per (task, arm): means over seeds with 95% intervals, collapses, paired differences."""
    groups: dict[tuple[str, str], list[RunOutcome]] = {}
    for o in outcomes:
        groups.setdefault((o.task, o.arm), []).append(o)
    rows = []
    for (task, arm), runs in groups.items():
        row: dict[str, Any] = {"task": task, "arm": arm, "seeds": len(runs)}
        for key in ("heldout_pretrained", "heldout_final", "auc", "pretrained", "final"):
            row[key] = mean_ci([getattr(o, key) for o in runs]).to_dict()
        row["collapses"] = sum(o.collapsed for o in runs)
        row["below_start"] = sum(o.heldout_final < o.heldout_pretrained for o in runs)
        base = BASELINE.get(arm, "rl-only")
        row["vs"] = base
        row["paired_final"] = paired(outcomes, task, arm, base, "heldout_final")
        row["paired_auc"] = paired(outcomes, task, arm, base, "auc")
        rows.append(row)
    return rows


def _interval(p: dict[str, Any] | None) -> str:
    return (
        "untested"
        if p is None or p["n"] < 2
        else ("above 0" if p["ci95_low"] > 0 else "below 0" if p["ci95_high"] < 0 else "contains 0")
    )


def decide(outcomes: list[RunOutcome], rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Each pre-registered rule's verdict per task: supported / not supported / not run, with the evidence."""
    verdicts = []
    for task in dict.fromkeys(o.task for o in outcomes):
        arms = {r["arm"]: r for r in rows if r["task"] == task}
        for name, text in DECISION_RULES:
            verdict, evidence = "not run", "the arms it needs did not run"
            if name == "collapse" and {"rl-only aggressive", "in-ril m=5 pcgrad aggressive"} <= arms.keys():
                a, b = arms["in-ril m=5 pcgrad aggressive"], arms["rl-only aggressive"]
                p = a["paired_final"]
                ok = a["collapses"] < b["collapses"] and p is not None and p["wins"] + p["ties"] == p["n"]
                verdict = "supported" if ok else "not supported"
                evidence = (
                    f"collapses {a['collapses']}/{a['seeds']} vs {b['collapses']}/{b['seeds']}; "
                    f"final >= in {0 if p is None else p['wins'] + p['ties']}/{0 if p is None else p['n']} "
                    "paired seeds"
                )
            elif name == "final" and {"rl-only", "in-ril m=5 pcgrad"} <= arms.keys():
                p = arms["in-ril m=5 pcgrad"]["paired_final"]
                where = _interval(p)
                verdict = {
                    "above 0": "supported",
                    "below 0": "not supported (IN-RIL hurts)",
                    "contains 0": "not supported (no detectable difference)",
                }.get(where, "not run")
                evidence = "" if p is None else f"{p['mean']:+.1%} [{p['ci95_low']:+.1%}, {p['ci95_high']:+.1%}]"
            elif name == "auc" and "rl-only" in arms:
                inril = [a for a in arms if a.startswith("in-ril") and "aggressive" not in a]
                passed, notes = [], []
                for a in inril:
                    p = arms[a]["paired_auc"]
                    control = paired(outcomes, task, a, "il-only control", "auc") if "il-only control" in arms else None
                    ok = _interval(p) == "above 0" and (control is None or _interval(control) == "above 0")
                    passed += [a] if ok else []
                    notes.append(
                        f"{a}: {'-' if p is None else format(p['mean'], '+.3f')} vs RL only ({_interval(p)})"
                        + ("" if control is None else f", {control['mean']:+.3f} vs IL-only ({_interval(control)})")
                    )
                if inril:
                    verdict = "supported" if passed else "not supported"
                    evidence = "; ".join(notes)
            elif name == "separation" and {"in-ril m=5 pcgrad", "in-ril m=5 none"} <= arms.keys():
                p = paired(outcomes, task, "in-ril m=5 pcgrad", "in-ril m=5 none", "heldout_final")
                where = _interval(p)
                verdict = "supported" if where in ("above 0", "below 0") else "not supported"
                evidence = "" if p is None else f"{p['mean']:+.1%} [{p['ci95_low']:+.1%}, {p['ci95_high']:+.1%}]"
            verdicts.append({"task": task, "rule": name, "text": text, "verdict": verdict, "evidence": evidence})
    return verdicts


def _pct(ci: dict[str, Any]) -> str:
    if ci["n"] == 0 or ci["mean"] != ci["mean"]:
        return "-"
    if ci["n"] < 2:
        return f"{ci['mean']:.0%}"
    return f"{ci['mean']:.0%} [{max(ci['ci95_low'], 0):.0%}, {min(ci['ci95_high'], 1):.0%}]"


def _diff(p: dict[str, Any] | None, percent: bool = True) -> str:
    if p is None:
        return "-"
    fmt = (lambda v: f"{v * 100:+.0f}") if percent else (lambda v: f"{v:+.3f}")
    ci = f" [{fmt(p['ci95_low'])}, {fmt(p['ci95_high'])}]" if p["n"] > 1 else ""
    return f"{fmt(p['mean'])}{ci} ({p['wins']}/{p['n']})"


def markdown_table(
    rows: list[dict[str, Any]], verdicts: list[dict[str, str]], budget: int, eval_episodes: int, heldout_episodes: int
) -> str:
    lines = [
        f"Budget {budget:,} env steps per run (= {budget / STEPS_PER_ROBOT_MINUTE:.1f} supervised robot minutes at "
        f"10 Hz); in-run evaluation on {eval_episodes} episodes; final held-out "
        f"evaluation of last.pt on {heldout_episodes} never-used seeds. Means over paired seeds with Student-t "
        "95% intervals. Paired differences (points of success, AUC) against the arm in 'vs', with the seeds "
        f"won. Collapse: final held-out more than {COLLAPSE_DROP:.0%} below the pre-trained held-out.",
        "",
        "| task | arm | seeds | pre-trained (held-out) | final (held-out) | AUC (in-run) | collapses | "
        "below start | vs | paired final | paired AUC |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['arm']} | {r['seeds']} | {_pct(r['heldout_pretrained'])} | "
            f"{_pct(r['heldout_final'])} | {_pct(r['auc'])} | {r['collapses']}/{r['seeds']} | "
            f"{r['below_start']}/{r['seeds']} | {r['vs'] if r['vs'] != r['arm'] else '-'} | "
            f"{_diff(r['paired_final'])} | {_diff(r['paired_auc'], percent=False)} |"
        )
    lines += ["", "Decision rules (fixed before the runs):", ""]
    for v in verdicts:
        lines.append(f"- **{v['task']} · {v['rule']}**: {v['verdict']}. {v['text']}. Evidence: {v['evidence']}")
    return "\n".join(lines) + "\n"


def plot_curves(outcomes: list[RunOutcome], task: str, budget: int, path: Path) -> None:
    """Mean evaluation success against env steps per arm (linear between evaluations), with a 95% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0, budget, 101)
    fig, ax = plt.subplots(figsize=(8, 5))
    for arm in dict.fromkeys(o.arm for o in outcomes if o.task == task):
        runs = [o for o in outcomes if o.task == task and o.arm == arm]
        curves = np.array([np.interp(grid, [x for x, _ in o.curve], [s for _, s in o.curve]) for o in runs])
        stats = [mean_ci(list(col)) for col in curves.T]
        mean = np.array([s.mean for s in stats])
        ax.plot(grid, mean, lw=1.6, label=f"{arm} ({len(runs)} seeds)")
        if len(runs) > 1:
            ax.fill_between(
                grid, np.clip([s.low for s in stats], 0, 1), np.clip([s.high for s in stats], 0, 1), alpha=0.12
            )
    ax.set(
        xlabel="env steps (executed control steps)",
        ylabel="in-run evaluation success",
        ylim=(-0.02, 1.02),
        title=f"sample efficiency · {task} · mean over paired seeds, 95% band",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def write_reports(
    outcomes: list[RunOutcome],
    rows: list[dict[str, Any]],
    verdicts: list[dict[str, str]],
    out: Path,
    budget: int,
    eval_episodes: int,
    heldout_episodes: int,
) -> dict[str, str]:
    files = {
        "runs": str(out / "runs.csv"),
        "summary_csv": str(out / "summary.csv"),
        "summary_md": str(out / "summary.md"),
    }
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
        f.write(markdown_table(rows, verdicts, budget, eval_episodes, heldout_episodes))
    for task in dict.fromkeys(o.task for o in outcomes):
        path = out / f"curves_{task}.png"
        plot_curves(outcomes, task, budget, path)
        files[f"curves_{task}"] = str(path)
    return files


def bench_sample_efficiency(
    out: Path,
    tasks: list[str],
    arms: list[str],
    seeds: int,
    budget: int,
    overrides: list[str],
    prepare: Callable[[str, Path], tuple[Dataset, Path]],
    say: Say | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    heldout_episodes: int = HELDOUT_EPISODES,
    report_only: bool = False,
    jobs: int = 1,
) -> dict[str, Any]:
    """Every (task, arm, seed); `prepare(task, folder)` gives the demos and the pre-trained checkpoint of a task.
    `report_only`: summarise the finished runs, start none (missing ones are listed in `missing`). `jobs` > 1 runs
    that many (arm, seed) runs at once, each in its own process with one torch thread (a many-core machine)."""
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; available: {', '.join(ARMS)}")
    say = say or (lambda _: None)
    out.mkdir(parents=True, exist_ok=True)
    outcomes: list[RunOutcome] = []
    missing: list[str] = []
    started = time.perf_counter()
    for task in tasks:
        say(f"{task}: demonstrations and pre-trained checkpoint -> {out / task / 'pretrained'}")
        demos, gaussian = prepare(task, out / task / "pretrained")
        starts = {"gaussian": gaussian}
        if any(a in DIFFUSION_ARMS for a in arms):
            say(f"{task}: diffusion checkpoint for IDQL on the same demos -> {out / task / 'pretrained_diffusion'}")
            starts["diffusion"] = prepare_diffusion(task, demos, out / task / "pretrained_diffusion", overrides)
        say(f"{task}: held-out evaluation of the pre-trained checkpoint(s) on {heldout_episodes} episodes")
        pre = {
            kind: evaluate_checkpoint(
                arm_config(task, arms[0], 0, budget, overrides),
                path,
                heldout_episodes,
                cache=path.parent / "heldout.json",
            )["success"]["rate"]
            for kind, path in starts.items()
        }
        runs = []
        for seed in range(seeds):  # seed-major: an interrupted bench still has every arm for its first seeds
            for arm in arms:
                folder = out / task / arm.replace(" ", "_").replace("=", "") / f"seed{seed}"
                if report_only and not finished(folder, budget):
                    missing.append(f"{task} · {arm} · seed {seed}")
                    continue
                kind = kind_of(arm)
                runs.append(
                    (task, arm, seed, starts[kind], demos, folder, budget, overrides, pre[kind], heldout_episodes)
                )
        if jobs <= 1 or report_only:
            for i, run in enumerate(runs, 1):
                say(f"[{i}/{len(runs)}] {run[0]} · {run[1]} · seed {run[2]}")
                outcomes.append(run_arm(*run, on_progress=on_progress))
        else:
            outcomes.extend(_run_parallel(runs, jobs, say))
    if not outcomes:
        raise ValueError(f"no finished runs under {out} to report on")
    rows = summarize(outcomes)
    verdicts = decide(outcomes, rows)
    cfg = load_config(robot="sim", task=tasks[0], overrides=overrides)
    files = write_reports(outcomes, rows, verdicts, out, budget, cfg.finetune.eval_episodes, heldout_episodes)
    return {
        "tasks": tasks,
        "arms": arms,
        "seeds": seeds,
        "budget": budget,
        "robot_minutes": budget / STEPS_PER_ROBOT_MINUTE,
        "overrides": overrides,
        "heldout_episodes": heldout_episodes,
        "summary": rows,
        "decisions": verdicts,
        "missing": missing,
        "runs": [o.row() for o in outcomes],
        "files": files,
        "wall_s": time.perf_counter() - started,
    }
