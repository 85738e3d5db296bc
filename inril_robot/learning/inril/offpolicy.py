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
from typing import Any

import numpy as np
import torch

from inril_robot.config import RunConfig
from inril_robot.core.contract import Contract
from inril_robot.data.store import Dataset
from inril_robot.learning.inril.common import RUN_METRICS, FinetuneError, value_range
from inril_robot.learning.inril.offpolicy_learner import Algo, IDQLAlgo, OffPolicyLearner, make_algo
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.policies.base import Obs, Policy
from inril_robot.learning.pretrain import DemoWindows, check_dataset_fits
from inril_robot.learning.rl.replay import ReplayBuffer, episode_transitions
from inril_robot.learning.rl.rollouts import EpisodeTrace

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
class OffPolicyMethod:
    """SAC / IDQL in the shared run loop (`inril.loop`): the online replay, the owed updates, evaluations every
    `eval_every_env_steps`, a checkpoint with every evaluation."""

    def __init__(
        self,
        cfg: RunConfig,
        loaded: ckpt.LoadedCheckpoint,
        contract: Contract,
        device: torch.device,
        demos: Dataset | None,
    ) -> None:
        f, o = cfg.finetune, cfg.finetune.offpolicy
        self.o = o
        self.acting = loaded.policy.to(device)
        try:
            self.algo: Algo = make_algo(self.acting, f, value_range(cfg)).to(device)
        except TypeError as e:
            raise FinetuneError(str(e)) from e
        demo_source, demos_rb = None, None
        if demos is not None:
            if demos.info.get("task") != cfg.task.name:
                raise FinetuneError(f"demos {demos.root} hold task {demos.info.get('task')!r}, not {cfg.task.name!r}")
            check_dataset_fits(demos, contract)
            pc = self.acting.cfg
            demo_source = DemoWindows(demos, list(self.acting.obs_shapes), pc.n_obs_steps, pc.horizon).sample
            demos_rb = demo_replay(demos, self.acting, device=device) if o.demo_fraction > 0 else None
        try:
            self.learner = OffPolicyLearner(
                self.algo, f, ReplayBuffer(o.capacity, device), demos_rb, demo_source, device, seed=cfg.seed
            )
        except ValueError as e:
            raise FinetuneError(str(e)) from e
        self.deployed = deployable(self.algo)
        self.run_cfg = cfg
        self.episodes_per_iteration = o.episodes_per_iteration
        self.next_eval = o.eval_every_env_steps

    def choose(self, obs: Obs, sampler: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        chunk = self.algo.act(obs, explore=True, generator=sampler)  # (B, H, A) normalised
        return chunk, {"action": chunk}

    def learn(self, traces: list[EpisodeTrace]) -> tuple[dict[str, Any], dict[str, Any]]:
        o, learner = self.o, self.learner
        learner.online.extend(t for trace in traces for t in trace_transitions(trace))
        # the updates owed: utd per online transition so far, once learning has started (exact UTD)
        started_learning = learner.online.added >= o.learning_starts
        updates = max(round(o.utd * learner.online.added) - learner.critic_updates, 0) if started_learning else 0
        tick = time.perf_counter()
        stats = learner.update(updates) if updates else {}
        seconds = time.perf_counter() - tick
        row = {
            "replay_size": len(learner.online),
            "critic_updates": learner.critic_updates,
            "updates_per_s": updates / seconds if updates else None,
            "utd_achieved": learner.critic_updates / max(learner.online.added, 1),
            **{k: v for k, v in stats.items() if isinstance(v, int | float) and k in METRIC_FIELDS},
        }
        return row, {}

    def eval_due(self, iteration: int, env_steps: int) -> bool:
        every = self.o.eval_every_env_steps
        if every <= 0 or env_steps < self.next_eval:
            return False
        while self.next_eval <= env_steps:
            self.next_eval += every
        return True

    def checkpoint_due(self, iteration: int, evaluated: bool) -> bool:
        return evaluated

    def state(self) -> dict[str, Any]:
        return {"learner": self.learner.state_dict(), "next_eval": self.next_eval}

    def load_state(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state["learner"])
        self.next_eval = int(state["next_eval"])
