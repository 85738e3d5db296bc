"""Residual policy: IN-RIL's network separation, after ResiP (Ankile et al. 2024).

    a_base  = base.predict_normalized(obs)                                   (B, H, A), detached
    r       ~ Normal(head([ObsEncoder(obs), a_base]), exp(log_std))          (B, H*A), the RL action
    action  = unnormalize(clamp(a_base + scale * r, -1, 1))                  (B, H, A), raw units
              (with `squash`, as residual SAC trains it: scale * tanh(r), so the residual never leaves +-scale)

Gradient separation by construction: `loss` (the IL update) is the base's own imitation loss, so IL gradients reach
only the base; the residual's distribution sees the base action detached, so RL gradients (through `log_prob`) reach
only the residual head, its encoder and its log-std. Optimise `base_parameters()` with the IL optimiser and
`residual_parameters()` with the RL one. With `freeze_base=True` (the default, plain residual RL as in ResiP) the base
has `requires_grad=False` and stays in eval mode; IN-RIL's network-separation variant builds with `freeze_base=False`.

At initialisation the head's last layer is all zeros, so the residual mean is 0 and a deterministic `predict` equals
the base's exactly. Defaults follow ResiP: a 2x256 MLP, residual scale 0.1, initial log-std -1.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Normal

from inril_robot.config import ResidualRLConfig
from inril_robot.learning.policies.base import Obs, Policy, sample_normal
from inril_robot.learning.policies.encoders import ObsEncoder, mlp


class ResidualPolicy(Policy):
    def __init__(
        self,
        base: Policy,
        hidden: Sequence[int] = (256, 256),
        scale: float = 0.1,
        init_log_std: float = -1.5,
        freeze_base: bool = True,
        squash: bool = False,
    ) -> None:
        head_cfg = ResidualRLConfig(hidden=tuple(hidden), scale=scale, init_log_std=init_log_std, squash=squash)
        super().__init__(
            base.cfg.model_copy(update={"residual": head_cfg}), base.normalizer, base.obs_shapes, base.action_dim
        )
        self.base = base
        self.scale = scale
        self.squash = squash
        self.freeze_base = freeze_base
        if freeze_base:
            self.base.requires_grad_(False)
            self.base.eval()
        self.chunk_dim = self.cfg.horizon * self.action_dim  # H*A
        self.encoder = ObsEncoder(base.normalizer, base.obs_shapes, base.cfg)  # its own weights, the same normaliser
        self.head = mlp(self.encoder.out_dim + self.chunk_dim, hidden, self.chunk_dim)  # [features, a_base] -> mean
        last = self.head[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.log_std = nn.Parameter(torch.full((self.chunk_dim,), init_log_std))  # (H*A,)
        self.min_log_std, self.max_log_std = self.cfg.gaussian.min_log_std, self.cfg.gaussian.max_log_std

    @classmethod
    def from_config(
        cls, base: Policy, cfg: ResidualRLConfig, freeze_base: bool = True, squash: bool | None = None
    ) -> ResidualPolicy:
        """The residual `cfg` describes over `base`; `squash` (None: `cfg.squash`) is the algorithm's to set."""
        return cls(base, cfg.hidden, cfg.scale, cfg.init_log_std, freeze_base, cfg.squash if squash is None else squash)

    def train(self, mode: bool = True) -> ResidualPolicy:
        super().train(mode)
        if self.freeze_base:
            self.base.eval()  # a frozen base never augments its inputs
        return self

    def base_parameters(self) -> list[nn.Parameter]:
        """What IL trains."""
        return list(self.base.parameters())

    def residual_parameters(self) -> list[nn.Parameter]:
        """What RL trains: the head, its encoder and the log-std."""
        return [p for name, p in self.named_parameters() if not name.startswith("base.")]

    def base_action(self, obs: Obs, deterministic: bool = True, generator: torch.Generator | None = None) -> Tensor:
        """The base's normalised chunk (B, H, A), detached (RL gradients never reach the base)."""
        with torch.no_grad():
            return self.base.predict_normalized(obs, deterministic, generator)

    def distribution(self, obs: Obs, base_action: Tensor) -> Normal:
        """Normal over the residual (B, H*A), before `scale`, given the normalised base chunk (B, H, A)."""
        x = torch.cat([self.encoder(obs), base_action.reshape(-1, self.chunk_dim)], dim=-1)  # (B, D + H*A)
        mean = self.head(x)  # (B, H*A)
        log_std = self.log_std.clamp(self.min_log_std, self.max_log_std).expand_as(mean)  # (B, H*A)
        return Normal(mean, log_std.exp())

    def log_prob(self, obs: Obs, base_action: Tensor, residual: Tensor) -> Tensor:
        """Log-density (B,) of residuals (B, H, A) or (B, H*A) given the base chunk they were added to."""
        return self.distribution(obs, base_action).log_prob(residual.reshape(-1, self.chunk_dim)).sum(-1)  # (B,)

    def combine(self, base_action: Tensor, residual: Tensor) -> Tensor:
        """Normalised chunk (B, H, A) actually executed: clamp(a_base + scale * r), r squashed by tanh if `squash`."""
        r = residual.reshape(base_action.shape)  # (B, H, A)
        return (base_action + self.scale * (torch.tanh(r) if self.squash else r)).clamp(-1.0, 1.0)

    def loss(self, obs: Obs, actions: Tensor) -> Tensor:
        """The IL loss: the base's imitation loss. Only base parameters receive its gradients."""
        return self.base.loss(obs, actions)

    def predict_normalized(
        self, obs: Obs, deterministic: bool = True, generator: torch.Generator | None = None
    ) -> Tensor:
        """Base chunk (sampled with the same `deterministic` flag) plus the scaled residual (mean or sample)."""
        base_action = self.base_action(obs, deterministic, generator)  # (B, H, A)
        dist = self.distribution(obs, base_action)
        residual = dist.mean if deterministic else sample_normal(dist, generator)  # (B, H*A)
        return self.combine(base_action, residual)  # (B, H, A)
