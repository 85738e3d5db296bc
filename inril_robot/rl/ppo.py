"""PPO for a Gaussian chunk policy (CleanRL `ppo_continuous_action.py` style), with the actor step separable.

    ratio        = exp(log pi(a|s) - log pi_old(a|s))                                   (B,)
    policy_loss  = mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)))             scalar
    actor loss   = policy_loss - ent_coef * entropy
    value_loss   = 0.5 * mean((V - R)^2), or with clipping the max of the clipped and unclipped squared errors
    approx_kl    = mean((ratio - 1) - log ratio)                                         (Schulman's k3 estimator)

Actor and critic have separate optimisers (ResiP: actor 3e-4, critic 5e-3). `actor_loss` is exposed on its own so the
IN-RIL engine can take the RL gradient, project it against the IL gradient (PCGrad) and step the actor itself;
`ppo_update` is the plain PPO loop built on it. During critic warm-up (the first `critic_warmup_updates` updates,
decided by the caller) pass `actor_frozen=True`: only the critic is trained and the actor is untouched.

Train/eval mode is the caller's business: log-probabilities are recomputed under the module's current mode, so a
policy with stochastic layers (image random-shift augmentation) should be in the mode it collected in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from inril_robot.policies.base import Obs
from inril_robot.policies.encoders import ObsEncoder, mlp
from inril_robot.policies.gaussian import GaussianPolicy
from inril_robot.rl.buffer import RolloutBatch, RolloutBuffer


@dataclass
class PPOConfig:
    gamma: float = 0.999
    gae_lambda: float = 0.95
    clip: float = 0.2  # ratio clipping epsilon
    clip_value: float | None = None  # value clipping around the collection-time value; None disables
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    epochs: int = 10
    minibatch_size: int = 256
    target_kl: float | None = 0.1  # stop the update once a minibatch's approx KL exceeds it; None disables
    max_grad_norm: float = 1.0
    normalize_advantages: bool = True  # per minibatch, as in CleanRL
    actor_lr: float = 3e-4
    critic_lr: float = 5e-3
    critic_warmup_updates: int = 0  # updates at the start with the actor frozen (the caller passes actor_frozen)
    bootstrap_on_truncation: bool = True

    def __post_init__(self) -> None:
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.gae_lambda <= 1.0):
            raise ValueError("gamma and gae_lambda must lie in [0, 1]")
        if self.clip <= 0 or (self.clip_value is not None and self.clip_value <= 0):
            raise ValueError("clip and clip_value must be positive")
        if self.epochs < 1 or self.minibatch_size < 1 or self.critic_warmup_updates < 0:
            raise ValueError("epochs and minibatch_size must be >= 1, critic_warmup_updates >= 0")
        if self.max_grad_norm <= 0 or (self.target_kl is not None and self.target_kl <= 0):
            raise ValueError("max_grad_norm and target_kl must be positive")


class Critic(nn.Module):
    """V(s): its own `ObsEncoder` (not shared with the actor) -> MLP -> scalar. obs (B, To, ...) -> (B,)."""

    def __init__(self, encoder: ObsEncoder, hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = mlp(encoder.out_dim, hidden, 1)  # (B, D) -> (B, 1)

    @classmethod
    def for_policy(cls, policy: GaussianPolicy, hidden: Sequence[int] = (256, 256)) -> Critic:
        """A critic reading the same observations as `policy`, through a fresh encoder (same normaliser)."""
        return cls(ObsEncoder(policy.normalizer, policy.obs_shapes, policy.cfg), hidden)

    def forward(self, obs: Obs) -> Tensor:
        return self.head(self.encoder(obs)).squeeze(-1)  # (B, 1) -> (B,)


def actor_loss(policy: GaussianPolicy, batch: RolloutBatch, cfg: PPOConfig) -> tuple[Tensor, dict[str, float]]:
    """The clipped-surrogate actor loss (scalar, with graph) and its detached statistics."""
    dist = policy.distribution(batch.obs)  # Normal, batch shape (B, H*A)
    new_log_probs = dist.log_prob(batch.actions).sum(-1)  # (B,)
    entropy = dist.entropy().sum(-1).mean()  # scalar
    log_ratio = new_log_probs - batch.log_probs  # (B,)
    ratio = log_ratio.exp()  # (B,)
    adv = batch.advantages  # (B,)
    if cfg.normalize_advantages and adv.numel() > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)  # (B,)
    surrogate = torch.max(-adv * ratio, -adv * ratio.clamp(1.0 - cfg.clip, 1.0 + cfg.clip))  # (B,)
    policy_loss = surrogate.mean()
    loss = policy_loss - cfg.ent_coef * entropy
    with torch.no_grad():
        stats = {
            "policy_loss": policy_loss.item(),
            "entropy": entropy.item(),
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


def ppo_update(policy: GaussianPolicy, critic: Critic, actor_opt: torch.optim.Optimizer,
               critic_opt: torch.optim.Optimizer, buffer: RolloutBuffer, cfg: PPOConfig,
               generator: torch.Generator | None = None, actor_frozen: bool = False) -> dict[str, float]:
    """Up to `cfg.epochs` passes of minibatch updates over a buffer whose returns are computed; mean statistics.

    Target-KL early stop: after each minibatch, if its approx KL exceeds `cfg.target_kl`, the whole update stops
    (the KL is measured before that minibatch's step, so the policy moved past the target by at most one step).
    """
    totals = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "approx_kl": 0.0, "clip_fraction": 0.0}
    updates, epochs_run, stop = 0, 0, False
    for _ in range(cfg.epochs):
        epochs_run += 1
        for idx in buffer.minibatches(cfg.minibatch_size, generator):  # idx (B,)
            batch = buffer.batch(idx)
            with torch.set_grad_enabled(not actor_frozen):  # frozen: statistics only, no graph
                loss, stats = actor_loss(policy, batch, cfg)
            if not actor_frozen:
                actor_opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
                actor_opt.step()

            v_loss = value_loss(critic, batch, cfg)
            critic_opt.zero_grad()
            (cfg.vf_coef * v_loss).backward()
            nn.utils.clip_grad_norm_(critic.parameters(), cfg.max_grad_norm)
            critic_opt.step()

            for key, value in stats.items():
                totals[key] += value
            totals["value_loss"] += v_loss.item()
            updates += 1
            if not actor_frozen and cfg.target_kl is not None and stats["approx_kl"] > cfg.target_kl:
                stop = True
                break
        if stop:
            break
    out = {k: v / max(updates, 1) for k, v in totals.items()}
    out.update(epochs_run=float(epochs_run), updates_run=float(updates), early_stopped=float(stop))
    return out
