"""What the on-policy (`finetune`) and off-policy (`offpolicy`) fine-tuning runs share: the run folder (resume state,
metrics, TensorBoard, deployable checkpoints), episode summaries, the feasible return range, the result and curves."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inril_robot.config import RunConfig
from inril_robot.core.contract import Contract
from inril_robot.core.errors import InrilError
from inril_robot.core.seeds import EVAL_SEED_BASE, HELDOUT_SEED_BASE
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.policies.base import Policy
from inril_robot.learning.pretrain import pick_device
from inril_robot.learning.rl.rollouts import EpisodeTrace, run_episodes
from inril_robot.learning.rl.vec_env import VecEnv
from inril_robot.learning.runs import RunFolder, atomic_write_text
from inril_robot.reporting.rates import wilson_interval

ProgressFn = Callable[[dict[str, Any]], None]
#: the metrics.csv columns every fine-tuning run writes (iteration_row, pretrained_row, _eval_columns)
RUN_METRICS = (
    "step",
    "env_steps",
    "wall_s",
    "env_steps_per_s",
    "train_success",
    "train_return",
    "train_episode_length",
    "train_stops",
    "safety_events",
    "eval_success",
    "eval_ci_low",
    "eval_ci_high",
    "eval_mean_length",
    "eval_stops",
)
SaveFn = Callable[[Path, dict[str, Any] | None], None]  # (checkpoint path, evaluation) -> None


class FinetuneError(RuntimeError, InrilError):
    """The fine-tuning run cannot start or continue; the message says why and what to do."""


@dataclass
class FinetuneResult:
    out: str
    algo: str
    il_every: int | str
    separation: str
    start_iteration: int
    iterations: int
    env_steps: int
    wall_s: float
    evals: list[dict[str, Any]]
    pretrained: dict[str, Any] | None
    final: dict[str, Any] | None
    best: dict[str, Any] | None
    last_checkpoint: str
    best_checkpoint: str | None
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def value_range(cfg: RunConfig) -> tuple[float, float]:
    """The discounted returns an episode can have: a sparse task pays 1 at success (terminal), a dense one adds a
    shaped reward in [0, 1) per step; a safety stop costs `stop_penalty`."""
    ppo = cfg.finetune.ppo
    low = -ppo.stop_penalty
    if cfg.task.reward == "sparse":
        return low, 1.0
    steps = cfg.task.max_steps  # per control step; a chunk step sums up to act_steps of them
    return low, 1.0 + float(sum(ppo.gamma**t for t in range(steps)))


def summarize(traces: list[EpisodeTrace]) -> dict[str, Any]:
    rate = wilson_interval(sum(t.success for t in traces), len(traces))
    return {
        "success": rate.to_dict(),
        "episodes": len(traces),
        "mean_length": float(np.mean([t.steps for t in traces])),
        "mean_return": float(np.mean([t.ret for t in traces])),
        "env_steps": int(sum(t.steps for t in traces)),
        "safety_events": int(sum(t.safety_events for t in traces)),
        "stops": int(sum(t.stopped for t in traces)),
    }


ActFn = Callable[[dict[str, torch.Tensor], torch.Generator], torch.Tensor]


def evaluate(
    vec: VecEnv,
    policy: Policy,
    episodes: int,
    device: torch.device,
    seed: int = EVAL_SEED_BASE,
    act: ActFn | None = None,
) -> dict[str, Any]:
    """The policy acting as deployed (`predict(deterministic=True)`, what `eval` and the server run) on seeds
    seed .. seed + episodes - 1, judged by the simulator's success where it has one (`judge_by_truth`), one
    generator seeded with `seed` (the same sampling noise every time). `act(obs, generator)` -> normalised chunks
    replaces the deployed rule (measurements of other ways to act)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    policy.eval()

    def choose(obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if act is not None:
            return act(obs, generator), {}
        return policy.predict_normalized(obs, deterministic=True, generator=generator), {}

    vec.judge_by_truth(True)
    try:
        return summarize(run_episodes(vec, [seed + i for i in range(episodes)], policy, choose, device))
    finally:
        vec.judge_by_truth(False)


def evaluate_checkpoint(
    cfg: RunConfig, checkpoint: Path, episodes: int, seed: int = HELDOUT_SEED_BASE, cache: Path | None = None
) -> dict[str, Any]:
    """Success of a saved checkpoint acting as deployed (`evaluate`: PPO, SAC, IDQL, diffusion at its
    `policy.diffusion.eta`) on `episodes` held-out seeds (`summarize`'s dict); read back from `cache` (JSON) when it
    already holds this evaluation."""
    import hashlib
    import json

    key = {"sha256": hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest(), "episodes": episodes, "seed": seed}
    if cache is not None and cache.is_file():
        stored = json.loads(cache.read_text())
        if stored.get("key") == key:
            return stored["result"]
    f = cfg.finetune
    if f.num_threads > 0:
        torch.set_num_threads(f.num_threads)
    device = pick_device(f.device)
    policy = ckpt.load_checkpoint(checkpoint, use_ema=True).policy.to(device)
    with VecEnv(cfg, f.num_envs, list(policy.obs_shapes), policy.cfg.n_obs_steps, subprocess=f.subprocess_envs) as vec:
        result = evaluate(vec, policy, episodes, device, seed=seed)
    if cache is not None:
        atomic_write_text(cache, json.dumps({"key": key, "result": result}))
    return result


def open_run(out: Path, cfg: RunConfig, resume: bool, fields: tuple[str, ...]) -> RunFolder:
    """A fine-tuning run folder: new and empty, or resumed with the same policy, fine-tuning and task settings."""
    return RunFolder(out, cfg, resume, fields, sections=("policy", "finetune", "task"), error=FinetuneError)


def read_train_state(run: RunFolder) -> dict[str, Any] | None:
    """`last.train.pt`, checked to be from the same point as `last.pt` (what `--resume` continues from); None for a
    new run."""
    return run.resume_state(ckpt.safe_torch_load, lambda path: ckpt.read_checkpoint(path)["step"], "env_steps")


@dataclass
class RunLog:
    """Fine-tuning's evaluation history over its `RunFolder` (which holds run.yaml, metrics.csv, TensorBoard, the
    best record), shared by the on- and off-policy loops."""

    run: RunFolder
    evals: list[dict[str, Any]]
    pretrained: dict[str, Any] | None = None  # the first evaluation: the pre-trained policy

    @classmethod
    def open(cls, run: RunFolder, run_cfg: RunConfig, iteration: int, state: dict[str, Any] | None) -> RunLog:
        rows = run.start(run_cfg, up_to_step=iteration)
        evals = [
            {"iteration": int(r["step"]), "env_steps": int(r["env_steps"] or 0), "success_rate": r["eval_success"]}
            for r in rows
            if r["eval_success"] is not None
        ]
        log = cls(run, evals)
        if state is not None:
            run.best, log.pretrained = state["best"] or None, state["pretrained"] or None
        return log

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.run.rows

    @property
    def best(self) -> dict[str, Any] | None:
        return self.run.best

    def append(self, row: dict[str, Any]) -> None:
        """One metrics row (and its numbers to TensorBoard at its env steps)."""
        scalars = {
            f"finetune/{k}": float(v)
            for k, v in row.items()
            if k not in ("step", "env_steps") and isinstance(v, int | float)
        }
        self.run.log(row, scalars, step=row["env_steps"])

    def record_eval(self, result: dict[str, Any]) -> bool:
        """An evaluation (`summarize`'s dict with iteration and env_steps) into the history; True when it is the best
        so far, i.e. `best.pt` should be written."""
        rate = result["success"]["rate"]
        self.evals.append({"iteration": result["iteration"], "env_steps": result["env_steps"], "success_rate": rate})
        if self.pretrained is None:
            self.pretrained = result
        return self.run.offer_best(result)

    def train_state(self, **fields: Any) -> dict[str, Any]:
        """`last.train.pt`'s content: the caller's counters and learner state, plus the evaluation history."""
        return {**fields, "best": self.best or {}, "pretrained": self.pretrained or {}}

    def flush(self, title: str) -> None:
        self.run.plot(lambda rows, path: plot_finetune_curves(rows, path, title))

    def evaluated(
        self, evaluation: dict[str, Any], iteration: int, env_steps: int, save_best: SaveFn
    ) -> dict[str, Any]:
        """An evaluation at (iteration, env_steps) into the history; `best.pt` saved when it is the best so far."""
        result = {**evaluation, "iteration": iteration, "env_steps": env_steps}
        if self.record_eval(result):
            save_best(self.run.best_path, result)
        return result

    def result(
        self, cfg: RunConfig, start_iteration: int, iteration: int, env_steps: int, started: float, final: Any
    ) -> FinetuneResult:
        """What a run returns (and `finetune --json` prints)."""
        f, run = cfg.finetune, self.run
        return FinetuneResult(
            out=str(run.out),
            algo=f.algo,
            il_every=f.inril.il_every,
            separation=f.inril.separation,
            start_iteration=start_iteration,
            iterations=iteration,
            env_steps=env_steps,
            wall_s=time.perf_counter() - started,
            evals=self.evals,
            pretrained=self.pretrained,
            final=final,
            best=self.best,
            last_checkpoint=str(run.last),
            best_checkpoint=str(run.best_path) if run.best_path.is_file() else None,
            files={"metrics": str(run.metrics), "curves": str(run.curves), "train_state": str(run.train_state)},
        )


def pretrained_row(evaluation: dict[str, Any], started: float) -> dict[str, Any]:
    """Metrics row 0: the pre-trained policy's evaluation."""
    return {"step": 0, "env_steps": 0, "wall_s": round(time.perf_counter() - started, 3), **_eval_columns(evaluation)}


def iteration_row(
    iteration: int, env_steps: int, started: float, tick: float, traces: list[EpisodeTrace]
) -> dict[str, Any]:
    """The metrics row of one collect-and-update iteration (the learner's numbers are added by the caller)."""
    train = summarize(traces)
    return {
        "step": iteration,
        "env_steps": env_steps,
        "wall_s": round(time.perf_counter() - started, 3),
        "env_steps_per_s": train["env_steps"] / max(time.perf_counter() - tick, 1e-9),
        "train_success": train["success"]["rate"],
        "train_return": train["mean_return"],
        "train_episode_length": train["mean_length"],
        "safety_events": train["safety_events"],
        "train_stops": train["stops"],
    }


def save_finetuned(
    path: Path,
    policy: Policy,
    cfg: RunConfig,
    contract: Contract,
    loaded: ckpt.LoadedCheckpoint,
    source: Path,
    env_steps: int,
    iteration: int,
    evaluation: dict[str, Any] | None,
) -> None:
    """A deployable checkpoint of the fine-tuned policy, saying where it came from and how it was trained."""
    f = cfg.finetune
    ckpt.save_checkpoint(
        path,
        policy,
        contract=contract,
        run_cfg=cfg,
        step=env_steps,
        extra={
            "finetuned_from": str(source),
            "calibration": loaded.extra.get("calibration", ""),
            "algo": f.algo,
            "il_every": str(f.inril.il_every),
            "separation": f.inril.separation,
            "iteration": iteration,
            "eval_success": evaluation["success"]["rate"] if evaluation else -1.0,
        },
    )


def _eval_columns(result: dict[str, Any]) -> dict[str, Any]:
    rate = result["success"]
    return {
        "eval_success": rate["rate"],
        "eval_ci_low": rate["ci95_low"],
        "eval_ci_high": rate["ci95_high"],
        "eval_mean_length": result["mean_length"],
        "eval_stops": result["stops"],
    }


def _title(cfg: RunConfig) -> str:
    f = cfg.finetune
    mode = "RL only" if f.inril.il_every == 0 else f"IN-RIL m={f.inril.il_every}, {f.inril.separation}"
    return f"finetune {f.algo} · {cfg.task.name} · {mode}"


def plot_finetune_curves(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Evaluation success (with Wilson 95% band) and training success against env steps; m and losses below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from inril_robot.core.atomic import atomic_open

    fig, (ax, ax_m) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True, height_ratios=(2, 1))
    evals = [r for r in rows if r.get("eval_success") is not None]
    if evals:
        x = [r["env_steps"] for r in evals]
        ax.fill_between(
            x, [r["eval_ci_low"] for r in evals], [r["eval_ci_high"] for r in evals], alpha=0.2, label="eval Wilson 95%"
        )
        ax.plot(x, [r["eval_success"] for r in evals], marker="o", lw=1.5, label="eval success (deterministic)")
    train = [r for r in rows if r.get("train_success") is not None]
    if train:
        ax.plot(
            [r["env_steps"] for r in train],
            [r["train_success"] for r in train],
            lw=1,
            alpha=0.7,
            label="training episodes (exploring)",
        )
    ax.set(ylabel="success rate", ylim=(-0.02, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    m_rows = [r for r in rows if r.get("m") is not None]
    if m_rows:
        ax_m.step([r["env_steps"] for r in m_rows], [r["m"] for r in m_rows], where="post", label="m (RL steps / IL)")
        ax_m.legend(loc="upper right", fontsize=8)
    ax_m.set(xlabel="env steps (executed control steps)", ylabel="m")
    ax_m.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
