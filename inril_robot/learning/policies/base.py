"""The policy interface every learner (BC pre-training, PPO, DPPO, residual PPO) and every runner uses.

Tensors in, tensors out, in **raw units** (metres, radians, gripper in [0, 1], uint8 images): normalisation lives
inside the policy (`Normalizer`, a submodule whose statistics are saved with the weights), so a checkpoint is
self-contained and a caller can never feed it differently-normalised data.

Shapes (B = batch, To = `n_obs_steps`, H = `horizon`, A = action_dim):
- observations: `dict[key -> (B, To, *shape)]`, low-dim keys float32, image keys `<camera>_rgb` uint8 (B, To, h, w, 3);
- actions: `(B, H, A)`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn
from torch.distributions import Normal

from inril_robot.config import PolicyConfig
from inril_robot.learning.policies.normalizer import Normalizer

Obs = dict[str, Tensor]


class Policy(nn.Module, ABC):
    def __init__(
        self, cfg: PolicyConfig, normalizer: Normalizer, obs_shapes: dict[str, tuple[int, ...]], action_dim: int
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.normalizer = normalizer
        self.obs_shapes = dict(obs_shapes)
        self.action_dim = action_dim

    @property
    def image_keys(self) -> list[str]:
        return [k for k in self.obs_shapes if k.endswith("_rgb")]

    @property
    def lowdim_keys(self) -> list[str]:
        return [k for k in self.obs_shapes if not k.endswith("_rgb")]

    @abstractmethod
    def loss(self, obs: Obs, actions: Tensor) -> Tensor:
        """Imitation loss (scalar) of expert `actions` (B, H, A) given `obs` (B, To, ...). Raw units in."""

    @abstractmethod
    def predict_normalized(
        self, obs: Obs, deterministic: bool = True, generator: torch.Generator | None = None
    ) -> Tensor:
        """An action chunk (B, H, A) in normalised units, clipped to [-1, 1] (what RL wrappers such as the residual
        policy build on)."""

    def predict(self, obs: Obs, deterministic: bool = True, generator: torch.Generator | None = None) -> Tensor:
        """An action chunk (B, H, A) in raw units, clipped to the normaliser's action bounds."""
        return self.normalizer.unnormalize_action(self.predict_normalized(obs, deterministic, generator))


def sample_normal(dist: Normal, generator: torch.Generator | None = None) -> Tensor:
    """mean + std * noise, the noise drawn from `generator` (reproducible per episode), not clipped."""
    noise = torch.randn(dist.mean.shape, generator=generator, device=dist.mean.device, dtype=dist.mean.dtype)
    return dist.mean + dist.stddev * noise
