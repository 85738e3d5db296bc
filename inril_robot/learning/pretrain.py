"""Imitation-learning pre-training: a policy learns the demonstrations' executed actions, evaluated in simulation.

One readable loop: sample (observation history, action chunk) windows from the episode store -> `policy.loss` ->
AdamW with linear warm-up then cosine decay, gradient clipping -> EMA of the weights. Every `eval_every` steps (and
at the end) the EMA weights run `eval_episodes` episodes in `RobotEnv(cfg)` on fixed seeds; success comes with a
Wilson interval. Outputs in the run folder:

    run.yaml          the resolved configuration            metrics.csv   one row per log step (and eval results)
    last.pt           self-describing checkpoint (weights)  best.pt       the checkpoint with the best eval success
    last.train.pt     optimizer, EMA bookkeeping, RNG states (weights_only loadable): what `--resume` needs
    curves.png        loss and success vs step              events.out.tfevents.*   the same scalars, TensorBoard
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from inril_robot.config import RunConfig
from inril_robot.core.atomic import atomic_open
from inril_robot.core.contract import Contract
from inril_robot.core.errors import InrilError
from inril_robot.core.seeds import EVAL_SEED_BASE
from inril_robot.data.normalization import compute_stats
from inril_robot.data.sampler import WindowSampler
from inril_robot.data.store import Dataset, DatasetError
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.policies.base import Policy
from inril_robot.learning.policies.normalizer import Normalizer
from inril_robot.learning.policies.runner import PolicyRunner
from inril_robot.learning.runs import RunFolder

ACTION_KEY = "action/executed"  # learning uses the executed action (after the safety envelope), never the proposed
METRIC_FIELDS = (
    "step",
    "wall_s",
    "loss",
    "lr",
    "samples_per_s",
    "eval_success",
    "eval_ci_low",
    "eval_ci_high",
    "eval_mean_length",
    "eval_mean_return",
)
TRAIN_STATE_VERSION = 1

ProgressFn = Callable[[int, float, float, dict[str, Any] | None], None]


class PretrainError(RuntimeError, InrilError):
    """The run folder, dataset or configuration does not allow this run; the message says why and what to do."""


@dataclass
class PretrainResult:
    out: str
    start_step: int
    step: int
    wall_s: float
    samples_per_s: float
    final_loss: float | None
    weights: str
    last_checkpoint: str
    best_checkpoint: str | None = None
    best: dict[str, Any] | None = None
    evals: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ----------------------------------------------------------------------------------------------- what is learned
def policy_obs_keys(contract: Contract, observation: str) -> list[str]:
    """The contract's observation keys a policy reads: low-dim keys always, camera images in image mode only."""
    keys = sorted(contract.observations)
    if observation == "state":
        keys = [k for k in keys if not k.endswith("_rgb")]
    return keys


def run_contract(cfg: RunConfig) -> Contract:
    """The contract of the robot/task/cameras `cfg` describes, with the policy's action chunking."""
    from inril_robot.runtime.env import build_contract
    from inril_robot.tasks import make_task

    contract = build_contract(cfg, make_task(cfg.task))
    return contract.model_copy(update={"horizon": cfg.policy.horizon, "act_steps": cfg.policy.act_steps})


class DemoWindows:
    """(observation history, action chunk) training pairs from a dataset: a `WindowSampler` window split in two.

    Alignment. At step t of an episode the store holds `obs[t]`, the observation the action `action[t]` was taken
    from. A policy with To = n_obs_steps and H = horizon learns

        obs[t - To + 1], ..., obs[t]   ->   action[t], ..., action[t + H - 1]

    which is exactly the sampler's window around current step t with history To: its rows 0..To-1 are the
    observation history and its rows To-1..W-1 the action chunk. Every step of every episode is a current step once.
    """

    def __init__(self, dataset: Dataset, obs_keys: list[str], n_obs_steps: int, horizon: int) -> None:
        self.obs_keys = list(obs_keys)
        self.n_obs_steps = n_obs_steps
        dataset.require_intact()  # every episode as committed, not only the arrays trained on
        self.sampler = WindowSampler(
            dataset, [f"obs/{k}" for k in self.obs_keys] + [ACTION_KEY], horizon, history=n_obs_steps
        )
        self.sampler.preload()

    def __len__(self) -> int:
        return len(self.sampler)

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """obs: key -> (B, To, *shape) raw; actions: (B, H, A) float32 raw."""
        batch = self.sampler.sample(batch_size, rng)
        to = self.n_obs_steps
        obs = {k: batch[f"obs/{k}"][:, :to] for k in self.obs_keys}
        actions = batch[ACTION_KEY][:, to - 1 :].astype(np.float32)
        return obs, actions


def check_dataset_fits(dataset: Dataset, contract: Contract) -> None:
    """The dataset must hold what this run observes and acts with (raises `ContractMismatch` naming the field), and
    no shadow-mode episode (`DatasetError`): every learner that reads demonstrations calls this.

    Actions, rates and conventions must be equal; every observation and camera of the run must be in the dataset with
    the same spec. Extra dataset keys are fine (e.g. object state recorded beside images, for an image policy).
    """
    shadow = [e.index for e in dataset.episodes if e.meta.get("shadow")]
    if shadow:
        raise DatasetError(
            f"dataset {dataset.root} holds {len(shadow)} shadow-mode episodes (recorded without "
            f"--execute: the arm never executed them), e.g. {shadow[:5]}; learning refuses them: "
            "record with --execute"
        )
    context = f"dataset {dataset.root} vs this run's robot/task/cameras"
    stored = dataset.contract
    stored.require_match(contract, context=context, ignore=("horizon", "act_steps", "observations", "cameras"))
    used = stored.model_copy(
        update={
            "observations": {k: v for k, v in stored.observations.items() if k in contract.observations},
            "cameras": {k: v for k, v in stored.cameras.items() if k in contract.cameras},
        }
    )
    used.require_match(contract, context=context, ignore=("horizon", "act_steps"))


# ------------------------------------------------------------------------------------------------ optimisation
class EMA:
    """Exponential moving average of a policy's weights (buffers, e.g. normaliser statistics, are copied).

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates, so early weights do not linger.
    """

    def __init__(self, policy: Policy, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.policy = copy.deepcopy(policy).eval()
        self.policy.requires_grad_(False)

    @torch.no_grad()
    def update(self, policy: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema_p, p in zip(self.policy.parameters(), policy.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1.0 - decay)
        for ema_b, b in zip(self.policy.buffers(), policy.buffers(), strict=True):
            ema_b.copy_(b)


def learning_rate(step: int, cfg: RunConfig) -> float:
    """Linear warm-up to `lr` over `warmup_steps`, then cosine decay to `lr_min` at `steps`."""
    t = cfg.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    progress = min(1.0, (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps))
    return t.lr_min + (t.lr - t.lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PretrainError("train.device=cuda but no CUDA device is available (use auto or cpu)")
    return torch.device(name)


# ------------------------------------------------------------------------------------------------ evaluation
def evaluate(
    policy: Policy, contract: Contract, env: Any, episodes: int, device: torch.device, seed: int = EVAL_SEED_BASE
) -> dict[str, Any]:
    """Run `episodes` episodes (seeds seed + i) with deterministic actions; the rollout summary as a dict."""
    from inril_robot.runtime.rollout import run_policy

    was_training = policy.training
    policy.eval()
    try:
        runner = PolicyRunner(policy, contract, device)
        summary = run_policy(env, runner, episodes, seed=seed, on_reset=runner.reset, policy_name=policy.cfg.kind)
    finally:
        policy.train(was_training)
    result = summary.to_dict()
    result.pop("per_episode", None)
    result["seed"] = seed
    result["predictions"] = runner.predictions
    return result


def plot_curves(rows: list[dict[str, Any]], path: Path, title: str, weights: str = "ema") -> None:
    """Loss (log scale) and eval success with its 95% interval vs step, as a PNG (matplotlib, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_eval = fig.subplots(1, 2)
    train = [r for r in rows if r.get("loss") is not None]
    if train:
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1.2)
        if all(r["loss"] > 0 for r in train):
            ax_loss.set_yscale("log")
    ax_loss.set(xlabel="step", ylabel="training loss", title="loss")
    ax_loss.grid(alpha=0.3)
    evals = [r for r in rows if r.get("eval_success") is not None]
    if evals:
        steps = [r["step"] for r in evals]
        ax_eval.fill_between(
            steps, [r["eval_ci_low"] for r in evals], [r["eval_ci_high"] for r in evals], alpha=0.25, label="Wilson 95%"
        )
        ax_eval.plot(steps, [r["eval_success"] for r in evals], marker="o", lw=1.2, label="success")
        ax_eval.legend(loc="lower right")
    ax_eval.set(xlabel="step", ylabel="success rate", title=f"evaluation ({weights} weights)", ylim=(-0.02, 1.02))
    ax_eval.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")


# ---------------------------------------------------------------------------------------------------- the run
def pretrain(
    cfg: RunConfig, dataset: Dataset, out: Path, *, resume: bool, on_progress: ProgressFn | None = None
) -> PretrainResult:
    out = Path(out)
    started = time.perf_counter()
    t = cfg.train
    run = RunFolder(out, cfg, resume, METRIC_FIELDS, error=PretrainError)
    if dataset.info.get("task") != cfg.task.name:
        raise PretrainError(f"dataset {dataset.root} holds task {dataset.info.get('task')!r}, not {cfg.task.name!r}")
    if len(dataset) == 0:
        raise PretrainError(f"dataset {dataset.root} has no episodes")
    contract = run_contract(cfg)
    check_dataset_fits(dataset, contract)
    warnings: list[str] = []
    demo_seeds = {e.meta.get("seed") for e in dataset.episodes}
    if demo_seeds & set(range(EVAL_SEED_BASE, EVAL_SEED_BASE + t.eval_episodes)):
        warnings.append("some evaluation seeds equal demonstration seeds: evaluation replays demonstrated scenes")

    if t.num_threads > 0:
        torch.set_num_threads(t.num_threads)
    device = pick_device(t.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    obs_keys = policy_obs_keys(contract, cfg.task.observation)
    obs_shapes = {k: tuple(contract.observations[k].shape) for k in obs_keys}
    lowdim = [k for k in obs_keys if not k.endswith("_rgb")]
    stats = compute_stats(dataset, keys=[f"obs/{k}" for k in lowdim] + [ACTION_KEY])
    normalizer = Normalizer.from_dataset_stats(stats, lowdim, cfg.policy.obs_norm, action_key=ACTION_KEY)
    policy = ckpt.build_policy(cfg.policy, normalizer, obs_shapes, contract.action_dim).to(device)
    windows = DemoWindows(dataset, obs_keys, cfg.policy.n_obs_steps, cfg.policy.horizon)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    ema = EMA(policy, t.ema_decay) if t.ema_decay > 0 else None

    # --------------------------------------------------------------------------------------------- resume
    start_step = 0
    last_path, train_path, best_path = run.last, run.train_state, run.best_path
    train_state = run.resume_state(ckpt.safe_torch_load, lambda path: ckpt.read_checkpoint(path)["step"], "step")
    if train_state is not None:
        stored = ckpt.read_checkpoint(last_path)
        Contract.from_json_dict(stored["contract"]).require_match(contract, context=f"resuming {last_path}")
        policy.load_state_dict(stored["state_dict"])
        if ema is not None:
            ema.policy.load_state_dict(stored.get("ema_state_dict") or stored["state_dict"])
            ema.updates = int(train_state["ema_updates"])
        optimizer.load_state_dict(train_state["optimizer"])
        torch.set_rng_state(train_state["torch_rng"])
        if device.type == "cuda" and train_state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(train_state["cuda_rng"], device)
        rng.bit_generator.state = json.loads(train_state["sampler_rng"])
        run.best = json.loads(train_state["best"]) if train_state.get("best") else None
        start_step = int(stored["step"])
    run.start(cfg, up_to_step=start_step)  # drops rows logged after the checkpoint we resume

    extra = {
        "dataset": str(dataset.root),
        "dataset_episodes": len(dataset),
        "dataset_steps": dataset.num_steps,
        "calibration": dataset.info.get("calibration") or "",
    }  # the calibration the demonstrations were taken with

    def save(path: Path, step: int, eval_result: dict[str, Any] | None) -> None:
        ckpt.save_checkpoint(
            path,
            policy,
            contract=contract,
            run_cfg=cfg,
            step=step,
            ema_state_dict=ema.policy.state_dict() if ema else None,
            extra={**extra, "eval": json.dumps(eval_result) if eval_result else ""},
        )

    def save_train_state(step: int) -> None:
        ckpt.atomic_torch_save(
            {
                "format_version": TRAIN_STATE_VERSION,
                "step": step,
                "optimizer": optimizer.state_dict(),
                "ema_updates": ema.updates if ema else 0,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "sampler_rng": json.dumps(rng.bit_generator.state),  # 128-bit integers: kept exact as JSON text
                "best": json.dumps(run.best) if run.best else "",
            },
            train_path,
        )

    env = None
    eval_policy = ema.policy if ema else policy
    weights = "ema" if ema else "raw"
    draw = partial(plot_curves, title=f"pretrain {cfg.policy.kind} · {cfg.task.name}", weights=weights)
    evals: list[dict[str, Any]] = []
    log_every = max(1, min(100, t.steps // 100))
    step = start_step
    loss_sum, loss_n, train_time, samples = 0.0, 0, 0.0, 0
    last_loss: float | None = None
    samples_per_s = 0.0
    total_samples, total_train_time = 0, 0.0
    policy.train()
    try:
        while step < t.steps:
            tick = time.perf_counter()
            lr = learning_rate(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            obs_np, actions_np = windows.sample(t.batch_size, rng)
            obs = {k: torch.from_numpy(v).to(device) for k, v in obs_np.items()}
            actions = torch.from_numpy(actions_np).to(device)
            loss = policy.loss(obs, actions)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(policy.parameters(), t.grad_clip)
            optimizer.step()
            if ema is not None:
                ema.update(policy)
            step += 1
            loss_value = float(loss.detach())
            loss_sum, loss_n = loss_sum + loss_value, loss_n + 1
            elapsed = time.perf_counter() - tick
            train_time, samples = train_time + elapsed, samples + t.batch_size
            total_train_time, total_samples = total_train_time + elapsed, total_samples + t.batch_size

            row: dict[str, Any] | None = None
            scalars: dict[str, float] | None = None
            if step % log_every == 0 or step == t.steps:
                last_loss = loss_sum / loss_n
                samples_per_s = samples / max(train_time, 1e-9)
                row = {
                    "step": step,
                    "wall_s": round(time.perf_counter() - started, 3),
                    "loss": last_loss,
                    "lr": lr,
                    "samples_per_s": samples_per_s,
                }
                scalars = {"train/loss": last_loss, "train/lr": lr, "train/samples_per_s": samples_per_s}
                loss_sum, loss_n, train_time, samples = 0.0, 0, 0.0, 0

            eval_result = None
            if t.eval_every > 0 and (step % t.eval_every == 0 or step == t.steps):
                if env is None:
                    from inril_robot.runtime.env import RobotEnv

                    env = RobotEnv(cfg)
                eval_result = {"step": step, **evaluate(eval_policy, contract, env, t.eval_episodes, device)}
                evals.append(eval_result)
                rate = eval_result["success"]
                row = row or {"step": step, "wall_s": round(time.perf_counter() - started, 3)}
                row.update(
                    {
                        "eval_success": rate["rate"],
                        "eval_ci_low": rate["ci95_low"],
                        "eval_ci_high": rate["ci95_high"],
                        "eval_mean_length": eval_result["mean_length"],
                        "eval_mean_return": eval_result["mean_return"],
                    }
                )
                scalars = {
                    **(scalars or {}),
                    "eval/success": rate["rate"],
                    "eval/ci_low": rate["ci95_low"],
                    "eval/ci_high": rate["ci95_high"],
                    "eval/mean_length": eval_result["mean_length"],
                    "eval/mean_return": eval_result["mean_return"],
                }
                if run.offer_best({"step": step, "success": rate}):  # ties: the later, longer-trained
                    save(best_path, step, eval_result)
            if row is not None:
                run.log(row, scalars)
            if eval_result is not None:
                run.plot(draw)
            if step % t.checkpoint_every == 0 or step == t.steps:
                save(last_path, step, eval_result)
                save_train_state(step)
            if on_progress is not None:
                on_progress(step, last_loss if last_loss is not None else loss_value, samples_per_s, eval_result)
    finally:
        run.close()
        if env is not None:
            env.close()
    run.plot(draw)
    return PretrainResult(
        out=str(out),
        start_step=start_step,
        step=step,
        wall_s=time.perf_counter() - started,
        samples_per_s=total_samples / total_train_time if total_train_time > 0 else 0.0,
        final_loss=last_loss,
        weights=weights,
        last_checkpoint=str(last_path),
        best_checkpoint=str(best_path) if best_path.is_file() else None,
        best=run.best,
        evals=evals,
        warnings=warnings,
    )
