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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from inril_robot.config import OFF_POLICY_ALGOS, FinetuneConfig, RunConfig
from inril_robot.core.contract import Contract
from inril_robot.data.store import Dataset
from inril_robot.learning.inril.common import RUN_METRICS, FinetuneError, FinetuneResult, ProgressFn, value_range
from inril_robot.learning.inril.learner import UPDATE_METRICS, DemoSource, InrilLearner
from inril_robot.learning.inril.loop import Method, run_finetuning
from inril_robot.learning.inril.offpolicy import METRIC_FIELDS as OFF_POLICY_METRIC_FIELDS
from inril_robot.learning.inril.offpolicy import OffPolicyMethod
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.policies.base import Obs, Policy
from inril_robot.learning.policies.diffusion import DiffusionPolicy
from inril_robot.learning.policies.gaussian import GaussianPolicy
from inril_robot.learning.policies.residual import ResidualPolicy
from inril_robot.learning.pretrain import (
    DemoWindows,
    check_dataset_fits,
)
from inril_robot.learning.rl.actor import Actor
from inril_robot.learning.rl.buffer import RolloutBuffer
from inril_robot.learning.rl.dppo import DPPOActor, with_frozen_copy
from inril_robot.learning.rl.ppo import Critic, GaussianActor
from inril_robot.learning.rl.residual_ppo import ResidualActor
from inril_robot.learning.rl.rollouts import EpisodeTrace

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
    # IN-RIL's network separation trains the base with IL; plain residual RL (m = 0) keeps it frozen (ResiP)
    freeze = cfg.inril.il_every == 0
    return ResidualActor(ResidualPolicy.from_config(policy, cfg.residual, freeze_base=freeze, squash=False))


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
class OnPolicyMethod:
    """PPO / DPPO / residual PPO with IN-RIL in the shared run loop (`inril.loop`): each iteration's episodes are
    one batch for the learner; evaluations every `eval_every` iterations, checkpoints every `checkpoint_every`."""

    def __init__(
        self,
        cfg: RunConfig,
        loaded: ckpt.LoadedCheckpoint,
        contract: Contract,
        device: torch.device,
        demos: Dataset | None,
    ) -> None:
        self.f, self.device = cfg.finetune, device
        self.actor, self.critic, self.learner = make_learner(cfg, loaded.policy, demos, contract, device)
        self.acting = self.deployed = self.actor.policy
        self.run_cfg = cfg.model_copy(update={"policy": self.actor.policy.cfg})
        self.episodes_per_iteration = self.f.episodes_per_iteration

    def choose(self, obs: Obs, sampler: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        sample = self.actor.sample(obs, sampler)
        return sample.action, {**sample.record, "log_prob": sample.log_prob}

    def learn(self, traces: list[EpisodeTrace]) -> tuple[dict[str, Any], dict[str, Any]]:
        stats = self.learner.update(to_buffer(traces, self.critic, self.device, self.f.ppo.stop_penalty))
        row = {k: v for k, v in stats.items() if isinstance(v, int | float) and k in METRIC_FIELDS}
        if "guard" in stats:
            row.update(guard_alpha=stats["guard"]["alpha"], guard_accepted=int(stats["guard"]["accepted"]))
        return row, {"guard": stats.get("guard")}

    def eval_due(self, iteration: int, env_steps: int) -> bool:
        return self.f.eval_every > 0 and iteration % self.f.eval_every == 0

    def checkpoint_due(self, iteration: int, evaluated: bool) -> bool:
        return iteration % self.f.checkpoint_every == 0

    def state(self) -> dict[str, Any]:
        return {"learner": self.learner.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state["learner"])


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
    iterations, e.g. to test resuming) have run, in the one run loop (`inril.loop`) with the algorithm's method."""
    off_policy = cfg.finetune.algo in OFF_POLICY_ALGOS
    method = OffPolicyMethod if off_policy else OnPolicyMethod

    def build(cfg: RunConfig, loaded: ckpt.LoadedCheckpoint, contract: Contract, device: torch.device) -> Method:
        return method(cfg, loaded, contract, device, demos)

    fields = OFF_POLICY_METRIC_FIELDS if off_policy else METRIC_FIELDS
    return run_finetuning(
        cfg, checkpoint, out, build, fields, resume=resume, on_progress=on_progress, max_iterations=max_iterations
    )
