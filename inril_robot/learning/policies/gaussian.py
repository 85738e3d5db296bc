"""Gaussian MLP policy over a normalised action chunk: the PPO actor, pre-trained by behaviour cloning (NLL).

    features = ObsEncoder(obs)                                  (B, D)
    h        = MLP(features)                                    (B, hidden[-1])   Mish between layers
    mean     = Linear(h)                                        (B, H*A)          normalised units, NOT squashed
    log_std  = learned parameter (H*A,) or Linear(h) (B, H*A),  clamped to [min_log_std, max_log_std]

No tanh: the policy is a plain diagonal Gaussian, so PPO's log-probabilities need no change-of-variables term.
Actions are clamped to [-1, 1] only when they are produced (`predict`), as in CleanRL's continuous PPO.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Normal

from inril_robot.config import PolicyConfig
from inril_robot.learning.policies.base import Obs, Policy, sample_normal
from inril_robot.learning.policies.encoders import ObsEncoder
from inril_robot.learning.policies.normalizer import Normalizer


class GaussianPolicy(Policy):
    def __init__(
        self,
        cfg: PolicyConfig,
        normalizer: Normalizer,
        obs_shapes: dict[str, tuple[int, ...]],
        action_dim: int,
        activation: type[nn.Module] = nn.Mish,
    ) -> None:
        super().__init__(cfg, normalizer, obs_shapes, action_dim)
        self.chunk_dim = cfg.horizon * action_dim  # H*A
        self.encoder = ObsEncoder(normalizer, obs_shapes, cfg)
        layers: list[nn.Module] = []
        width = self.encoder.out_dim
        for hidden in cfg.hidden:
            layers += [nn.Linear(width, hidden), activation()]
            width = hidden
        self.trunk = nn.Sequential(*layers)  # (B, D) -> (B, width); empty `hidden` = linear policy
        self.mean_head = nn.Linear(width, self.chunk_dim)
        _scale_init(self.mean_head, 0.01, 0.0)  # initial mean ~0: the centre of the demonstrated action range
        g = cfg.gaussian
        self.min_log_std, self.max_log_std = g.min_log_std, g.max_log_std
        if g.log_std == "learned":
            self.log_std = nn.Parameter(torch.full((self.chunk_dim,), g.init_log_std))  # (H*A,)
            self.log_std_head: nn.Linear | None = None
        else:
            self.log_std_head = nn.Linear(width, self.chunk_dim)
            _scale_init(self.log_std_head, 0.01, g.init_log_std)  # starts at init_log_std whatever the state

    def distribution(self, obs: Obs) -> Normal:
        """The policy's Normal over the normalised, flattened action chunk: batch shape (B, H*A)."""
        h = self.trunk(self.encoder(obs))  # (B, width)
        mean = self.mean_head(h)  # (B, H*A)
        log_std = self.log_std_head(h) if self.log_std_head is not None else self.log_std.expand_as(mean)  # (B, H*A)
        return Normal(mean, log_std.clamp(self.min_log_std, self.max_log_std).exp())

    def log_prob(self, obs: Obs, normalized_actions: Tensor) -> Tensor:
        """Log-density (B,) of normalised chunks (B, H, A) or (B, H*A), summed over every action dimension."""
        a = normalized_actions.reshape(normalized_actions.shape[0], self.chunk_dim)  # (B, H*A)
        return self.distribution(obs).log_prob(a).sum(-1)  # (B,)

    def loss(self, obs: Obs, actions: Tensor) -> Tensor:
        """Negative log-likelihood of the expert chunk (raw (B, H, A) in), mean over the batch."""
        return -self.log_prob(obs, self.normalizer.normalize_action(actions)).mean()

    def predict_normalized(
        self, obs: Obs, deterministic: bool = True, generator: torch.Generator | None = None
    ) -> Tensor:
        dist = self.distribution(obs)
        a = dist.mean if deterministic else sample_normal(dist, generator)  # (B, H*A)
        return a.clamp(-1.0, 1.0).reshape(-1, self.cfg.horizon, self.action_dim)  # (B, H, A)


def _scale_init(layer: nn.Linear, weight_scale: float, bias: float) -> None:
    with torch.no_grad():
        layer.weight.mul_(weight_scale)
        layer.bias.fill_(bias)
