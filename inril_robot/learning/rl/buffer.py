"""On-policy rollout storage (whole episodes) and generalised advantage estimation.

Step convention (CleanRL's, with termination and truncation kept apart): at step t the policy saw `obs[t]`, took the
normalised chunk `actions[t]`, received `rewards[t]`, and the episode then

- terminated (`dones[t]`): a true end, the next state's value is 0 (no bootstrap);
- was truncated (`truncations[t]`, the time limit only: a success and a safety stop are terminations): when the
  learner's trust rule allows, the return is bootstrapped from the value of the episode's final observation,
  `bootstrap_values[t]` (the vectorised env has already reset, so `obs[t + 1]` belongs to the next episode and must
  not be used); otherwise it ends like a termination;
- or continues: bootstrap from `values[t + 1]` (or `last_value` after the final step).

Either kind of end cuts the GAE recursion. If both flags are set, termination wins.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

Obs = dict[str, Tensor]


def compute_gae(
    rewards: Tensor,
    values: Tensor,
    dones: Tensor,
    truncated: Tensor,
    last_value: Tensor,
    gamma: float,
    lam: float,
    bootstrap_values_on_truncation: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Advantages and returns, both (T, N).

    rewards, values, dones, truncated: (T, N); last_value: (N,), the value of the observation after the last step;
    bootstrap_values_on_truncation: (T, N), V(final observation) where `truncated` (ignored elsewhere); None means
    truncations are treated like terminations (no bootstrap).
    """
    steps = rewards.shape[0]
    terminated = dones.bool()  # (T, N)
    trunc = truncated.bool() & ~terminated  # (T, N) termination wins
    ended = (terminated | trunc).float()  # (T, N) 1 where the episode ended after step t
    if bootstrap_values_on_truncation is None:
        boot = torch.zeros_like(values)  # (T, N)
    else:
        boot = torch.where(trunc, bootstrap_values_on_truncation, torch.zeros_like(values))  # (T, N)
    next_values = torch.cat([values[1:], last_value.unsqueeze(0)], dim=0)  # (T, N) V(obs[t + 1])
    next_values = (1.0 - ended) * next_values + boot  # (T, N) 0 on termination, V(final obs) on truncation
    deltas = rewards + gamma * next_values - values  # (T, N) TD errors
    advantages = torch.zeros_like(values)  # (T, N)
    running = torch.zeros_like(last_value)  # (N,)
    for t in reversed(range(steps)):
        running = deltas[t] + gamma * lam * (1.0 - ended[t]) * running  # (N,)
        advantages[t] = running
    return advantages, advantages + values  # (T, N), (T, N)


@dataclass
class RolloutBatch:
    """One minibatch of transitions (B = minibatch size, K = Gaussian decisions per transition)."""

    obs: Obs  # key -> (B, To, *shape) raw
    record: dict[str, Tensor]  # the actor's record of each sample, name -> (B, ...)
    log_probs: Tensor  # (B, K) under the behaviour policy
    values: Tensor  # (B,) under the critic at collection time
    advantages: Tensor  # (B,)
    returns: Tensor  # (B,)


@dataclass
class Episode:
    """One episode's transitions as the learner stores them (T steps, K Gaussian decisions per step)."""

    obs: Obs  # key -> (T, To, *shape)
    record: dict[str, Tensor]  # name -> (T, ...)
    log_probs: Tensor  # (T, K)
    rewards: Tensor  # (T,)
    values: Tensor  # (T,)
    terminated: bool  # a true end (success, safety stop; no bootstrap); otherwise truncated by the time limit
    bootstrap_value: float = 0.0  # V(final observation)


class RolloutBuffer:
    """Whole episodes, flattened in the order they are added (P = total transitions).

    Learning happens between episodes (in simulation and on the robot alike), so the buffer holds complete episodes;
    within the flat sequence the GAE recursion is cut at every episode's last step. An episode that did not terminate
    (the time limit) may be bootstrapped from V(its final observation), see `compute_returns`.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.episodes: list[Episode] = []
        self.obs: Obs = {}  # key -> (P, To, *shape), filled by `compute_returns`
        self.record: dict[str, Tensor] = {}  # name -> (P, ...)
        self.log_probs = self.values = self.rewards = self.advantages = self.returns = torch.zeros(0)

    def add_episode(
        self,
        obs: Obs,
        record: dict[str, Tensor],
        log_probs: Tensor,
        rewards: Tensor,
        values: Tensor,
        terminated: bool,
        bootstrap_value: float = 0.0,
    ) -> None:
        """obs key -> (T, To, ...), record name -> (T, ...), log_probs (T, K) or (T,), rewards and values (T,)."""
        steps = rewards.shape[0]
        if steps == 0:
            raise ValueError("an episode needs at least one transition")
        for name, tensor in [*obs.items(), *record.items(), ("log_probs", log_probs), ("values", values)]:
            if tensor.shape[0] != steps:
                raise ValueError(f"episode field {name!r} has {tensor.shape[0]} rows, rewards have {steps}")
        self.episodes.append(
            Episode(
                obs, record, log_probs.reshape(steps, -1), rewards, values, bool(terminated), float(bootstrap_value)
            )
        )

    @property
    def size(self) -> int:
        return int(self.rewards.shape[0])

    def compute_returns(
        self,
        gamma: float,
        lam: float,
        bootstrap_truncations: bool = False,
        value_range: tuple[float, float] | None = None,
    ) -> None:
        """Concatenate the episodes and fill `advantages` and `returns` (P,). `bootstrap_truncations`: truncated
        episodes continue with V(final observation), clamped into `value_range` (the feasible returns) when given;
        otherwise they end at 0 like terminations."""
        if not self.episodes:
            raise RuntimeError("the buffer holds no episodes")
        eps, dev = self.episodes, self.device
        self.obs = {k: torch.cat([e.obs[k] for e in eps]).to(dev) for k in eps[0].obs}  # (P, To, *shape)
        self.record = {k: torch.cat([e.record[k] for e in eps]).to(dev) for k in eps[0].record}  # (P, ...)
        self.log_probs = torch.cat([e.log_probs for e in eps]).to(dev)  # (P, K)
        self.values = torch.cat([e.values for e in eps]).to(dev)  # (P,)
        self.rewards = torch.cat([e.rewards for e in eps]).to(dev)  # (P,)
        dones = torch.zeros(self.size, device=dev)  # (P,)
        truncations = torch.zeros(self.size, device=dev)  # (P,)
        boot = torch.zeros(self.size, device=dev)  # (P,)
        end = -1
        for e in eps:
            end += e.rewards.shape[0]
            if e.terminated:
                dones[end] = 1.0
            else:
                value = (
                    e.bootstrap_value
                    if value_range is None
                    else min(max(e.bootstrap_value, value_range[0]), value_range[1])
                )
                truncations[end], boot[end] = 1.0, value
        advantages, returns = compute_gae(
            self.rewards[:, None],
            self.values[:, None],
            dones[:, None],
            truncations[:, None],
            torch.zeros(1, device=dev),
            gamma,
            lam,
            boot[:, None] if bootstrap_truncations else None,
        )
        self.advantages, self.returns = advantages[:, 0], returns[:, 0]  # (P,)

    def minibatches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Tensor]:
        """A random permutation of the P indices, in chunks of `batch_size` (the last may be shorter)."""
        order = torch.randperm(self.size, generator=generator)  # (P,)
        yield from order.split(batch_size)  # each (B,)

    def batch(self, indices: Tensor) -> RolloutBatch:
        idx = indices.to(self.device)
        return RolloutBatch(
            obs={k: v[idx] for k, v in self.obs.items()},  # (B, To, *shape)
            record={k: v[idx] for k, v in self.record.items()},  # (B, ...)
            log_probs=self.log_probs[idx],  # (B, K)
            values=self.values[idx],  # (B,)
            advantages=self.advantages[idx],  # (B,)
            returns=self.returns[idx],  # (B,)
        )

    def recent_observations(self, count: int) -> Obs:
        """The last `count` observations (what the update guard compares the old and new policy on)."""
        if not self.obs:
            raise RuntimeError("the buffer's episodes are not concatenated yet: call compute_returns() first")
        return {k: v[-count:] for k, v in self.obs.items()}
