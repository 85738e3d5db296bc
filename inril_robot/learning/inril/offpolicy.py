"""`inril-robot finetune --robot sim --set finetune.algo=sac|idql`: off-policy (IN-RIL) fine-tuning, in-process.

The same run folder as the PPO path (`inril.finetune`): `last.pt` / `best.pt` (deployable checkpoints), `last.train.pt`
(learner, critics, optimisers, schedule, replay, RNG states, counters: `--resume` continues at the iteration boundary),
`metrics.csv`, `curves.png`, TensorBoard events, `run.yaml`. One iteration, read top to bottom:

    play `offpolicy.episodes_per_iteration` episodes with the exploring actor     (the same seeds as the PPO path)
    append their transitions to the online replay                                  (time limit: truncated, not terminal)
    once `learning_starts` transitions are in: round(utd * new transitions) critic updates, with the actor's and
    the interleaved IL steps (`OffPolicyLearner.update`)
    every `eval_every_env_steps`: the deterministic policy on the in-run evaluation seeds; checkpoints

Demonstrations (`--demos`) feed the IL steps (IN-RIL) and, with `offpolicy.demo_fraction > 0`, a second replay mixed
into every RL batch with the rewards the episodes recorded (RLPD).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inril_robot.config import RunConfig
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
from inril_robot.learning.inril.offpolicy_learner import Algo, IDQLAlgo, OffPolicyLearner, make_algo
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.policies.base import Obs, Policy
from inril_robot.learning.pretrain import DemoWindows, check_dataset_fits, pick_device, run_contract
from inril_robot.learning.rl.replay import ReplayBuffer, episode_transitions
from inril_robot.learning.rl.rollouts import EpisodeTrace, run_episodes
from inril_robot.learning.rl.vec_env import VecEnv

TRAIN_STATE_VERSION = 1
CONTROL_HZ_MINUTES = 10 * 60  # env steps per supervised robot minute at 10 Hz
METRIC_FIELDS = (
    *RUN_METRICS,
    "replay_size",
    "critic_updates",
    "updates_per_s",
    "utd_achieved",
    "m",
    "rl_steps",
    "il_steps",
    "critic_loss",
    "value_loss",
    "q_mean",
    "target_mean",
    "actor_loss",
    "entropy",
    "alpha",
    "il_loss",
    "bc_loss",
    "rl_cos_ref",
    "il_cos_ref",
    "rl_grad_norm",
    "il_grad_norm",
)


# ------------------------------------------------------------------------------------------------ transitions
def trace_transitions(trace: EpisodeTrace) -> Iterator[dict[str, Any]]:
    """An episode played in simulation -> its transitions (one per executed chunk); the chunk is the sampled one
    (normalised), the end is terminal for a success or a safety stop, truncated for the time limit."""
    n = len(trace.obs)
    for i in range(n):
        last = i == n - 1
        nxt = trace.final_obs if last else trace.obs[i + 1]
        assert nxt is not None
        terminal = last and (trace.terminated or trace.stopped)
        yield {
            "obs": trace.obs[i],
            "action": trace.kept[i]["action"].numpy(),
            "reward": trace.rewards[i],
            "terminal": terminal,
            "truncated": last and not terminal,
            "intervention": False,
            "next_obs": nxt,
        }


def demo_replay(
    dataset: Dataset, policy: Policy, capacity: int | None = None, device: torch.device | str = "cpu"
) -> ReplayBuffer:
    """The demonstrations as transitions at the policy's chunk granularity, with their recorded rewards; actions
    normalised by the policy's normaliser. `device`: the learner's (its batches are concatenated with online ones)."""
    c = policy.cfg
    keys = list(policy.obs_shapes)
    episodes = dataset.episodes
    replay = ReplayBuffer(capacity or max(sum(e.length for e in episodes), 1), device)
    for e in episodes:
        obs = {k: e.load(f"obs/{k}") for k in keys}  # (T, *shape)
        with torch.no_grad():
            executed = torch.from_numpy(e.load("action/executed")).float().to(next(policy.parameters()).device)
            actions = policy.normalizer.normalize_action(executed).cpu().numpy()
        rewards = e.load("reward").astype(np.float64)  # (T,)
        stopped = bool(e.meta.get("stopped", False))
        replay.extend(
            episode_transitions(obs, actions, rewards, e.success, stopped, c.n_obs_steps, c.horizon, c.act_steps)
        )
    return replay


# ------------------------------------------------------------------------------------------------ evaluation
def deployable(algo: Algo) -> Policy:
    """What `last.pt` holds and what the run evaluates (acting as deployed, `common.evaluate`): SAC's Gaussian policy;
    IDQL's implicit policy (the diffusion actor with the critics that choose among its candidates)."""
    return algo.deployable if isinstance(algo, IDQLAlgo) else algo.policy


# ------------------------------------------------------------------------------------------------ the run
def finetune_offpolicy(
    cfg: RunConfig,
    checkpoint: Path,
    demos: Dataset | None,
    out: Path,
    *,
    resume: bool = False,
    on_progress: ProgressFn | None = None,
    max_iterations: int | None = None,
) -> FinetuneResult:
    out = Path(out)
    started = time.perf_counter()
    f, o = cfg.finetune, cfg.finetune.offpolicy
    contract = run_contract(cfg)
    loaded = ckpt.load_checkpoint(checkpoint, expect_contract=contract, use_ema=True)
    cfg = cfg.model_copy(update={"policy": loaded.policy.cfg})
    run = open_run(out, cfg, resume, METRIC_FIELDS)
    if f.num_threads > 0:
        torch.set_num_threads(f.num_threads)
    device = pick_device(f.device)
    torch.manual_seed(cfg.seed)

    policy = loaded.policy.to(device)
    try:
        algo = make_algo(policy, f, value_range(cfg)).to(device)
    except TypeError as e:
        raise FinetuneError(str(e)) from e
    demo_source, demos_rb = None, None
    if demos is not None:
        if demos.info.get("task") != cfg.task.name:
            raise FinetuneError(f"demos {demos.root} hold task {demos.info.get('task')!r}, not {cfg.task.name!r}")
        check_dataset_fits(demos, contract)
        pc = policy.cfg
        demo_source = DemoWindows(demos, list(policy.obs_shapes), pc.n_obs_steps, pc.horizon).sample
        demos_rb = demo_replay(demos, policy, device=device) if o.demo_fraction > 0 else None
    try:
        learner = OffPolicyLearner(
            algo, f, ReplayBuffer(o.capacity, device), demos_rb, demo_source, device, seed=cfg.seed
        )
    except ValueError as e:
        raise FinetuneError(str(e)) from e
    sampler = torch.Generator(device=device).manual_seed(cfg.seed + 1)  # exploration noise
    run_cfg = cfg

    last_path, train_path = run.last, run.train_state
    iteration, env_steps, episodes_done, next_eval = 0, 0, 0, o.eval_every_env_steps
    last_eval: dict[str, Any] | None = None
    state = read_train_state(run)
    if state is not None:
        learner.load_state_dict(state["learner"])
        sampler.set_state(state["sampler"])
        iteration, env_steps, episodes_done = int(state["iteration"]), int(state["env_steps"]), int(state["episodes"])
        next_eval = int(state["next_eval"])
        last_eval = state["last_eval"] or None
    start_iteration = iteration
    log = RunLog.open(run, run_cfg, iteration, state)
    deployed = deployable(algo)

    def save(path: Path, evaluation: dict[str, Any] | None) -> None:
        save_finetuned(path, deployed, run_cfg, contract, loaded, checkpoint, env_steps, iteration, evaluation)

    def save_train_state() -> None:
        ckpt.atomic_torch_save(
            log.train_state(
                format_version=TRAIN_STATE_VERSION,
                iteration=iteration,
                env_steps=env_steps,
                episodes=episodes_done,
                next_eval=next_eval,
                learner=learner.state_dict(),
                sampler=sampler.get_state(),
                last_eval=last_eval or {},
            ),
            train_path,
        )

    def run_eval() -> dict[str, Any]:
        return log.evaluated(evaluate(vec, deployed, f.eval_episodes, device), iteration, env_steps, save)

    def collect() -> list[EpisodeTrace]:
        nonlocal episodes_done
        seeds = [train_seed(cfg.seed, episodes_done + i) for i in range(o.episodes_per_iteration)]
        episodes_done += len(seeds)

        def choose(obs: Obs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            chunk = algo.act(obs, explore=True, generator=sampler)  # (B, H, A) normalised
            return chunk, {"action": chunk}

        policy.eval()
        return run_episodes(
            vec,
            seeds,
            policy,
            choose,
            device,
            on_chunk=lambda n: on_progress and on_progress({"event": "steps", "steps": n}),
        )

    try:
        with VecEnv(
            cfg, f.num_envs, list(policy.obs_shapes), policy.cfg.n_obs_steps, subprocess=f.subprocess_envs
        ) as vec:
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
                learner.online.extend(t for trace in traces for t in trace_transitions(trace))
                env_steps += collected
                stats: dict[str, Any] = {}
                # the updates owed: utd per online transition so far, once learning has started (exact UTD)
                started_learning = learner.online.added >= o.learning_starts
                updates = (
                    max(round(o.utd * learner.online.added) - learner.critic_updates, 0) if started_learning else 0
                )
                update_tick = time.perf_counter()
                if updates:
                    stats = learner.update(updates)
                update_s = time.perf_counter() - update_tick
                iteration += 1
                ran += 1
                row = {
                    **iteration_row(iteration, env_steps, started, tick, traces),
                    "replay_size": len(learner.online),
                    "critic_updates": learner.critic_updates,
                    "updates_per_s": updates / update_s if updates else None,
                    "utd_achieved": learner.critic_updates / max(learner.online.added, 1),
                    **{k: v for k, v in stats.items() if isinstance(v, int | float) and k in METRIC_FIELDS},
                }
                done = env_steps >= f.env_steps
                if (o.eval_every_env_steps > 0 and env_steps >= next_eval) or done:
                    while o.eval_every_env_steps > 0 and next_eval <= env_steps:
                        next_eval += o.eval_every_env_steps
                    last_eval = run_eval()
                    row.update(_eval_columns(last_eval))
                log.append(row)
                if (
                    row.get("eval_success") is not None
                    or done
                    or (max_iterations is not None and ran >= max_iterations)
                ):
                    save(last_path, last_eval if row.get("eval_success") is not None else None)
                    save_train_state()
                    log.flush(_title(cfg))
                if on_progress:
                    on_progress({"event": "iteration", **row})
    finally:
        run.close()
    log.flush(_title(cfg))
    return log.result(cfg, start_iteration, iteration, env_steps, started, last_eval)
