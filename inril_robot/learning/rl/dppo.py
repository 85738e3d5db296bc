"""DPPO (Ren et al. 2024): PPO over the denoising chain of a diffusion policy.

The last K' DDIM steps of the sampler are treated as K' Gaussian decisions of a two-level MDP: each fine-tuned step
draws x_{t_prev} ~ N(mean_θ(x_t, t, s), std²), with std = max(DDIM's eta-std, `min_sampling_std`) (the exploration
floor: plain DDIM at the last step has std 0). The earlier S - K' steps run a frozen copy of the pre-trained networks
(`DiffusionPolicy.frozen`, deterministic DDIM), so RL reshapes only the fine end of the chain.

    record["chain"]  = [x_{t_{S-K'}}, ..., x_{t_S} = x_0]                 (B, K'+1, H, A)
    log_prob[:, k]   = log N(chain[k+1]; mean_θ(chain[k], t_k), std_k²)   (B, K'), summed over the executed
                       steps (the first act_steps of H, as DPPO) and A
    advantage weight = denoising_gamma^(K'-1-k)                            earlier steps count less (DPPO)

Log-probabilities (at sampling and when re-evaluating alike, so the first ratio is exactly 1) floor the std at
`min_logprob_std` (DPPO's trick for stable ratios at tiny stds). The
executed chunk is x_0 clipped to [-1, 1]. The IL loss is the fine-tuned network's own denoising loss.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Normal

from inril_robot.config import DPPOConfig
from inril_robot.learning.policies.base import Obs
from inril_robot.learning.policies.diffusion import DiffusionPolicy
from inril_robot.learning.rl.actor import Actor, ActorSample


def with_frozen_copy(policy: DiffusionPolicy, ft_steps: int | None) -> DiffusionPolicy:
    """The pre-trained `policy` rebuilt so that only its last `ft_steps` DDIM steps are fine-tuned (None: all):
    the same weights, plus a frozen copy of them for the earlier steps."""
    steps = policy.cfg.diffusion.ddim_steps
    if ft_steps is None or ft_steps >= steps:
        return policy
    cfg = policy.cfg.model_copy(
        update={"diffusion": policy.cfg.diffusion.model_copy(update={"finetuned_steps": ft_steps})}
    )
    rebuilt = DiffusionPolicy(cfg, policy.normalizer, policy.obs_shapes, policy.action_dim)
    rebuilt.load_state_dict(policy.state_dict(), strict=False)  # the frozen copy is filled next
    rebuilt.freeze_copy()
    return rebuilt.to(next(policy.parameters()).device)


class DPPOActor(Actor):
    policy: DiffusionPolicy

    def __init__(self, policy: DiffusionPolicy, cfg: DPPOConfig) -> None:
        if not isinstance(policy, DiffusionPolicy):
            raise TypeError(f"DPPO fine-tunes a diffusion policy, got {type(policy).__name__} (Gaussian: use ppo)")
        super().__init__(policy)
        self.cfg = cfg
        self.steps = policy.cfg.diffusion.ddim_steps  # S
        self.n_frozen = policy.frozen_steps(self.steps)  # S - K'
        self.ft_steps = self.steps - self.n_frozen  # K'
        ts = policy.ddim_timesteps(self.steps)
        pairs = list(zip(ts, [*ts[1:], -1], strict=True))[self.n_frozen :]
        self.register_buffer("t", torch.tensor([p[0] for p in pairs]), persistent=False)  # (K',)
        self.register_buffer("t_prev", torch.tensor([p[1] for p in pairs]), persistent=False)  # (K',)
        k = torch.arange(self.ft_steps, dtype=torch.float32)
        self.register_buffer(
            "decision_weights", cfg.denoising_gamma ** (self.ft_steps - 1 - k), persistent=False
        )  # (K',)

    @torch.no_grad()
    def sample(self, obs: Obs, generator: torch.Generator | None = None) -> ActorSample:
        chain = self.policy.ddim_chain(obs, self.steps, self.cfg.eta, generator, self.cfg.min_sampling_std)
        fine = torch.stack(chain[self.n_frozen :], dim=1)  # (B, K'+1, H, A)
        log_prob = self._log_prob(obs, fine)  # (B, K')
        return ActorSample(fine[:, -1].clamp(-1.0, 1.0), {"chain": fine}, log_prob)

    def evaluate(self, obs: Obs, record: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        return self._log_prob(obs, record["chain"]), None

    def _log_prob(self, obs: Obs, chain: Tensor) -> Tensor:
        """log N(chain[:, k+1]; step k's mean, std) summed over (H, A): (B, K'). All K' steps in one network call."""
        b, k = chain.shape[0], self.ft_steps
        features = self.policy.encoder(obs)  # (B, D)
        x_t = chain[:, :-1].reshape(b * k, *chain.shape[2:])  # (B*K', H, A)
        mean, std = self.policy.denoise_step(
            x_t,
            self.t.repeat(b),
            self.t_prev.repeat(b),
            features.repeat_interleave(k, dim=0),
            self.cfg.eta,
            max(self.cfg.min_logprob_std, self.cfg.min_sampling_std),
        )  # (B*K', H, A) each
        x_prev = chain[:, 1:].reshape(b * k, *chain.shape[2:])  # (B*K', H, A)
        per_element = Normal(mean, std).log_prob(x_prev)[:, : self.policy.cfg.act_steps]  # (B*K', act_steps, A)
        return per_element.sum(dim=(-2, -1)).reshape(b, k)  # (B, K')
