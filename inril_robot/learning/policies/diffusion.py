"""Diffusion policy over a normalised action chunk (B, H, A): DDPM training with epsilon prediction, DDIM sampling.

Notation: x_0 is the clean normalised chunk in [-1, 1], K = `diffusion.train_steps`, ᾱ_t = prod_{s<=t} (1 - β_s)
with the cosine ("squaredcos_cap_v2") schedule, and x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε with ε ~ N(0, I).

- Training: t ~ U{0..K-1}, loss = MSE(ε_θ(x_t, t, features), ε).
- Sampling: DDIM over `ddim_steps` timesteps spread evenly over 0..K-1 ("trailing" spacing: the first step is always
  t = K-1, the noisiest level the network was trained on; K = 20 and 5 steps give 19, 15, 11, 7, 3). Every step clips
  the predicted x_0 to [-1, 1] and re-derives ε from the clipped x_0 (as diffusers and DPPO do). Stochasticity is
  DDIM's eta: 0 is deterministic given the initial noise, 1 has DDPM's posterior variance.
- `predict(deterministic=True)` (acting: eval, deployment) runs DDIM with eta = `diffusion.eta`, 0 by default; with
  eta 0 the initial noise x_{K-1} ~ N(0, I) is still drawn (from
  `generator` when given): "deterministic" means no noise is injected while denoising, so the action is a fixed
  function of (observation, initial noise). Pass a freshly seeded generator for a reproducible action.
  `deterministic=False` (exploring) uses eta = 1. `diffusion.eta` = 1 makes acting sample like exploring (on lift:
  89/100 held-out with eta 1 vs 26/100 with eta 0 for the same BC checkpoint, docs/inril.md).
- DPPO treats the last K' denoising steps as an MDP whose actions are the x_{t_prev}: `denoise_step` returns the
  Gaussian (mean, std) of one step, with an exploration floor `min_sampling_std` on the std, and `ddim_chain` returns
  every intermediate x_t so their log-probabilities can be recomputed later.

Denoisers ε_θ(x_t (B, H, A), t (B,), features (B, D)) -> (B, H, A):
- `MLPDenoiser`: [flattened x_t, time embedding, features] -> pre-norm residual MLP blocks (DPPO's default);
- `UNet1DDenoiser`: 1-D temporal U-Net over the H axis with FiLM conditioning on [time embedding, features]
  (Diffusion Policy's ConditionalUnet1D, with every level's skip connection used).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inril_robot.config import DiffusionConfig, PolicyConfig
from inril_robot.learning.policies.base import Obs, Policy
from inril_robot.learning.policies.encoders import ObsEncoder, num_groups
from inril_robot.learning.policies.normalizer import Normalizer


# ------------------------------------------------------------------------------------------------ schedule and DDIM
def cosine_alphas_cumprod(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """ᾱ_t for t = 0..K-1 (K,) of the cosine schedule (Nichol & Dhariwal 2021; diffusers' "squaredcos_cap_v2"):
    f(u) = cos((u + s) / (1 + s) * pi / 2)^2, β_t = min(1 - f((t+1)/K) / f(t/K), max_beta), ᾱ_t = prod (1 - β)."""
    u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps  # (K+1,)
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # (K+1,)
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)  # (K,)
    return torch.cumprod(1 - betas, dim=0).float()  # (K,)


def ddim_step(
    x_t: Tensor, eps: Tensor, abar_t: Tensor, abar_prev: Tensor, eta: float, min_std: float = 0.0
) -> tuple[Tensor, Tensor]:
    """One DDIM step t -> t_prev (Song et al. 2021, eq. 12), as a Gaussian: returns (mean, std) of x_{t_prev}.

    x_t, eps: (B, H, A); abar_t, abar_prev: (B, 1, 1) with abar_prev = 1 when t_prev is "before 0" (the clean end).
        x̂_0   = (x_t - sqrt(1 - ᾱ_t) ε) / sqrt(ᾱ_t), clipped to [-1, 1]      the predicted clean chunk
        ε̂     = (x_t - sqrt(ᾱ_t) x̂_0) / sqrt(1 - ᾱ_t)                         ε consistent with the clipped x̂_0
        σ      = eta * sqrt((1 - ᾱ_prev) / (1 - ᾱ_t)) * sqrt(1 - ᾱ_t / ᾱ_prev)
        mean   = sqrt(ᾱ_prev) x̂_0 + sqrt(1 - ᾱ_prev - σ²) ε̂
        std    = max(σ, min_std)                                              the exploration floor of DPPO
    eta = 0 and min_std = 0 give the deterministic DDIM update (std 0); eta = 1 gives DDPM's posterior std.
    """
    x0 = ((x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()).clamp(-1.0, 1.0)  # (B, H, A)
    eps = (x_t - abar_t.sqrt() * x0) / (1 - abar_t).sqrt()  # (B, H, A)
    sigma = eta * ((1 - abar_prev) / (1 - abar_t)).sqrt() * (1 - abar_t / abar_prev).sqrt()  # (B, 1, 1)
    mean = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).clamp_min(0.0).sqrt() * eps  # (B, H, A)
    std = sigma.clamp_min(min_std).expand_as(mean)  # (B, H, A)
    return mean, std


# ------------------------------------------------------------------------------------------------------- denoisers
class TimeEmbedding(nn.Module):
    """Integer timesteps (B,) -> (B, dim): sinusoidal features (Vaswani et al.) then a small MLP."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.half = max(dim // 2, 1)
        self.mlp = nn.Sequential(nn.Linear(2 * self.half, 2 * dim), nn.Mish(), nn.Linear(2 * dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(self.half, device=t.device) / max(self.half - 1, 1))
        args = t.float()[:, None] * freqs[None, :]  # (B, half)
        return self.mlp(torch.cat([args.sin(), args.cos()], dim=-1))  # (B, 2*half) -> (B, dim)


class ResidualMLPBlock(nn.Module):
    """x + Linear(Mish(Linear(LayerNorm(x)))), width-preserving."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.Mish(), nn.Linear(width, width))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)  # (B, width)


class MLPDenoiser(nn.Module):
    """ε_θ as an MLP: width `hidden[0]`, one residual block (two linear layers) per entry of `hidden`."""

    def __init__(
        self, action_dim: int, horizon: int, obs_dim: int, hidden: tuple[int, ...], cfg: DiffusionConfig
    ) -> None:
        super().__init__()
        width = hidden[0] if hidden else 256
        self.time = TimeEmbedding(cfg.time_embed_dim)
        self.inp = nn.Linear(horizon * action_dim + cfg.time_embed_dim + obs_dim, width)
        self.blocks = nn.Sequential(*[ResidualMLPBlock(width) for _ in range(max(len(hidden), 1))])
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Mish(), nn.Linear(width, horizon * action_dim))

    def forward(self, x: Tensor, t: Tensor, features: Tensor) -> Tensor:
        b, h, a = x.shape
        z = torch.cat([x.reshape(b, h * a), self.time(t), features], dim=-1)  # (B, H*A + E + D)
        z = self.blocks(self.inp(z))  # (B, width)
        return self.out(z).reshape(b, h, a)  # (B, H, A)


class Conv1dBlock(nn.Sequential):
    """(B, C_in, L) -> (B, C_out, L): Conv1d (same padding) -> GroupNorm -> Mish."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int) -> None:
        super().__init__(
            nn.Conv1d(in_ch, out_ch, kernel, padding=kernel // 2), nn.GroupNorm(num_groups(out_ch), out_ch), nn.Mish()
        )


class FiLMResBlock(nn.Module):
    """Two conv blocks; between them the condition sets a per-channel scale and shift (FiLM); 1x1-conv skip."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, kernel: int) -> None:
        super().__init__()
        self.block1 = Conv1dBlock(in_ch, out_ch, kernel)
        self.block2 = Conv1dBlock(out_ch, out_ch, kernel)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * out_ch))
        self.skip = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.block1(x)  # (B, C_out, L)
        scale, shift = self.film(cond).unsqueeze(-1).chunk(2, dim=1)  # (B, C_out, 1) each
        h = self.block2((1 + scale) * h + shift)  # (B, C_out, L)
        return h + self.skip(x)  # (B, C_out, L)


class UNet1DDenoiser(nn.Module):
    """ε_θ as a 1-D U-Net over the chunk's time axis; channels c_0..c_{L-1} = `unet_channels`.

    Level i runs two FiLM res-blocks at c_i channels on length Hp / 2^i; levels 0..L-2 keep a skip and halve the
    length (stride-2 conv); the way up doubles it (transposed conv), concatenates the skip and runs two res-blocks.
    H is zero-padded at the end up to Hp, a multiple of 2^(L-1) (the number of halvings), and cropped back after.
    """

    def __init__(self, action_dim: int, obs_dim: int, cfg: DiffusionConfig, kernel: int = 5) -> None:
        super().__init__()
        chans = cfg.unet_channels
        cond_dim = cfg.time_embed_dim + obs_dim
        self.time = TimeEmbedding(cfg.time_embed_dim)
        self.multiple = 2 ** (len(chans) - 1)
        self.down = nn.ModuleList()
        in_ch = action_dim
        for c in chans:
            self.down.append(
                nn.ModuleList([FiLMResBlock(in_ch, c, cond_dim, kernel), FiLMResBlock(c, c, cond_dim, kernel)])
            )
            in_ch = c
        self.downsample = nn.ModuleList([nn.Conv1d(c, c, 3, stride=2, padding=1) for c in chans[:-1]])
        self.mid = nn.ModuleList([FiLMResBlock(chans[-1], chans[-1], cond_dim, kernel) for _ in range(2)])
        self.up = nn.ModuleList()
        for i in reversed(range(len(chans) - 1)):
            self.up.append(
                nn.ModuleList(
                    [
                        nn.ConvTranspose1d(chans[i + 1], chans[i + 1], 4, stride=2, padding=1),  # length L -> 2L
                        FiLMResBlock(chans[i + 1] + chans[i], chans[i], cond_dim, kernel),
                        FiLMResBlock(chans[i], chans[i], cond_dim, kernel),
                    ]
                )
            )
        self.final = nn.Sequential(Conv1dBlock(chans[0], chans[0], kernel), nn.Conv1d(chans[0], action_dim, 1))

    def forward(self, x: Tensor, t: Tensor, features: Tensor) -> Tensor:
        h = x.shape[1]
        cond = torch.cat([self.time(t), features], dim=-1)  # (B, E + D)
        padded = -(-h // self.multiple) * self.multiple  # Hp: H rounded up to a multiple of 2^(L-1)
        z = F.pad(x.transpose(1, 2), (0, padded - h))  # (B, A, Hp)
        skips: list[Tensor] = []
        for i, (res1, res2) in enumerate(self.down):
            z = res2(res1(z, cond), cond)  # (B, c_i, Hp / 2^i)
            if i < len(self.downsample):
                skips.append(z)
                z = self.downsample[i](z)  # (B, c_i, Hp / 2^(i+1))
        for res in self.mid:
            z = res(z, cond)  # (B, c_{L-1}, Hp / 2^(L-1))
        for upsample, res1, res2 in self.up:
            z = torch.cat([upsample(z), skips.pop()], dim=1)  # (B, c_{i+1} + c_i, Hp / 2^i)
            z = res2(res1(z, cond), cond)  # (B, c_i, Hp / 2^i)
        return self.final(z)[:, :, :h].transpose(1, 2)  # (B, A, Hp) -> (B, H, A)


# -------------------------------------------------------------------------------------------------------- policy
class DiffusionPolicy(Policy):
    def __init__(
        self, cfg: PolicyConfig, normalizer: Normalizer, obs_shapes: dict[str, tuple[int, ...]], action_dim: int
    ) -> None:
        super().__init__(cfg, normalizer, obs_shapes, action_dim)
        d = cfg.diffusion
        if d.ddim_steps > d.train_steps:
            raise ValueError(f"diffusion.ddim_steps={d.ddim_steps} must be <= diffusion.train_steps={d.train_steps}")
        self.horizon = cfg.horizon
        self.num_train_steps = d.train_steps  # K
        self.encoder = ObsEncoder(normalizer, obs_shapes, cfg)
        self.denoiser = self._make_denoiser()
        # DPPO: the first ddim_steps - finetuned_steps DDIM steps run a frozen copy of the pre-trained networks
        # (`freeze_copy`), so RL changes only the last, fine denoising steps. Saved with the weights.
        self.frozen: nn.ModuleDict | None = None
        if d.finetuned_steps is not None and d.finetuned_steps < d.ddim_steps:
            self.frozen = nn.ModuleDict(
                {"encoder": ObsEncoder(normalizer, obs_shapes, cfg), "denoiser": self._make_denoiser()}
            )
            self.frozen.requires_grad_(False)
        # A pure function of the config (which the checkpoint carries): not saved in the state dict.
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(d.train_steps), persistent=False)  # (K,)

    def _make_denoiser(self) -> nn.Module:
        d, obs_dim = self.cfg.diffusion, self.encoder.out_dim
        if d.denoiser == "mlp":
            return MLPDenoiser(self.action_dim, self.horizon, obs_dim, self.cfg.hidden, d)
        return UNet1DDenoiser(self.action_dim, obs_dim, d)

    def freeze_copy(self) -> None:
        """Make the frozen early-step networks a copy of the current ones (call once, on the pre-trained weights)."""
        if self.frozen is None:
            raise ValueError(
                "this diffusion policy has no frozen copy (diffusion.finetuned_steps is None or covers every DDIM step)"
            )
        self.frozen["encoder"].load_state_dict(self.encoder.state_dict())
        self.frozen["denoiser"].load_state_dict(self.denoiser.state_dict())

    def train(self, mode: bool = True) -> DiffusionPolicy:
        super().train(mode)
        if self.frozen is not None:
            self.frozen.eval()
        return self

    def loss(self, obs: Obs, actions: Tensor) -> Tensor:
        """DDPM denoising loss of the expert chunk (raw (B, H, A) in): MSE between predicted and true noise."""
        x0 = self.normalizer.normalize_action(actions)  # (B, H, A)
        features = self.encoder(obs)  # (B, D)
        t = torch.randint(0, self.num_train_steps, (x0.shape[0],), device=x0.device)  # (B,)
        eps = torch.randn_like(x0)  # (B, H, A)
        abar = self.alphas_cumprod[t].view(-1, 1, 1)  # (B, 1, 1)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps  # (B, H, A)
        return F.mse_loss(self.denoiser(x_t, t, features), eps)

    def ddim_timesteps(self, steps: int) -> list[int]:
        """`steps` timesteps from K-1 down, evenly spaced ("trailing"): K = 20, steps = 5 -> [19, 15, 11, 7, 3]."""
        if not 1 <= steps <= self.num_train_steps:
            raise ValueError(f"DDIM steps must be in [1, {self.num_train_steps}], got {steps}")
        return [round(self.num_train_steps - i * self.num_train_steps / steps) - 1 for i in range(steps)]

    def denoise_step(
        self,
        x_t: Tensor,
        t: int | Tensor,
        t_prev: int | Tensor,
        features: Tensor,
        eta: float = 0.0,
        min_sampling_std: float = 0.0,
        frozen: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Gaussian (mean, std), each (B, H, A), of x_{t_prev} given x_t (B, H, A) and encoded obs `features` (B, D).

        `t`, `t_prev`: ints or (B,) integer tensors (a PPO minibatch mixes steps); t_prev = -1 is the clean end.
        `min_sampling_std` floors the std (DPPO's exploration noise, e.g. 0.04-0.1; 0 = plain DDIM). `frozen` runs
        the frozen pre-trained copy (then `features` must come from its encoder).
        """
        b = x_t.shape[0]
        t = torch.as_tensor(t, device=x_t.device).expand(b)  # (B,)
        t_prev = torch.as_tensor(t_prev, device=x_t.device).expand(b)  # (B,)
        abar_t = self.alphas_cumprod[t].view(b, 1, 1)  # (B, 1, 1)
        abar_prev = torch.where(t_prev >= 0, self.alphas_cumprod[t_prev.clamp_min(0)], 1.0).view(b, 1, 1)  # (B,1,1)
        denoiser = self.frozen["denoiser"] if frozen and self.frozen is not None else self.denoiser
        eps = denoiser(x_t, t, features)  # (B, H, A)
        return ddim_step(x_t, eps, abar_t, abar_prev, eta, min_sampling_std)

    def ddim_chain(
        self,
        obs: Obs,
        steps: int | None = None,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        min_sampling_std: float = 0.0,
    ) -> list[Tensor]:
        """DDIM from x_{K-1} ~ N(0, I): [x_{t_0}, x_{t_1}, ..., x_0], steps + 1 tensors (B, H, A), where
        t_0 > t_1 > ... are `ddim_timesteps(steps)`. The last one is the normalised action chunk, not clipped.

        With a frozen copy, steps before the last `finetuned_steps` run it deterministically (DDIM, no noise); `eta`
        and `min_sampling_std` apply to the fine-tuned steps."""
        steps = steps or self.cfg.diffusion.ddim_steps
        features = self.encoder(obs)  # (B, D), once for the whole chain
        n_frozen = self.frozen_steps(steps)
        frozen_features = self.frozen["encoder"](obs) if n_frozen and self.frozen is not None else None  # (B, D)
        shape = (features.shape[0], self.horizon, self.action_dim)
        x = torch.randn(shape, generator=generator, device=features.device, dtype=features.dtype)  # (B, H, A)
        chain = [x]
        ts = self.ddim_timesteps(steps)
        for i, (t, t_prev) in enumerate(zip(ts, [*ts[1:], -1], strict=True)):
            if i < n_frozen:
                x, _ = self.denoise_step(x, t, t_prev, frozen_features, 0.0, 0.0, frozen=True)  # (B, H, A)
                chain.append(x)
                continue
            mean, std = self.denoise_step(x, t, t_prev, features, eta, min_sampling_std)  # (B, H, A) each
            if eta > 0 or min_sampling_std > 0:
                noise = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)  # (B, H, A)
                x = mean + std * noise
            else:
                x = mean
            chain.append(x)
        return chain

    def frozen_steps(self, steps: int) -> int:
        """How many of `steps` DDIM steps run the frozen copy (0 without one)."""
        k = self.cfg.diffusion.finetuned_steps
        return 0 if self.frozen is None or k is None else max(steps - k, 0)

    def sample_normalized(self, obs: Obs, eta: float, generator: torch.Generator | None = None) -> Tensor:
        """DDIM with `diffusion.ddim_steps` steps and this `eta`, clipped: (B, H, A)."""
        return self.ddim_chain(obs, self.cfg.diffusion.ddim_steps, eta, generator)[-1].clamp(-1.0, 1.0)

    def predict_normalized(
        self, obs: Obs, deterministic: bool = True, generator: torch.Generator | None = None
    ) -> Tensor:
        """Acting (`deterministic`): DDIM with eta = `diffusion.eta` (0 by default); exploring: eta 1."""
        return self.sample_normalized(obs, self.cfg.diffusion.eta if deterministic else 1.0, generator)
