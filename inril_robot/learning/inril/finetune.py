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
from pathlib import Path
from typing import Any

import torch

from inril_robot.config import OFF_POLICY_ALGOS, FinetuneConfig, RunConfig
from inril_robot.core.contract import Contract
from inril_robot.core.seeds import train_seed
from inril_robot.data.store import Dataset
from inril_robot.learning.inril.common import (
    RUN_METRICS,
    FinetuneError,
    FinetuneResult,
    ProgressFn,
    RunLog,
    _eval_columns,
    _title,
    evaluate,
    iteration_row,
    open_run,
    pretrained_row,
    read_train_state,
    save_finetuned,
    value_range,
)
from inril_robot.learning.inril.learner import UPDATE_METRICS, DemoSource, InrilLearner
from inril_robot.learning.inril.offpolicy import finetune_offpolicy
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

TRAIN_STATE_VERSION = 1
METRIC_FIELDS = (
    *RUN_METRICS,
    *UPDATE_METRICS,
)


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
    iterations, e.g. to test resuming) have run. Off-policy algorithms (sac, idql) run `inril.offpolicy`."""
    if cfg.finetune.algo in OFF_POLICY_ALGOS:
        return finetune_offpolicy(
            cfg, checkpoint, demos, out, resume=resume, on_progress=on_progress, max_iterations=max_iterations
        )
    out = Path(out)
    started = time.perf_counter()
    f = cfg.finetune
    contract = run_contract(cfg)
    loaded = ckpt.load_checkpoint(checkpoint, expect_contract=contract, use_ema=True)
    cfg = cfg.model_copy(update={"policy": loaded.policy.cfg})
    run = open_run(out, cfg, resume, METRIC_FIELDS)
    if f.num_threads > 0:
        torch.set_num_threads(f.num_threads)
    device = pick_device(f.device)
    torch.manual_seed(cfg.seed)

    actor, critic, learner = make_learner(cfg, loaded.policy, demos, contract, device)
    sampler = torch.Generator(device=device).manual_seed(cfg.seed + 1)  # exploration noise
    run_cfg = cfg.model_copy(update={"policy": actor.policy.cfg})

    last_path, train_path = run.last, run.train_state
    iteration, env_steps, episodes_done = 0, 0, 0
    last_eval: dict[str, Any] | None = None
    state = read_train_state(run)
    if state is not None:
        learner.load_state_dict(state["learner"])
        sampler.set_state(state["sampler"])
        iteration, env_steps, episodes_done = int(state["iteration"]), int(state["env_steps"]), int(state["episodes"])
        last_eval = state.get("last_eval") or None
    start_iteration = iteration
    log = RunLog.open(run, run_cfg, iteration, state)

    def save(path: Path, evaluation: dict[str, Any] | None) -> None:
        save_finetuned(path, actor.policy, run_cfg, contract, loaded, checkpoint, env_steps, iteration, evaluation)

    def save_train_state() -> None:
        ckpt.atomic_torch_save(
            log.train_state(
                format_version=TRAIN_STATE_VERSION,
                iteration=iteration,
                env_steps=env_steps,
                episodes=episodes_done,
                learner=learner.state_dict(),
                sampler=sampler.get_state(),
                last_eval=last_eval or {},
            ),
            train_path,
        )

    def run_eval() -> dict[str, Any]:
        return log.evaluated(evaluate(vec, actor.policy, f.eval_episodes, device), iteration, env_steps, save)

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

    obs_keys, n_obs = list(actor.policy.obs_shapes), actor.policy.cfg.n_obs_steps
    try:
        with VecEnv(cfg, f.num_envs, obs_keys, n_obs, subprocess=f.subprocess_envs) as vec:
            if iteration == 0 and log.pretrained is None:
                last_eval = run_eval()
                row = pretrained_row(last_eval, started)
                log.append(row)
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
                row = {
                    **iteration_row(iteration, env_steps, started, tick, traces),
                    **{k: v for k, v in stats.items() if isinstance(v, int | float) and k in METRIC_FIELDS},
                }
                if "guard" in stats:
                    row.update(guard_alpha=stats["guard"]["alpha"], guard_accepted=int(stats["guard"]["accepted"]))
                done = env_steps >= f.env_steps
                if (f.eval_every > 0 and iteration % f.eval_every == 0) or done:
                    last_eval = run_eval()
                    row.update(_eval_columns(last_eval))
                log.append(row)
                if (
                    iteration % f.checkpoint_every == 0
                    or done
                    or (max_iterations is not None and ran >= max_iterations)
                ):
                    save(last_path, last_eval if row.get("eval_success") is not None else None)
                    save_train_state()
                    log.flush(_title(cfg))
                if on_progress:
                    on_progress({"event": "iteration", **row, "guard": stats.get("guard")})
    finally:
        run.close()
    log.flush(_title(cfg))
    return log.result(cfg, start_iteration, iteration, env_steps, started, last_eval)
