"""PPO (CleanRL `ppo_continuous_action.py` style) for chunk policies: the loss pieces and the Gaussian actor.

For a minibatch of B transitions with K Gaussian decisions each (K = 1 here; DPPO: one per fine-tuned denoising step):

    log_ratio    = log pi(a|s) - log pi_old(a|s)                                      (B, K)
    ratio        = exp(log_ratio)                                                     (B, K)
    A            = advantages, normalised per minibatch, times per-decision weights   (B, K)
    policy_loss  = mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)))          scalar
    actor loss   = policy_loss - ent_coef * entropy
    value_loss   = 0.5 * mean((V - R)^2), or with clipping the max of the clipped and unclipped squared errors
    approx_kl    = mean((ratio - 1) - log ratio)                                      (Schulman's k3 estimator)

The update loop (minibatches, epochs, target-KL stop, critic warm-up, and the IL steps IN-RIL interleaves) is
`inril_robot.learning.inril.learner.InrilLearner`; with m = 0 it is plain PPO.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Normal

from inril_robot.config import PPOConfig
from inril_robot.learning.policies.base import Obs, Policy, sample_normal
from inril_robot.learning.policies.encoders import ObsEncoder, mlp
from inril_robot.learning.policies.gaussian import GaussianPolicy
from inril_robot.learning.rl.actor import Actor, ActorSample, executed_log_prob
from inril_robot.learning.rl.buffer import RolloutBatch

__all__ = ["Critic", "GaussianActor", "PPOConfig", "clipped_surrogate", "value_loss"]


class Critic(nn.Module):
    """V(s): its own `ObsEncoder` (not shared with the actor) -> MLP -> scalar. obs (B, To, ...) -> (B,).

    With `value_range` (lo, hi), the feasible discounted returns, V = lo + (hi - lo) * sigmoid(head): the critic
    cannot promise more than the rewards allow (an unbounded one extrapolated to V = 2.7 on lift states where no
    return exceeds 1, measured)."""

    def __init__(
        self, encoder: ObsEncoder, hidden: Sequence[int] = (256, 256), value_range: tuple[float, float] | None = None
    ) -> None:
        super().__init__()
        if value_range is not None and not value_range[0] < value_range[1]:
            raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")
        self.encoder = encoder
        self.head = mlp(encoder.out_dim, hidden, 1)  # (B, D) -> (B, 1)
        self.value_range = value_range

    @classmethod
    def for_policy(
        cls, policy: Policy, hidden: Sequence[int] = (256, 256), value_range: tuple[float, float] | None = None
    ) -> Critic:
        """A critic reading the same observations as `policy`, through a fresh encoder (same normaliser)."""
        return cls(ObsEncoder(policy.normalizer, policy.obs_shapes, policy.cfg), hidden, value_range)

    def forward(self, obs: Obs) -> Tensor:
        raw = self.head(self.encoder(obs)).squeeze(-1)  # (B, 1) -> (B,)
        if self.value_range is None:
            return raw
        low, high = self.value_range
        return low + (high - low) * torch.sigmoid(raw)


def clipped_surrogate(
    new_log_probs: Tensor,
    batch: RolloutBatch,
    cfg: PPOConfig,
    entropy: Tensor | None = None,
    decision_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The clipped-surrogate actor loss (scalar, with graph) and its detached statistics.

    new_log_probs: (B, K); decision_weights: (K,) multiplies the advantage per decision (DPPO's denoising discount).
    """
    log_ratio = new_log_probs - batch.log_probs  # (B, K)
    ratio = log_ratio.exp()  # (B, K)
    adv = batch.advantages  # (B,)
    if cfg.normalize_advantages and adv.numel() > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)  # (B,)
    adv = adv[:, None].expand_as(ratio)  # (B, K)
    if decision_weights is not None:
        adv = adv * decision_weights  # (B, K)
    surrogate = torch.max(-adv * ratio, -adv * ratio.clamp(1.0 - cfg.clip, 1.0 + cfg.clip))  # (B, K)
    policy_loss = surrogate.mean()
    loss = policy_loss if entropy is None else policy_loss - cfg.ent_coef * entropy
    with torch.no_grad():
        stats = {
            "policy_loss": policy_loss.item(),
            "entropy": float("nan") if entropy is None else entropy.item(),
            "approx_kl": ((ratio - 1.0) - log_ratio).mean().item(),
            "clip_fraction": ((ratio - 1.0).abs() > cfg.clip).float().mean().item(),
        }
    return loss, stats


def value_loss(critic: Critic, batch: RolloutBatch, cfg: PPOConfig) -> Tensor:
    """0.5 * mean squared error to the returns (scalar), optionally clipped around the collection-time values."""
    v = critic(batch.obs)  # (B,)
    unclipped = (v - batch.returns) ** 2  # (B,)
    if cfg.clip_value is None:
        return 0.5 * unclipped.mean()
    v_clipped = batch.values + (v - batch.values).clamp(-cfg.clip_value, cfg.clip_value)  # (B,)
    return 0.5 * torch.max(unclipped, (v_clipped - batch.returns) ** 2).mean()


class GaussianActor(Actor):
    """PPO's actor: the Gaussian chunk policy itself. record = {"action": the unclipped sample (B, H*A)}, K = 1.

    As in CleanRL, the log-probability is that of the unclipped sample; the executed chunk is clipped to [-1, 1]."""

    policy: GaussianPolicy

    def __init__(self, policy: GaussianPolicy) -> None:
        if not isinstance(policy, GaussianPolicy):
            raise TypeError(f"PPO fine-tunes a Gaussian policy, got {type(policy).__name__} (diffusion: use dppo)")
        super().__init__(policy)

    @torch.no_grad()
    def sample(self, obs: Obs, generator: torch.Generator | None = None) -> ActorSample:
        dist = self.policy.distribution(obs)  # batch shape (B, H*A)
        a = sample_normal(dist, generator)  # (B, H*A)
        chunk = a.clamp(-1.0, 1.0).reshape(-1, self.policy.cfg.horizon, self.policy.action_dim)  # (B, H, A)
        return ActorSample(chunk, {"action": a}, self._executed(dist.log_prob(a)))  # log_prob (B, 1)

    def evaluate(self, obs: Obs, record: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        dist = self.policy.distribution(obs)
        return self._executed(dist.log_prob(record["action"])), self._executed(dist.entropy()).mean()  # (B, 1)

    def _executed(self, per_element: Tensor) -> Tensor:
        c = self.policy.cfg
        return executed_log_prob(per_element, c.horizon, c.act_steps)  # (B, 1)

    def il_loss(self, obs: Obs, actions: Tensor) -> Tensor:
        """NLL of the demonstrated chunks (raw (B, H, A)) with the std held fixed: the IL step pulls the mean towards
        the demonstrations and leaves the exploration noise to RL. (The pre-training NLL also fits the std to the
        demonstrations' spread; interleaved, that would keep re-inflating the noise RL is shrinking.)"""
        dist = self.policy.distribution(obs)
        target = self.policy.normalizer.normalize_action(actions).reshape(dist.mean.shape)  # (B, H*A)
        return -Normal(dist.mean, dist.stddev.detach()).log_prob(target).sum(-1).mean()
