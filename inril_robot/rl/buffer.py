"""On-policy rollout storage (T steps x N envs) and generalised advantage estimation.

Step convention (CleanRL's, with termination and truncation kept apart): at step t the policy saw `obs[t]`, took the
normalised chunk `actions[t]`, received `rewards[t]`, and the episode then

- terminated (`dones[t]`): a true end, the next state's value is 0 (no bootstrap);
- was truncated (`truncations[t]`, time limit / safety stop): not an end of the MDP, the return is bootstrapped from
  the value of the episode's final observation, `bootstrap_values[t]` (the vectorised env has already reset, so
  `obs[t + 1]` belongs to the next episode and must not be used);
- or continues: bootstrap from `values[t + 1]` (or `last_value` after the final step).

Either kind of end cuts the GAE recursion. If both flags are set, termination wins.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

Obs = dict[str, Tensor]


def compute_gae(rewards: Tensor, values: Tensor, dones: Tensor, truncated: Tensor, last_value: Tensor, gamma: float,
                lam: float, bootstrap_values_on_truncation: Tensor | None = None) -> tuple[Tensor, Tensor]:
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
    """One minibatch of flattened samples (B = minibatch size)."""

    obs: Obs  # key -> (B, To, *shape)
    actions: Tensor  # (B, H*A) normalised
    log_probs: Tensor  # (B,) under the behaviour policy
    values: Tensor  # (B,) under the critic at collection time
    advantages: Tensor  # (B,)
    returns: Tensor  # (B,)


class RolloutBuffer:
    """Preallocated (T, N, ...) storage; observation tensors are allocated on the first `add`."""

    def __init__(self, num_steps: int, num_envs: int, action_chunk_dim: int, device: torch.device | str = "cpu"):
        self.num_steps, self.num_envs, self.device = num_steps, num_envs, torch.device(device)
        shape = (num_steps, num_envs)
        self.obs: Obs = {}  # key -> (T, N, To, *shape)
        self.actions = torch.zeros(*shape, action_chunk_dim, device=self.device)  # (T, N, H*A) normalised
        self.log_probs = torch.zeros(shape, device=self.device)  # (T, N)
        self.rewards = torch.zeros(shape, device=self.device)  # (T, N)
        self.dones = torch.zeros(shape, device=self.device)  # (T, N) terminated
        self.truncations = torch.zeros(shape, device=self.device)  # (T, N)
        self.values = torch.zeros(shape, device=self.device)  # (T, N)
        self.bootstrap_values = torch.zeros(shape, device=self.device)  # (T, N) V(final obs) where truncated
        self.advantages = torch.zeros(shape, device=self.device)  # (T, N), filled by `compute_returns`
        self.returns = torch.zeros(shape, device=self.device)  # (T, N)
        self.step = 0

    @property
    def size(self) -> int:
        return self.num_steps * self.num_envs

    def add(self, obs: Obs, actions: Tensor, log_probs: Tensor, rewards: Tensor, dones: Tensor, truncations: Tensor,
            values: Tensor, bootstrap_values: Tensor | None = None) -> None:
        """Store one vectorised step: obs key -> (N, To, *shape), actions (N, H, A) or (N, H*A), the rest (N,)."""
        if self.step >= self.num_steps:
            raise IndexError(f"the buffer is full ({self.num_steps} steps); call reset()")
        t = self.step
        for key, value in obs.items():
            if key not in self.obs:
                self.obs[key] = torch.zeros((self.num_steps, *value.shape), dtype=value.dtype, device=self.device)
            self.obs[key][t] = value  # (N, To, *shape)
        self.actions[t] = actions.reshape(self.num_envs, -1)  # (N, H*A)
        self.log_probs[t] = log_probs  # (N,)
        self.rewards[t] = rewards  # (N,)
        self.dones[t] = dones.float()  # (N,)
        self.truncations[t] = truncations.float()  # (N,)
        self.values[t] = values  # (N,)
        self.bootstrap_values[t] = 0.0 if bootstrap_values is None else bootstrap_values  # (N,)
        self.step += 1

    def reset(self) -> None:
        self.step = 0

    def compute_returns(self, last_value: Tensor, gamma: float, lam: float,
                        bootstrap_on_truncation: bool = True) -> None:
        """Fill `advantages` and `returns` (T, N) from a full buffer; last_value (N,) = V(obs after the last step)."""
        if self.step != self.num_steps:
            raise RuntimeError(f"the buffer holds {self.step} of {self.num_steps} steps")
        self.advantages, self.returns = compute_gae(
            self.rewards, self.values, self.dones, self.truncations, last_value, gamma, lam,
            self.bootstrap_values if bootstrap_on_truncation else None)

    def minibatches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Tensor]:
        """A random permutation of the T*N flattened indices, in chunks of `batch_size` (the last may be shorter)."""
        order = torch.randperm(self.size, generator=generator)  # (T*N,)
        yield from order.split(batch_size)  # each (B,)

    def batch(self, indices: Tensor) -> RolloutBatch:
        """The flattened samples at `indices` (B,) (flat index = t * N + n)."""
        idx = indices.to(self.device)
        return RolloutBatch(
            obs={k: v.flatten(0, 1)[idx] for k, v in self.obs.items()},  # (T*N, To, *shape) -> (B, To, *shape)
            actions=self.actions.flatten(0, 1)[idx],  # (B, H*A)
            log_probs=self.log_probs.flatten()[idx],  # (B,)
            values=self.values.flatten()[idx],  # (B,)
            advantages=self.advantages.flatten()[idx],  # (B,)
            returns=self.returns.flatten()[idx],  # (B,)
        )
