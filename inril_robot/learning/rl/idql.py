"""IDQL (Hansen-Estruch et al. 2023), the IN-RIL paper's off-policy base, for a BC-pre-trained diffusion policy.

Three networks, all trained on the replay:

    V(s)          expectile regression of the (target) Q on the replay's actions:
                  L_V = mean |tau - 1(q - V < 0)| (q - V)^2,   q = min_j Q_targ_j(s, a)
    Q_j(s, a)     L_Q = mean_j 0.5 (Q_j(s, a) - (r + gamma (1 - terminal) V(s')))^2   (time limit: bootstrapped)
    pi(a|s)       the diffusion actor, trained by its denoising loss on the replay's chunks: the behaviour model

Acting is IDQL's implicit policy: N candidate chunks from the diffusion actor, each scored by the critics; exploring
samples one with probability proportional to its expectile weight |tau - 1(Q < V)| (IDQL's weights for the
expectile loss), evaluation takes the highest Q. "One RL update" is one denoising step of the actor on a replay batch;
IN-RIL's IL step is the same loss on a demonstration batch (its own optimiser). The deployable checkpoint is the
diffusion policy alone; its Q-selected behaviour needs the critics, which `last.train.pt` keeps (docs/inril.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from inril_robot.learning.policies.base import Obs
from inril_robot.learning.policies.diffusion import DiffusionPolicy
from inril_robot.learning.policies.encoders import ObsEncoder, mlp
from inril_robot.learning.rl.replay import Batch
from inril_robot.learning.rl.sac import QEnsemble, executed, td_target


class ValueNet(nn.Module):
    """V(s): own encoder -> MLP -> scalar; obs (B, To, ...) -> (B,)."""

    def __init__(self, encoder: ObsEncoder, hidden: Sequence[int]) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = mlp(encoder.out_dim, hidden, 1, nn.ReLU)

    def forward(self, obs: Obs) -> Tensor:
        return self.head(self.encoder(obs)).squeeze(-1)  # (B, 1) -> (B,)


def expectile_loss(diff: Tensor, tau: float) -> Tensor:
    """mean |tau - 1(diff < 0)| diff^2 for diff = q - V (B,): tau > 0.5 leans V towards the upper expectile."""
    weight = torch.where(diff < 0, 1.0 - tau, tau)  # (B,)
    return (weight * diff**2).mean()


def value_loss(value: ValueNet, target: QEnsemble, policy: DiffusionPolicy, batch: Batch, tau: float) -> Tensor:
    with torch.no_grad():
        q = target(batch.obs, executed(policy, batch.action)).min(dim=0).values  # (E, B) -> (B,)
    return expectile_loss(q - value(batch.obs), tau)


def q_loss(
    critic: QEnsemble,
    value: ValueNet,
    policy: DiffusionPolicy,
    batch: Batch,
    gamma: float,
    value_range: tuple[float, float] | None,
    bootstrap_time_limit: bool = True,
) -> Tensor:
    with torch.no_grad():
        y = td_target(batch.reward, batch.ends(bootstrap_time_limit), value(batch.next_obs), gamma, value_range)
    q = critic(batch.obs, executed(policy, batch.action))  # (E, B)
    return 0.5 * ((q - y) ** 2).mean()


def actor_loss(policy: DiffusionPolicy, batch: Batch) -> Tensor:
    """The denoising loss on the replay's normalised chunks (the policy's loss takes raw units)."""
    return policy.loss(batch.obs, policy.normalizer.unnormalize_action(batch.action))


@torch.no_grad()
def select(
    policy: DiffusionPolicy,
    critic: QEnsemble,
    value: ValueNet,
    obs: Obs,
    candidates: int,
    tau: float,
    explore: bool,
    generator: torch.Generator | None = None,
) -> Tensor:
    """IDQL's implicit policy: (B, H, A) normalised chunks chosen among `candidates` diffusion samples per state."""
    batch = next(iter(obs.values())).shape[0]
    repeated = {k: v.repeat_interleave(candidates, dim=0) for k, v in obs.items()}  # (B*N, To, ...)
    chunks = policy.predict_normalized(repeated, deterministic=not explore, generator=generator)  # (B*N, H, A)
    q = critic(repeated, executed(policy, chunks)).min(dim=0).values.view(batch, candidates)  # (B, N)
    if explore:
        v = value(obs)[:, None]  # (B, 1)
        weights = torch.where(q < v, 1.0 - tau, tau)  # (B, N) expectile weights
        pick = torch.multinomial(weights, 1, generator=generator).squeeze(-1)  # (B,)
    else:
        pick = q.argmax(dim=-1)  # (B,)
    chosen = chunks.view(batch, candidates, *chunks.shape[1:])  # (B, N, H, A)
    return chosen[torch.arange(batch, device=chosen.device), pick]  # (B, H, A)
