"""`inril-robot bench learner`: what IN-RIL's IL steps and gradient separation cost the learner, against RL only.

Every variant runs the same `InrilLearner.update` on the same batch of episodes (same policy and critic shapes, PPO
epochs and minibatches, target-KL stop off so each update makes the same number of actor steps), and the variants are
timed round-robin so that a noisy, shared machine slows them alike. Reported per variant: the median wall time of one
update, its ratio to RL only measured in the same run, and the time per actor optimiser step. The update guard
(identical for every variant) is timed on its own.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import numpy as np
import torch

from inril_robot.config import FinetuneConfig, RunConfig, load_config
from inril_robot.learning.inril.guard import UpdateGuard
from inril_robot.learning.inril.learner import InrilLearner
from inril_robot.learning.policies.factory import make_policy
from inril_robot.learning.policies.latency import random_obs
from inril_robot.learning.policies.normalizer import Normalizer
from inril_robot.learning.pretrain import policy_obs_keys
from inril_robot.learning.rl.buffer import RolloutBuffer
from inril_robot.learning.rl.ppo import Critic, GaussianActor
from inril_robot.runtime.env import build_contract
from inril_robot.tasks import make_task

VARIANTS: dict[str, dict[str, Any]] = {
    "rl-only": {"il_every": 0},
    "m=5 none": {"il_every": 5, "separation": "none"},
    "m=5 pcgrad": {"il_every": 5, "separation": "pcgrad"},
    "m=5 orthogonal": {"il_every": 5, "separation": "orthogonal"},
    "auto pcgrad": {"il_every": "auto", "separation": "pcgrad"},
}


def _setup(cfg: RunConfig, transitions: int, episode_length: int) -> tuple[Any, RolloutBuffer, Any]:
    """A Gaussian policy over the task's state contract, a buffer of random episodes, a demo source."""
    contract = build_contract(cfg, make_task(cfg.task))
    keys = policy_obs_keys(contract, "state")
    shapes = {k: tuple(contract.observations[k].shape) for k in keys}
    stats = {k: {"mean": [0.0] * int(np.prod(s)), "std": [1.0] * int(np.prod(s))} for k, s in shapes.items()}
    normalizer = Normalizer(stats, {"min": [-0.02] * 6 + [0.0], "max": [0.02] * 6 + [1.0]})
    policy = make_policy(cfg.policy, normalizer, shapes, contract.action_dim)
    actor = GaussianActor(policy)
    critic = Critic.for_policy(policy, cfg.finetune.ppo.critic_hidden)
    gen = torch.Generator().manual_seed(0)
    buffer = RolloutBuffer()
    for _ in range(transitions // episode_length):
        obs = random_obs(shapes, cfg.policy.n_obs_steps, episode_length)
        sample = actor.sample(obs, gen)
        with torch.no_grad():
            values = critic(obs)
        buffer.add_episode(
            obs, sample.record, sample.log_prob, torch.rand(episode_length, generator=gen), values, terminated=True
        )

    def demos(batch: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
        obs = {k: v.numpy() for k, v in random_obs(shapes, cfg.policy.n_obs_steps, batch).items()}
        actions = rng.uniform(-0.02, 0.02, (batch, cfg.policy.horizon, contract.action_dim)).astype(np.float32)
        return obs, actions

    return (actor, critic), buffer, demos


def bench_learner(
    task: str = "lift",
    transitions: int = 4096,
    repeats: int = 5,
    overrides: list[str] | None = None,
    variants: list[str] | None = None,
) -> dict[str, Any]:
    torch.set_num_threads(1)
    cfg = load_config(
        robot="sim",
        task=task,
        algo="bc_gaussian",
        overrides=["finetune.ppo.target_kl=null", "finetune.ppo.critic_warmup_iterations=0", *(overrides or [])],
    )
    (actor, critic), buffer, demos = _setup(cfg, transitions, 32)
    names = list(variants or VARIANTS)
    learners: dict[str, InrilLearner] = {}
    for name in names:
        spec = cfg.finetune.model_dump()
        spec["inril"].update(VARIANTS[name])
        spec["guard"]["enabled"] = False
        f = FinetuneConfig.model_validate(spec)
        learners[name] = InrilLearner(copy.deepcopy(actor), copy.deepcopy(critic), f, demos, seed=0)
        learners[name].update(copy.deepcopy(buffer))  # warm-up: allocations, Adam state, first references
    times: dict[str, list[float]] = {n: [] for n in names}
    steps: dict[str, int] = {}
    for _ in range(repeats):
        for name in names:
            learner = learners[name]
            batch = copy.deepcopy(buffer)
            before = learner.schedule.step
            tick = time.perf_counter()
            learner.update(batch)
            times[name].append(time.perf_counter() - tick)
            steps[name] = learner.schedule.step - before
    guard = UpdateGuard(cfg.finetune.guard)
    buffer.compute_returns(0.99, 0.95)
    obs = buffer.recent_observations(cfg.finetune.guard.observations)
    live = copy.deepcopy(actor.policy)
    guard_times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        guard.check(live, copy.deepcopy(actor.policy), obs)
        guard_times.append(time.perf_counter() - tick)
    base = statistics.median(times["rl-only"]) if "rl-only" in times else None
    rows = []
    for name in names:
        median = statistics.median(times[name])
        rows.append(
            {
                "variant": name,
                "update_ms": 1e3 * median,
                "min_ms": 1e3 * min(times[name]),
                "ratio_vs_rl_only": median / base if base else None,
                "actor_steps": steps[name],
                "ms_per_actor_step": 1e3 * median / max(steps[name], 1),
            }
        )
    return {
        "task": task,
        "transitions": buffer.size,
        "epochs": cfg.finetune.ppo.epochs,
        "minibatch_size": cfg.finetune.ppo.minibatch_size,
        "il_batch_size": cfg.finetune.inril.il_batch_size,
        "policy_hidden": list(cfg.policy.hidden),
        "repeats": repeats,
        "threads": 1,
        "variants": rows,
        "guard_ms": 1e3 * statistics.median(guard_times),
    }
