"""Critics that acting needs (issue 18: an IDQL checkpoint's policy chooses among candidates with them): the
vectorised Q ensemble SAC and IDQL train (`rl.sac`, `rl.idql`) and IDQL's value network V(s)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from inril_robot.learning.policies.base import Obs, Policy
from inril_robot.learning.policies.encoders import ObsEncoder, mlp


class EnsembleLinear(nn.Module):
    """E independent Linear layers applied at once: (E, B, in) -> (E, B, out)."""

    def __init__(self, ensemble: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default init, per member
        self.weight = nn.Parameter(torch.empty(ensemble, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(ensemble, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)  # (E, B, in) @ (E, in, out) + (E, 1, out) -> (E, B, out)


class QEnsemble(nn.Module):
    """Q_e(s, a) for e = 1..E: a shared observation encoder (images: one CNN for the ensemble, as DrQ/SERL), then E
    MLPs [Linear -> LayerNorm -> ReLU] x hidden -> Linear on [features, executed actions]. Returns (E, B)."""

    def __init__(self, encoder: ObsEncoder, action_dim: int, hidden: Sequence[int], ensemble: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.ensemble = ensemble
        layers: list[nn.Module] = []
        width = encoder.out_dim + action_dim
        for h in hidden:
            layers += [EnsembleLinear(ensemble, width, h), nn.LayerNorm(h), nn.ReLU()]
            width = h
        layers.append(EnsembleLinear(ensemble, width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, obs: Obs, actions: Tensor) -> Tensor:
        x = torch.cat([self.encoder(obs), actions], dim=-1)  # (B, D + Ae)
        x = x.unsqueeze(0).expand(self.ensemble, *x.shape)  # (E, B, D + Ae)
        return self.net(x).squeeze(-1)  # (E, B, 1) -> (E, B)


def executed(policy: Policy, chunk: Tensor) -> Tensor:
    """The executed part of normalised chunks (B, H, A) or (B, H*A), flattened: (B, act_steps * A)."""
    c = policy.cfg
    return chunk.reshape(chunk.shape[0], c.horizon, -1)[:, : c.act_steps].flatten(1)  # (B, act_steps * A)


class ValueNet(nn.Module):
    """V(s): own encoder -> MLP -> scalar; obs (B, To, ...) -> (B,)."""

    def __init__(self, encoder: ObsEncoder, hidden: Sequence[int]) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = mlp(encoder.out_dim, hidden, 1, nn.ReLU)

    def forward(self, obs: Obs) -> Tensor:
        return self.head(self.encoder(obs)).squeeze(-1)  # (B, 1) -> (B,)
