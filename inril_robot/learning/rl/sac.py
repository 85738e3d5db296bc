"""SAC in the RLPD recipe (Ball et al. 2023), for a BC-pre-trained Gaussian chunk policy: the pieces, read top down.

Actor: the pre-trained `GaussianPolicy` itself, made a tanh-Gaussian in normalised action space by reading its mean m(s)
as the squashed mean:

    m      = policy mean(s)                                   (B, H*A)   the BC network, unchanged
    u_mean = atanh(clamp(m, -L, L))                           (B, H*A)   clamp straight-through (gradient of identity)
    u      = u_mean + sigma * eps,  sigma = exp(policy.log_std)
    a      = tanh(u)                                          (B, H*A)   in (-1, 1)
    log pi = sum over the executed steps of log N(u; u_mean, sigma)          the pre-squash Gaussian's density

so the deterministic action tanh(u_mean) = clamp(m, -L, L) is the BC policy's own (`predict` clamps m to [-1, 1]):
fine-tuning starts exactly where BC ended, and the checkpoint stays a plain `GaussianPolicy` that `eval`, the bridge
and the robot run unchanged.

Entropy is that of the pre-squash Gaussian (the density of u, without the tanh log-determinant -log(1 - a^2)). BC
drives many actions to the bounds (the gripper, full-speed moves): there the log-determinant's gradient on the mean is
2a / (1 - m^2) ~ 1000 at the clamp, and with any temperature it pulled every saturated action towards 0; our first
lift runs went from ~50% to 0% training success within a few hundred actor steps. Without it the mean is moved by Q
only and the temperature acts on the noise scale alone (the Gaussian's entropy depends on sigma only).

Critic: an ensemble of E Q-networks with LayerNorm after every hidden layer (RLPD), vectorised (one batched matmul per
layer); the target is the min over a random subset of `critic_subsample` target members:

    y = r + gamma * (1 - terminal) * min_{j in subset} Q_targ_j(s', a'),  a' ~ pi(.|s')   (- alpha log pi if backup)

A time-limit truncation is NOT terminal (bootstrapped); a success or a safety stop is. y is clamped into the feasible
return range. Temperature: log alpha is trained so that E[-log pi] stays at the target entropy.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Normal

from inril_robot.learning.policies.base import Obs
from inril_robot.learning.policies.critics import QEnsemble, executed
from inril_robot.learning.policies.gaussian import GaussianPolicy
from inril_robot.learning.policies.residual import ResidualPolicy
from inril_robot.learning.rl.replay import Batch

SQUASH_LIMIT = 0.999  # |clamp(m)| bound: atanh(0.999) = 3.8, the deterministic action differs from BC's by <= 0.001


# ------------------------------------------------------------------------------------------------ critic ensemble
# QEnsemble and `executed` live with the policies: an IDQL checkpoint's policy acts with its critics
def subset_min(q: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """min over k random members of the ensemble (RLPD / REDQ): (E, B) -> (B,)."""
    on = generator.device if generator is not None else q.device  # a generator draws on its own device
    members = torch.randperm(q.shape[0], generator=generator, device=on)[:k].to(q.device)  # (k,)
    return q[members].min(dim=0).values  # (B,)


def td_target(
    reward: Tensor,
    terminal: Tensor,
    next_value: Tensor,
    gamma: float,
    value_range: tuple[float, float] | None = None,
) -> Tensor:
    """y = r + gamma * (1 - terminal) * V(s'), (B,) each. A truncated (time-limit) transition is not terminal, so it
    bootstraps; y is clamped into the feasible returns when `value_range` is given."""
    y = reward + gamma * (1.0 - terminal) * next_value  # (B,)
    return y if value_range is None else y.clamp(*value_range)


# ------------------------------------------------------------------------------------------------ actor
class TanhGaussianActor(nn.Module):
    """The SAC actor around a `GaussianPolicy` with a per-dimension learned log-std (see the module docstring)."""

    def __init__(self, policy: GaussianPolicy, log_std_bounds: tuple[float, float]) -> None:
        super().__init__()
        if not isinstance(policy, GaussianPolicy) or policy.log_std_head is not None:
            raise TypeError("SAC fine-tunes a Gaussian policy with a learned per-dimension log-std")
        self.policy = policy
        self.log_std_bounds = log_std_bounds

    def _pre_tanh(self, obs: Obs) -> Normal:
        h = self.policy.trunk(self.policy.encoder(obs))  # (B, width)
        m = self.policy.mean_head(h)  # (B, H*A)
        m = m + (m.clamp(-SQUASH_LIMIT, SQUASH_LIMIT) - m).detach()  # clamped value, identity gradient
        std = self.policy.log_std.clamp(*self.log_std_bounds).exp().expand_as(m)  # (B, H*A)
        return Normal(torch.atanh(m), std)

    def sample(self, obs: Obs, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """A reparameterised sample (B, H, A) in (-1, 1) and its log-probability over the executed steps (B,)."""
        dist = self._pre_tanh(obs)
        noise = torch.randn(dist.mean.shape, generator=generator, device=dist.mean.device)  # (B, H*A)
        u = dist.mean + dist.stddev * noise  # (B, H*A)
        a = torch.tanh(u)  # (B, H*A)
        log_prob = executed(self.policy, dist.log_prob(u)).sum(-1)  # pre-squash density (B,)
        return a.reshape(-1, self.policy.cfg.horizon, self.policy.action_dim), log_prob

    def deterministic(self, obs: Obs) -> Tensor:
        return torch.tanh(self._pre_tanh(obs).mean).reshape(-1, self.policy.cfg.horizon, self.policy.action_dim)

    def clamp_log_std(self) -> None:
        with torch.no_grad():
            self.policy.log_std.clamp_(*self.log_std_bounds)

    def il_loss(self, obs: Obs, actions: Tensor) -> Tensor:
        """The IN-RIL imitation step: NLL of the demonstrated raw chunks (B, H, A) under the policy's Gaussian with
        the std held fixed (the mean is pulled to the demonstrations; exploration noise is left to RL)."""
        dist = self.policy.distribution(obs)  # (B, H*A)
        target = self.policy.normalizer.normalize_action(actions).reshape(dist.mean.shape)  # (B, H*A)
        return -Normal(dist.mean, dist.stddev.detach()).log_prob(target).sum(-1).mean()


class ResidualSACActor(nn.Module):
    """The SAC actor as a bounded residual on a base policy (ResiP's separation, trained off-policy as in ResFiT):

        a_base = base.predict_normalized(obs)                     (B, H, A)  the base's deterministic chunk, detached
        u      ~ N(head([features, a_base]), sigma)               (B, H*A)   the residual's own network and log-std
        a      = clamp(a_base + scale * tanh(u), -1, 1)           (B, H, A)  `ResidualPolicy.combine` with squash
        log pi = sum over the executed steps of log N(u; mean, sigma) - log(1 - tanh(u)^2)   the squashed
                 residual's density (`offpolicy.residual_squashed_entropy`, true by default); without the second
                 term, the pre-squash Gaussian's as `TanhGaussianActor`

    At the start the head's mean is 0, so the deterministic action is the base's exactly; however far the critic's
    action gradient pulls, the executed action stays within +-scale of the base's (the bound is the anchor: no BC
    term). RL gradients reach only the residual; the IL loss is the base's (IN-RIL's network separation)."""

    def __init__(self, policy: ResidualPolicy, squashed_entropy: bool = False) -> None:
        """`squashed_entropy`: log pi includes the tanh's log-determinant -log(1 - tanh(u)^2), so the entropy bonus
        keeps the residual off its bound (SAC's usual density); else the pre-squash Gaussian's, as `sac`."""
        super().__init__()
        if not policy.squash:
            raise ValueError("residual SAC needs a squashed residual (ResidualPolicy(..., squash=True))")
        self.policy = policy
        self.squashed_entropy = squashed_entropy
        self.log_std_bounds = (policy.min_log_std, policy.max_log_std)

    def sample(self, obs: Obs, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """A reparameterised sample (B, H, A) in [-1, 1] and its log-probability over the executed steps (B,)."""
        base = self.policy.base_action(obs)  # (B, H, A)
        dist = self.policy.distribution(obs, base)  # over u, (B, H*A)
        noise = torch.randn(dist.mean.shape, generator=generator, device=dist.mean.device)  # (B, H*A)
        u = dist.mean + dist.stddev * noise  # (B, H*A)
        log_density = dist.log_prob(u)  # (B, H*A)
        if self.squashed_entropy:  # the density of tanh(u): 2 (log 2 - u - softplus(-2u)) = log(1 - tanh(u)^2)
            log_density = log_density - 2.0 * (math.log(2.0) - u - nn.functional.softplus(-2.0 * u))
        log_prob = executed(self.policy, log_density).sum(-1)  # (B,)
        return self.policy.combine(base, u), log_prob

    def deterministic(self, obs: Obs) -> Tensor:
        return self.policy.predict_normalized(obs, deterministic=True)

    def clamp_log_std(self) -> None:
        with torch.no_grad():
            self.policy.log_std.clamp_(*self.log_std_bounds)

    def il_loss(self, obs: Obs, actions: Tensor) -> Tensor:
        """The base's imitation loss: IL steps train the base (never the residual)."""
        return self.policy.loss(obs, actions)


Actor = TanhGaussianActor | ResidualSACActor


# ------------------------------------------------------------------------------------------------ losses
def critic_loss(
    critic: QEnsemble,
    target: QEnsemble,
    actor: Actor,
    batch: Batch,
    gamma: float,
    subsample: int,
    alpha: Tensor,
    backup_entropy: bool,
    value_range: tuple[float, float] | None,
    generator: torch.Generator | None = None,
    bootstrap_time_limit: bool = True,
) -> tuple[Tensor, dict[str, float]]:
    """Mean over members of 0.5 (Q_e(s, a) - y)^2 (scalar, with graph) and its statistics."""
    with torch.no_grad():
        next_a, next_logp = actor.sample(batch.next_obs, generator)  # (B, H, A), (B,)
        next_q = subset_min(target(batch.next_obs, executed(actor.policy, next_a)), subsample, generator)  # (B,)
        if backup_entropy:
            next_q = next_q - alpha * next_logp  # (B,)
        y = td_target(batch.reward, batch.ends(bootstrap_time_limit), next_q, gamma, value_range)  # (B,)
    q = critic(batch.obs, executed(actor.policy, batch.action))  # (E, B)
    loss = 0.5 * ((q - y) ** 2).mean()
    return loss, {"critic_loss": loss.item(), "q_mean": q.mean().item(), "target_mean": y.mean().item()}


def actor_loss(
    critic: QEnsemble, actor: Actor, batch: Batch, alpha: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, dict[str, float]]:
    """mean(alpha log pi(a|s) - mean_e Q_e(s, a)), a ~ pi reparameterised (RLPD averages the ensemble for the actor);
    returns (loss, log_prob (B,) detached, stats)."""
    a, log_prob = actor.sample(batch.obs, generator)  # (B, H, A), (B,)
    q = critic(batch.obs, executed(actor.policy, a)).mean(dim=0)  # (E, B) -> (B,)
    loss = (alpha.detach() * log_prob - q).mean()
    return loss, log_prob.detach(), {"actor_loss": loss.item(), "entropy": -log_prob.mean().item()}


def temperature_loss(log_alpha: Tensor, log_prob: Tensor, target_entropy: float) -> Tensor:
    """alpha rises when the entropy -log pi falls below the target, and falls when above."""
    return -(log_alpha.exp() * (log_prob + target_entropy).detach()).mean()


def default_target_entropy(log_std: float, dims: int) -> float:
    """The entropy of a diagonal Gaussian of std exp(log_std) in `dims` dimensions."""
    return dims * (0.5 * math.log(2 * math.pi * math.e) + log_std)


@torch.no_grad()
def polyak(target: nn.Module, source: nn.Module, tau: float) -> None:
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.lerp_(s, tau)
