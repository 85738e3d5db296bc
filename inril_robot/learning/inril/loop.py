"""The fine-tuning run in simulation, whatever learns: one loop for the on-policy (`inril.finetune`) and off-policy
(`inril.offpolicy`) algorithms. Read top to bottom:

    load the checkpoint (its contract must match the run's), open or resume the run folder, build the method
    measure the pre-trained policy once (a new run)
    repeat until `finetune.env_steps` (or `max_iterations` more iterations):
        play `method.episodes_per_iteration` episodes with the exploring actor (seeds `train_seed(cfg.seed, k)`)
        `method.learn(traces)`: its updates, and the numbers it adds to the metrics row
        evaluate when the method says so (always at the end): the deployed policy on the evaluation seeds
        checkpoint when the method says so (always at the end): `last.pt`, `last.train.pt`, curves

A `Method` is what one algorithm brings: the policy that acts and the one that is deployed, how an exploring action
is chosen, what one iteration learns, when to evaluate and checkpoint, and its part of `last.train.pt`. Resuming
restarts at the iteration boundary of the last checkpoint with the method's state, the episode counter and the
exploration generator, so the episodes and updates are those of an uninterrupted run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from inril_robot.config import RunConfig
from inril_robot.core.contract import Contract
from inril_robot.core.seeds import train_seed
from inril_robot.learning.inril.common import (
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
)
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.policies.base import Obs, Policy
from inril_robot.learning.pretrain import pick_device, run_contract
from inril_robot.learning.rl.rollouts import EpisodeTrace, run_episodes
from inril_robot.learning.rl.vec_env import VecEnv

TRAIN_STATE_VERSION = 1


class Method(Protocol):
    acting: Policy  # plays the episodes: its observation keys and history length
    deployed: Policy  # what last.pt / best.pt hold and the evaluations run
    run_cfg: RunConfig  # what run.yaml and the checkpoints record
    episodes_per_iteration: int

    def choose(self, obs: Obs, sampler: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Exploring chunks (B, H, A), normalised, and what to keep per chunk for learning."""
        ...

    def learn(self, traces: list[EpisodeTrace]) -> tuple[dict[str, Any], dict[str, Any]]:
        """One iteration's updates; (metrics-row columns, extra fields for the progress event)."""
        ...

    def eval_due(self, iteration: int, env_steps: int) -> bool: ...

    def checkpoint_due(self, iteration: int, evaluated: bool) -> bool: ...

    def state(self) -> dict[str, Any]:
        """The method's fields of last.train.pt (its learner, its own counters)."""
        ...

    def load_state(self, state: dict[str, Any]) -> None: ...


#: (run config with the checkpoint's policy settings, the loaded checkpoint, the run's contract, device) -> method
BuildMethod = Callable[[RunConfig, ckpt.LoadedCheckpoint, Contract, torch.device], Method]


def run_finetuning(
    cfg: RunConfig,
    checkpoint: Path,
    out: Path,
    build: BuildMethod,
    metric_fields: tuple[str, ...],
    *,
    resume: bool = False,
    on_progress: ProgressFn | None = None,
    max_iterations: int | None = None,
) -> FinetuneResult:
    out = Path(out)
    started = time.perf_counter()
    f = cfg.finetune
    contract = run_contract(cfg)
    loaded = ckpt.load_checkpoint(checkpoint, expect_contract=contract, use_ema=True)
    cfg = cfg.model_copy(update={"policy": loaded.policy.cfg})
    run = open_run(out, cfg, resume, metric_fields)
    if f.num_threads > 0:
        torch.set_num_threads(f.num_threads)
    device = pick_device(f.device)
    torch.manual_seed(cfg.seed)

    method = build(cfg, loaded, contract, device)
    sampler = torch.Generator(device=device).manual_seed(cfg.seed + 1)  # exploration noise
    iteration, env_steps, episodes_done = 0, 0, 0
    last_eval: dict[str, Any] | None = None
    state = read_train_state(run)
    if state is not None:
        method.load_state(state)
        sampler.set_state(state["sampler"])
        iteration, env_steps, episodes_done = int(state["iteration"]), int(state["env_steps"]), int(state["episodes"])
        last_eval = state.get("last_eval") or None
    start_iteration = iteration
    log = RunLog.open(run, method.run_cfg, iteration, state)

    def save(path: Path, evaluation: dict[str, Any] | None) -> None:
        save_finetuned(
            path, method.deployed, method.run_cfg, contract, loaded, checkpoint, env_steps, iteration, evaluation
        )

    def save_train_state() -> None:
        ckpt.atomic_torch_save(
            log.train_state(
                format_version=TRAIN_STATE_VERSION,
                iteration=iteration,
                env_steps=env_steps,
                episodes=episodes_done,
                sampler=sampler.get_state(),
                last_eval=last_eval or {},
                **method.state(),
            ),
            run.train_state,
        )

    def run_eval() -> dict[str, Any]:
        return log.evaluated(evaluate(vec, method.deployed, f.eval_episodes, device), iteration, env_steps, save)

    def collect() -> list[EpisodeTrace]:
        nonlocal episodes_done
        seeds = [train_seed(cfg.seed, episodes_done + i) for i in range(method.episodes_per_iteration)]
        episodes_done += len(seeds)
        method.acting.eval()
        return run_episodes(
            vec,
            seeds,
            method.acting,
            lambda obs: method.choose(obs, sampler),
            device,
            on_chunk=lambda n: on_progress and on_progress({"event": "steps", "steps": n}),
        )

    acting = method.acting
    try:
        with VecEnv(
            cfg, f.num_envs, list(acting.obs_shapes), acting.cfg.n_obs_steps, subprocess=f.subprocess_envs
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
                env_steps += sum(t.steps for t in traces)
                columns, extra = method.learn(traces)
                iteration += 1
                ran += 1
                row = {**iteration_row(iteration, env_steps, started, tick, traces), **columns}
                done = env_steps >= f.env_steps
                if method.eval_due(iteration, env_steps) or done:
                    last_eval = run_eval()
                    row.update(_eval_columns(last_eval))
                log.append(row)
                evaluated = row.get("eval_success") is not None
                stopping = done or (max_iterations is not None and ran >= max_iterations)
                if method.checkpoint_due(iteration, evaluated) or stopping:
                    save(run.last, last_eval if evaluated else None)
                    save_train_state()
                    log.flush(_title(cfg))
                if on_progress:
                    on_progress({"event": "iteration", **row, **extra})
    finally:
        run.close()
    log.flush(_title(cfg))
    return log.result(cfg, start_iteration, iteration, env_steps, started, last_eval)
