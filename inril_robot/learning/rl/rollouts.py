"""Run whole episodes of a policy across a `VecEnv`, batching the policy call over the envs.

`run_episodes(vec, seeds, choose, ...)` plays one episode per seed (episode j on seed seeds[j], on whichever env is
free) and returns their traces in seed order. `choose(obs)` maps a batch of observation histories (B, To, ...) to a
normalised chunk (B, H, A) plus per-row tensors to keep (the actor's record and log-probability when collecting for
RL; nothing when evaluating). The first `act_steps` actions of each chunk are unnormalised and executed; the env
applies the safety envelope to each. RL's log-probabilities are those of the sampled chunk: the envelope acts as part
of the environment, as on the robot.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from inril_robot.learning.policies.base import Obs, Policy
from inril_robot.learning.rl.vec_env import History, VecEnv

Choose = Callable[[Obs], tuple[Tensor, dict[str, Tensor]]]


@dataclass
class EpisodeTrace:
    seed: int
    obs: list[History] = field(default_factory=list)  # the history each chunk was chosen from
    kept: list[dict[str, Tensor]] = field(default_factory=list)  # choose's per-row tensors, one dict per chunk
    rewards: list[float] = field(default_factory=list)  # per chunk
    steps: int = 0  # executed control steps
    success: bool = False
    terminated: bool = False  # success
    stopped: bool = False  # a safety stop ended it (a failure); neither: the time limit
    safety_events: int = 0
    final_obs: History | None = None

    @property
    def ret(self) -> float:
        return float(sum(self.rewards))

    def stacked_obs(self) -> Obs:
        """key -> (T, To, ...) tensor over the episode's chunks."""
        return {k: torch.from_numpy(np.stack([o[k] for o in self.obs])) for k in self.obs[0]}

    def stacked_kept(self) -> dict[str, Tensor]:
        return {k: torch.stack([d[k] for d in self.kept]) for k in (self.kept[0] if self.kept else {})}


def batch_obs(histories: list[History], device: torch.device) -> Obs:
    return {k: torch.from_numpy(np.stack([h[k] for h in histories])).to(device) for k in histories[0]}


def raw_actions(policy: Policy, chunk: Tensor, act_steps: int) -> np.ndarray:
    """Normalised chunks (B, H, A) -> the executed raw actions (B, act_steps, A), float64, gripper in [0, 1]."""
    raw = policy.normalizer.unnormalize_action(chunk)[:, :act_steps].detach().cpu().double().numpy().copy()
    raw[..., -1] = np.clip(raw[..., -1], 0.0, 1.0)
    return raw


def run_episodes(
    vec: VecEnv,
    seeds: list[int],
    policy: Policy,
    choose: Choose,
    device: torch.device | str = "cpu",
    on_chunk: Callable[[int], None] | None = None,
) -> list[EpisodeTrace]:
    """One episode per seed; `on_chunk(control_steps)` after every executed batch of chunks (progress)."""
    device = torch.device(device)
    act_steps = policy.cfg.act_steps
    traces = [EpisodeTrace(seed) for seed in seeds]
    pending = deque(range(len(seeds)))
    active: dict[int, tuple[int, History]] = {}  # env -> (episode index, current history)

    def start(envs: list[int]) -> None:
        assignments = {i: pending.popleft() for i in envs if pending}
        histories = vec.reset({i: seeds[j] for i, j in assignments.items()})
        active.update({i: (j, histories[i]) for i, j in assignments.items()})

    start(list(range(vec.num_envs)))
    while active:
        envs = sorted(active)
        obs = batch_obs([active[i][1] for i in envs], device)
        with torch.no_grad():
            chunk, kept = choose(obs)  # (B, H, A), name -> (B, ...)
        actions = raw_actions(policy, chunk, act_steps)  # (B, act_steps, A)
        results = vec.step({i: actions[b] for b, i in enumerate(envs)})
        finished = []
        for b, i in enumerate(envs):
            j, history = active[i]
            r, trace = results[i], traces[j]
            trace.obs.append(history)
            trace.kept.append({k: v[b].cpu() for k, v in kept.items()})
            trace.rewards.append(r.reward)
            trace.steps += r.steps
            trace.safety_events += r.safety_events
            if r.terminated or r.truncated:
                trace.success, trace.terminated, trace.final_obs = r.success, r.terminated, r.obs
                trace.stopped = r.stopped and not r.terminated
                del active[i]
                finished.append(i)
            else:
                active[i] = (j, r.obs)
        if on_chunk is not None:
            on_chunk(sum(results[i].steps for i in envs))
        if finished:
            start(finished)
    return traces
