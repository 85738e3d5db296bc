"""`inril-robot finetune --robot sim`: IN-RIL (or RL-only) fine-tuning of a pre-trained checkpoint, in-process.

One iteration: play `episodes_per_iteration` whole episodes with the exploring actor across the parallel envs, hand
them to the `InrilLearner` (PPO epochs with IL steps interleaved, update guard), log. Every `eval_every` iterations
(and before the first update, which measures the pre-trained policy) the deterministic policy plays `eval_episodes`
held-out seeds. Outputs in the run folder: `last.pt` / `best.pt` (deployable policy checkpoints, `eval`-able),
`last.train.pt` (everything `--resume` needs: learner, optimisers, critic, schedule phase, gradient EMAs, RNG states,
episode counter), `metrics.csv`, `curves.png`, TensorBoard events, `run.yaml`.

Seeds: training episode k runs on seed TRAIN_SEED_BASE + 10^7 * cfg.seed + k, evaluation episode i on
EVAL_SEED_BASE + i (as pre-training), demonstrations were recorded on small seeds: the three never meet.
Resuming restarts at the iteration boundary of the last checkpoint; the episodes, minibatches, demo batches and
sampling noise are then exactly those of an uninterrupted run (tested).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inril_robot.config import FinetuneConfig, RunConfig
from inril_robot.core.contract import Contract
from inril_robot.core.errors import InrilError
from inril_robot.core.seeds import EVAL_SEED_BASE, HELDOUT_SEED_BASE, train_seed
from inril_robot.data.store import Dataset
from inril_robot.learning.inril.learner import UPDATE_METRICS, DemoSource, InrilLearner
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.policies.base import Policy
from inril_robot.learning.policies.diffusion import DiffusionPolicy
from inril_robot.learning.policies.gaussian import GaussianPolicy
from inril_robot.learning.policies.residual import ResidualPolicy
from inril_robot.learning.pretrain import (
    DemoWindows,
    check_dataset_fits,
    pick_device,
    run_contract,
)
from inril_robot.learning.rl.actor import Actor
from inril_robot.learning.rl.buffer import RolloutBuffer
from inril_robot.learning.rl.dppo import DPPOActor, with_frozen_copy
from inril_robot.learning.rl.ppo import Critic, GaussianActor
from inril_robot.learning.rl.residual_ppo import ResidualActor
from inril_robot.learning.rl.rollouts import EpisodeTrace, run_episodes
from inril_robot.learning.rl.vec_env import VecEnv
from inril_robot.learning.runs import RunFolder, atomic_write_text
from inril_robot.reporting.rates import wilson_interval

TRAIN_STATE_VERSION = 1
METRIC_FIELDS = (
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
    *UPDATE_METRICS,
)
ProgressFn = Callable[[dict[str, Any]], None]


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


# ------------------------------------------------------------------------------------------------ building
def build_actor(policy: Policy, cfg: FinetuneConfig) -> Actor:
    """The algorithm's actor around the pre-trained policy (a fresh copy: the caller's policy is left alone)."""
    policy = copy.deepcopy(policy)
    if cfg.algo == "ppo":
        if not isinstance(policy, GaussianPolicy):
            raise FinetuneError(
                f"--algo ppo fine-tunes a Gaussian policy; the checkpoint holds a {policy.cfg.kind} "
                "policy (diffusion: --algo dppo; any policy: --algo residual-ppo)"
            )
        if policy.log_std_head is not None:
            raise FinetuneError(
                "--algo ppo trains a per-dimension log-std within finetune.min_log_std/max_log_std; "
                "the checkpoint's log-std is state-dependent (policy.gaussian.log_std)"
            )
        with torch.no_grad():
            if cfg.exploration_log_std is not None:
                policy.log_std.fill_(cfg.exploration_log_std)
            policy.log_std.clamp_(cfg.min_log_std, cfg.max_log_std)
        actor = GaussianActor(policy)
        actor.log_std_bounds = (cfg.min_log_std, cfg.max_log_std)
        return actor
    if cfg.algo == "dppo":
        if not isinstance(policy, DiffusionPolicy):
            raise FinetuneError(
                f"--algo dppo fine-tunes a diffusion policy; the checkpoint holds a "
                f"{policy.cfg.kind} policy (Gaussian: --algo ppo)"
            )
        return DPPOActor(with_frozen_copy(policy, cfg.dppo.ft_steps), cfg.dppo)
    if isinstance(policy, ResidualPolicy):
        raise FinetuneError("the checkpoint already holds a residual policy; fine-tune its base checkpoint instead")
    r = cfg.residual
    # IN-RIL's network separation trains the base with IL; plain residual RL (m = 0) keeps it frozen (ResiP)
    freeze = cfg.inril.il_every == 0
    return ResidualActor(ResidualPolicy(policy, r.hidden, r.scale, r.init_log_std, freeze_base=freeze))


def make_learner(
    cfg: RunConfig,
    policy: Policy,
    demos: Dataset | None,
    contract: Contract,
    device: torch.device,
    wrap_demos: Callable[[DemoSource], DemoSource] | None = None,
) -> tuple[Actor, Critic, InrilLearner]:
    """The actor around `policy`, its critic and the IN-RIL learner with its demonstration source (checked against
    `contract`); `wrap_demos` may add to that source (the policy server mixes in robot interventions)."""
    f = cfg.finetune
    demo_source: DemoSource | None = None
    needs_demos = f.inril.il_every != 0 or f.inril.bc_coef > 0
    if demos is not None and needs_demos:
        if demos.info.get("task") != cfg.task.name:
            raise FinetuneError(f"demos {demos.root} hold task {demos.info.get('task')!r}, not {cfg.task.name!r}")
        check_dataset_fits(demos, contract)
        pc = policy.cfg
        demo_source = DemoWindows(demos, list(policy.obs_shapes), pc.n_obs_steps, pc.horizon).sample
        if wrap_demos is not None:
            demo_source = wrap_demos(demo_source)
    elif needs_demos:
        raise FinetuneError(
            "IN-RIL interleaves IL updates on demonstrations (BC-regularised RL adds their loss): "
            "pass --demos DIR (or --il-every 0 for RL only)"
        )
    actor = build_actor(policy, f).to(device)
    bounds = value_range(cfg)
    critic = Critic.for_policy(actor.policy, f.ppo.critic_hidden, bounds).to(device)
    try:
        learner = InrilLearner(actor, critic, f, demo_source, device, seed=cfg.seed, value_range=bounds)
    except ValueError as e:
        raise FinetuneError(str(e)) from e
    return actor, critic, learner


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


def evaluate(
    vec: VecEnv, policy: Policy, episodes: int, device: torch.device, seed: int = EVAL_SEED_BASE
) -> dict[str, Any]:
    """Deterministic actions on seeds seed .. seed + episodes - 1; the same initial diffusion noise every time."""
    generator = torch.Generator(device=device).manual_seed(seed)
    policy.eval()

    def choose(obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return policy.predict_normalized(obs, deterministic=True, generator=generator), {}

    return summarize(run_episodes(vec, [seed + i for i in range(episodes)], policy, choose, device))


def evaluate_checkpoint(
    cfg: RunConfig, checkpoint: Path, episodes: int, seed: int = HELDOUT_SEED_BASE, cache: Path | None = None
) -> dict[str, Any]:
    """Deterministic success of a saved checkpoint on `episodes` held-out seeds (`summarize`'s dict); read back
    from `cache` (JSON) when it already holds this evaluation."""
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


def to_buffer(
    traces: list[EpisodeTrace], critic: Critic, device: torch.device, stop_penalty: float = 0.0
) -> RolloutBuffer:
    """Episodes with their critic values (T,). A success and a safety stop are terminal (the stop's last reward
    minus `stop_penalty`); an episode the time limit ended carries V(final observation) for the learner's
    bootstrap rule."""
    buffer = RolloutBuffer(device)
    with torch.no_grad():
        for t in traces:
            obs = {k: v.to(device) for k, v in t.stacked_obs().items()}  # (T, To, ...)
            kept = {k: v.to(device) for k, v in t.stacked_kept().items()}
            log_probs = kept.pop("log_prob")  # (T, K)
            values = critic(obs)  # (T,)
            rewards = torch.tensor(t.rewards, dtype=torch.float32, device=device)  # (T,)
            if t.stopped:
                rewards[-1] -= stop_penalty
            terminal = t.terminated or t.stopped
            bootstrap = 0.0
            if not terminal and t.final_obs is not None:
                final = {k: torch.from_numpy(v)[None].to(device) for k, v in t.final_obs.items()}  # (1, To, ...)
                bootstrap = float(critic(final)[0])
            buffer.add_episode(obs, kept, log_probs, rewards, values, terminal, bootstrap)
    return buffer


# ------------------------------------------------------------------------------------------------ the run
def finetune(
    cfg: RunConfig,
    checkpoint: Path,
    demos: Dataset | None,
    out: Path,
    *,
    resume: bool = False,
    on_progress: ProgressFn | None = None,
    max_iterations: int | None = None,
) -> FinetuneResult:
    """Fine-tune `checkpoint` in simulation until `cfg.finetune.env_steps` control steps (or `max_iterations` more
    iterations, e.g. to test resuming) have run."""
    out = Path(out)
    started = time.perf_counter()
    f = cfg.finetune
    contract = run_contract(cfg)
    loaded = ckpt.load_checkpoint(checkpoint, expect_contract=contract, use_ema=True)
    cfg = cfg.model_copy(update={"policy": loaded.policy.cfg})
    run = RunFolder(out, cfg, resume, METRIC_FIELDS, sections=("policy", "finetune", "task"), error=FinetuneError)
    if f.num_threads > 0:
        torch.set_num_threads(f.num_threads)
    device = pick_device(f.device)
    torch.manual_seed(cfg.seed)

    actor, critic, learner = make_learner(cfg, loaded.policy, demos, contract, device)
    sampler = torch.Generator(device=device).manual_seed(cfg.seed + 1)  # exploration noise
    run_cfg = cfg.model_copy(update={"policy": actor.policy.cfg})

    last_path, train_path, best_path = run.last, run.train_state, run.best_path
    iteration, env_steps, episodes_done = 0, 0, 0
    pretrained: dict[str, Any] | None = None
    last_eval: dict[str, Any] | None = None
    state = run.resume_state(ckpt.safe_torch_load, lambda path: ckpt.read_checkpoint(path)["step"], "env_steps")
    if state is not None:
        learner.load_state_dict(state["learner"])
        sampler.set_state(state["sampler"])
        iteration, env_steps, episodes_done = int(state["iteration"]), int(state["env_steps"]), int(state["episodes"])
        run.best = state["best"] or None
        pretrained = state["pretrained"] or None
        last_eval = state.get("last_eval") or None
    start_iteration = iteration
    rows = run.start(run_cfg, up_to_step=iteration)
    metrics_path = run.metrics
    evals: list[dict[str, Any]] = [
        r
        for r in (
            {"iteration": int(r["step"]), "env_steps": int(r["env_steps"] or 0), "success_rate": r["eval_success"]}
            for r in rows
        )
        if r["success_rate"] is not None
    ]

    def save(path: Path, evaluation: dict[str, Any] | None) -> None:
        ckpt.save_checkpoint(
            path,
            actor.policy,
            contract=contract,
            run_cfg=run_cfg,
            step=env_steps,
            extra={
                "finetuned_from": str(checkpoint),
                "calibration": loaded.extra.get("calibration", ""),
                "algo": f.algo,
                "il_every": str(f.inril.il_every),
                "separation": f.inril.separation,
                "iteration": iteration,
                "eval_success": evaluation["success"]["rate"] if evaluation else -1.0,
            },
        )

    def save_train_state() -> None:
        ckpt.atomic_torch_save(
            {
                "format_version": TRAIN_STATE_VERSION,
                "iteration": iteration,
                "env_steps": env_steps,
                "episodes": episodes_done,
                "learner": learner.state_dict(),
                "sampler": sampler.get_state(),
                "best": run.best or {},
                "pretrained": pretrained or {},
                "last_eval": last_eval or {},
            },
            train_path,
        )

    def run_eval() -> dict[str, Any]:
        nonlocal pretrained
        result = {
            **evaluate(vec, actor.policy, f.eval_episodes, device),
            "iteration": iteration,
            "env_steps": env_steps,
        }
        evals.append({"iteration": iteration, "env_steps": env_steps, "success_rate": result["success"]["rate"]})
        if pretrained is None:
            pretrained = result
        if run.offer_best(result):
            save(best_path, result)
        return result

    def collect() -> list[EpisodeTrace]:
        nonlocal episodes_done
        seeds = [train_seed(cfg.seed, episodes_done + i) for i in range(f.episodes_per_iteration)]
        episodes_done += len(seeds)

        def choose(obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            sample = actor.sample(obs, sampler)
            return sample.action, {**sample.record, "log_prob": sample.log_prob}

        actor.policy.eval()
        return run_episodes(
            vec,
            seeds,
            actor.policy,
            choose,
            device,
            on_chunk=lambda n: on_progress and on_progress({"event": "steps", "steps": n}),
        )

    draw = partial(plot_finetune_curves, title=_title(cfg))
    obs_keys, n_obs = list(actor.policy.obs_shapes), actor.policy.cfg.n_obs_steps
    try:
        with VecEnv(cfg, f.num_envs, obs_keys, n_obs, subprocess=f.subprocess_envs) as vec:
            if iteration == 0 and pretrained is None:
                last_eval = run_eval()
                row = {
                    "step": 0,
                    "env_steps": 0,
                    "wall_s": round(time.perf_counter() - started, 3),
                    **_eval_columns(last_eval),
                }
                run.log(row)
                if on_progress:
                    on_progress({"event": "eval", **row})
            ran = 0
            while env_steps < f.env_steps and (max_iterations is None or ran < max_iterations):
                tick = time.perf_counter()
                traces = collect()
                collected = sum(t.steps for t in traces)
                env_steps += collected
                stats = learner.update(to_buffer(traces, critic, device, f.ppo.stop_penalty))
                iteration += 1
                ran += 1
                train = summarize(traces)
                row = {
                    "step": iteration,
                    "env_steps": env_steps,
                    "wall_s": round(time.perf_counter() - started, 3),
                    "env_steps_per_s": collected / max(time.perf_counter() - tick, 1e-9),
                    "train_success": train["success"]["rate"],
                    "train_return": train["mean_return"],
                    "train_episode_length": train["mean_length"],
                    "safety_events": train["safety_events"],
                    "train_stops": train["stops"],
                    **{k: v for k, v in stats.items() if isinstance(v, int | float) and k in METRIC_FIELDS},
                }
                if "guard" in stats:
                    row.update(guard_alpha=stats["guard"]["alpha"], guard_accepted=int(stats["guard"]["accepted"]))
                done = env_steps >= f.env_steps
                if (f.eval_every > 0 and iteration % f.eval_every == 0) or done:
                    last_eval = run_eval()
                    row.update(_eval_columns(last_eval))
                scalars = {
                    f"finetune/{k}": float(v)
                    for k, v in row.items()
                    if k not in ("step", "env_steps") and isinstance(v, int | float)
                }
                run.log(row, scalars, step=env_steps)
                if (
                    iteration % f.checkpoint_every == 0
                    or done
                    or (max_iterations is not None and ran >= max_iterations)
                ):
                    save(last_path, last_eval if row.get("eval_success") is not None else None)
                    save_train_state()
                    run.plot(draw)
                if on_progress:
                    on_progress({"event": "iteration", **row, "guard": stats.get("guard")})
    finally:
        run.close()
    run.plot(draw)
    return FinetuneResult(
        out=str(out),
        algo=f.algo,
        il_every=f.inril.il_every,
        separation=f.inril.separation,
        start_iteration=start_iteration,
        iterations=iteration,
        env_steps=env_steps,
        wall_s=time.perf_counter() - started,
        evals=evals,
        pretrained=pretrained,
        final=last_eval,
        best=run.best,
        last_checkpoint=str(last_path),
        best_checkpoint=str(best_path) if best_path.is_file() else None,
        files={"metrics": str(metrics_path), "curves": str(out / "curves.png"), "train_state": str(train_path)},
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
