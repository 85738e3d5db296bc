"""What every RL algorithm's actor offers the learner: sample a chunk, re-evaluate a sample's log-probability.

PPO, DPPO and residual PPO differ only in *what* is random in an action chunk (a Gaussian chunk; the denoising chain;
a residual on top of a base action). Each `Actor` says so in two methods, and the one PPO loss
(`rl.ppo.clipped_surrogate`) and the IN-RIL learner work for all three:

    sample(obs)              -> ActorSample: action (B, H, A) normalised in [-1, 1], record {name: (B, ...)},
                                log_prob (B, K): K Gaussian decisions per sample (1; DPPO: the fine-tuned steps),
                                over the executed steps of the chunk only (the first act_steps of H; DPPO does so)
    evaluate(obs, record)    -> log_prob (B, K) of the recorded sample under the current weights, entropy or None

`policy` is the network that runs on the robot (and is checkpointed, evaluated, guarded); `il_loss` is its imitation
loss on demonstrations; `rl_parameters()` / `il_parameters()` are what each objective's optimiser owns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from inril_robot.learning.policies.base import Obs, Policy


@dataclass
class ActorSample:
    action: Tensor  # (B, H, A) normalised, clipped to [-1, 1]: what is executed
    record: dict[str, Tensor]  # name -> (B, ...): enough to recompute the log-probability later
    log_prob: Tensor  # (B, K) under the weights that sampled it


def executed_log_prob(log_prob: Tensor, horizon: int, act_steps: int) -> Tensor:
    """Per-element log-probabilities (B, H*A) or (B, H, A) -> summed over the executed steps only: (B, 1).
    The chunk's later actions are never executed, so they carry no reward signal and stay out of the PPO ratio."""
    per_step = log_prob.reshape(log_prob.shape[0], horizon, -1)  # (B, H, A)
    return per_step[:, :act_steps].sum(dim=(1, 2)).unsqueeze(-1)  # (B, 1)


class Actor(nn.Module, ABC):
    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy
        self.log_std_bounds: tuple[float, float] | None = None  # floor and ceiling the learner projects into

    @abstractmethod
    def sample(self, obs: Obs, generator: torch.Generator | None = None) -> ActorSample:
        """An exploratory chunk for observations (B, To, ...) (no gradient needed)."""

    @abstractmethod
    def evaluate(self, obs: Obs, record: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        """(log_prob (B, K) with graph, mean entropy or None) of recorded samples under the current weights."""

    def rl_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.policy.parameters() if p.requires_grad]

    def il_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.policy.parameters() if p.requires_grad]

    def std_parameters(self) -> list[nn.Parameter]:
        """The exploration log-std parameters RL trains (their own optimiser group, floor and ceiling)."""
        return [p for name, p in self.policy.named_parameters() if name.split(".")[-1] == "log_std" and p.requires_grad]

    def il_loss(self, obs: Obs, actions: Tensor) -> Tensor:
        """The imitation loss of demonstrated raw chunks (B, H, A)."""
        return self.policy.loss(obs, actions)
