"""Residual PPO (ResiP, Ankile et al. 2024): PPO on a Gaussian residual head over a base policy.

    a_base ~ base (deterministic)                          (B, H, A), detached
    r      ~ N(head([features, a_base]), std)              (B, H*A)   the RL decision, K = 1
    action = clamp(a_base + scale * r, -1, 1)              (B, H, A)

record = {"base": a_base, "residual": r}: the log-probability is the residual's, given the base action it was added
to. RL trains the residual head (its encoder, head, log-std); the base is IL's (`separation: residual`) or frozen.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from inril_robot.learning.policies.base import Obs, sample_normal
from inril_robot.learning.policies.residual import ResidualPolicy
from inril_robot.learning.rl.actor import Actor, ActorSample, executed_log_prob


class ResidualActor(Actor):
    policy: ResidualPolicy

    def __init__(self, policy: ResidualPolicy) -> None:
        if not isinstance(policy, ResidualPolicy):
            raise TypeError(f"residual PPO needs a ResidualPolicy, got {type(policy).__name__}")
        super().__init__(policy)

    @torch.no_grad()
    def sample(self, obs: Obs, generator: torch.Generator | None = None) -> ActorSample:
        base = self.policy.base_action(obs, deterministic=True, generator=generator)  # (B, H, A)
        dist = self.policy.distribution(obs, base)  # batch shape (B, H*A)
        residual = sample_normal(dist, generator)  # (B, H*A)
        log_prob = self._executed(dist.log_prob(residual))  # (B, 1)
        return ActorSample(self.policy.combine(base, residual), {"base": base, "residual": residual}, log_prob)

    def evaluate(self, obs: Obs, record: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        dist = self.policy.distribution(obs, record["base"])
        return self._executed(dist.log_prob(record["residual"])), self._executed(dist.entropy()).mean()  # (B, 1)

    def _executed(self, per_element: Tensor) -> Tensor:
        c = self.policy.cfg
        return executed_log_prob(per_element, c.horizon, c.act_steps)  # (B, 1)

    def rl_parameters(self) -> list[nn.Parameter]:
        return self.policy.residual_parameters()

    def il_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.policy.base_parameters() if p.requires_grad]
