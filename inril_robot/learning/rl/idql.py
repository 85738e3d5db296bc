"""IDQL (Hansen-Estruch et al. 2023), the IN-RIL paper's off-policy base, for a BC-pre-trained diffusion policy.

Three networks, all trained on the replay:

    V(s)          expectile regression of the (target) Q on the replay's actions:
                  L_V = mean |tau - 1(q - V < 0)| (q - V)^2,   q = min_j Q_targ_j(s, a)
    Q_j(s, a)     L_Q = mean_j 0.5 (Q_j(s, a) - (r + gamma (1 - terminal) V(s')))^2   (time limit: bootstrapped)
    pi(a|s)       the diffusion actor, trained by its denoising loss on the replay's chunks: the behaviour model

Acting is IDQL's implicit policy: N candidate chunks from the diffusion actor, each scored by the critics; exploring
samples eta-1 candidates and draws one with probability proportional to its expectile weight |tau - 1(Q < V)|
(IDQL's weights for the expectile loss); acting (eval, deployment) follows `policy.idql` (`IDQLActConfig`: number of
candidates, their eta, argmax or expectile draw). "One RL update" is one denoising step of the actor on a replay
batch; IN-RIL's IL step is the same loss on a demonstration batch (its own optimiser). The deployable checkpoint is
`IDQLPolicy`: the diffusion actor with the critics that choose among its candidates, so `eval`, the server and the
bench act exactly as the run evaluated (docs/inril.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from inril_robot.learning.policies.critics import QEnsemble, ValueNet, executed
from inril_robot.learning.policies.diffusion import DiffusionPolicy
from inril_robot.learning.rl.replay import Batch
from inril_robot.learning.rl.sac import td_target


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
