"""Observation encoders: raw observations (B, To, ...) -> one flat feature vector per sample (B, out_dim).

- Low-dim keys are normalised by the policy's `Normalizer` (statistics saved with the weights).
- Each camera key `<camera>_rgb` gets its own small conv net (`ImageEncoder`), sized for CPU inference at batch 1:
  3x3 stride-2 convolutions with GroupNorm and ReLU, a spatial soft-argmax (one expected (x, y) image position per
  channel, the keypoint pooling of Levine et al. 2016 and Diffusion Policy; or global average pooling, chosen by
  `policy.image.pool` and compared in docs/image_policies.md), then linear + LayerNorm to `feature_dim`.
  Training-time augmentation is DrQ's random shift: pad `random_shift` pixels (per camera: `camera_shift`) by
  replicating the border, crop back to the original size at a random offset per image. It runs only in training
  mode (`module.train()`), on whatever images the dataset holds (rendered or RealSense, after the camera pipeline).
- Per time step the features of all keys (sorted by name) are concatenated; the To steps are then flattened.

Also here: `mlp`, the one multilayer-perceptron builder every policy uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inril_robot.config import ImageEncoderConfig, PolicyConfig
from inril_robot.learning.policies.normalizer import Normalizer

Pool = Literal["spatial_softmax", "avg"]


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: type[nn.Module] = nn.Mish) -> nn.Sequential:
    """Linear -> activation for each hidden width, then a final Linear to `out_dim` (no output activation)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), activation()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def num_groups(channels: int, preferred: int = 8) -> int:
    """The largest group count <= `preferred` that divides `channels` (GroupNorm needs a divisor)."""
    return next(g for g in range(min(preferred, channels), 0, -1) if channels % g == 0)


class SpatialSoftmax(nn.Module):
    """(N, C, h, w) feature maps -> (N, 2C): the softmax-weighted mean (x, y) position of each channel, in [-1, 1]."""

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        attention = torch.softmax(x.flatten(2), dim=-1)  # (N, C, h*w)
        ys, xs = torch.meshgrid(
            torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype),
            torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype),
            indexing="ij",
        )
        grid = torch.stack([xs.flatten(), ys.flatten()], dim=-1)  # (h*w, 2)
        return (attention @ grid).reshape(n, 2 * c)  # (N, C, 2) -> (N, 2C)


def random_shift(images: Tensor, pad: int) -> Tensor:
    """DrQ augmentation: (N, C, h, w) -> (N, C, h, w), each image shifted by an integer offset in [-pad, pad]^2 with
    replicated borders (pad, then crop back at a random position per image)."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")  # (N, C, h+2p, w+2p)
    dy = torch.randint(0, 2 * pad + 1, (n, 1, 1), device=images.device)  # (N, 1, 1) crop origin row
    dx = torch.randint(0, 2 * pad + 1, (n, 1, 1), device=images.device)  # (N, 1, 1) crop origin column
    rows = dy + torch.arange(h, device=images.device).view(1, h, 1)  # (N, h, 1)
    cols = dx + torch.arange(w, device=images.device).view(1, 1, w)  # (N, 1, w)
    batch = torch.arange(n, device=images.device).view(n, 1, 1)  # (N, 1, 1)
    cropped = padded.permute(0, 2, 3, 1)[batch, rows, cols]  # (N, h, w, C): advanced indexing broadcasts to (N, h, w)
    return cropped.permute(0, 3, 1, 2)  # (N, C, h, w)


class ImageEncoder(nn.Module):
    """uint8 (N, h, w, 3) RGB -> float features (N, feature_dim)."""

    def __init__(self, cfg: ImageEncoderConfig, pool: Pool | None = None, camera: str | None = None) -> None:
        """`camera`: its name, for `cfg.camera_shift` (a per-camera random-shift padding)."""
        super().__init__()
        self.random_shift = cfg.camera_shift.get(camera, cfg.random_shift) if camera else cfg.random_shift
        layers: list[nn.Module] = []
        in_ch = 3
        for out_ch in cfg.channels:  # each layer halves the resolution: 96 px -> 48 -> 24 -> 12 with 3 layers
            layers += [
                nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1),
                nn.GroupNorm(num_groups(out_ch), out_ch),
                nn.ReLU(),
            ]
            in_ch = out_ch
        self.conv = nn.Sequential(*layers)
        if (pool or cfg.pool) == "spatial_softmax":
            self.pool: nn.Module = SpatialSoftmax()
            pooled = 2 * in_ch
        else:
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            pooled = in_ch
        self.head = nn.Sequential(nn.Linear(pooled, cfg.feature_dim), nn.LayerNorm(cfg.feature_dim))
        self.out_dim = cfg.feature_dim

    def forward(self, images: Tensor) -> Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255.0  # (N, 3, h, w) in [0, 1]
        if self.training and self.random_shift > 0:
            x = random_shift(x, self.random_shift)  # (N, 3, h, w)
        x = self.conv(x)  # (N, C, h / 2^L, w / 2^L)
        return self.head(self.pool(x))  # (N, feature_dim)


class ObsEncoder(nn.Module):
    """dict[key -> (B, To, *shape)] -> (B, out_dim) with out_dim = To * (sum of low-dim sizes + cameras * feature_dim).

    `obs_shapes` maps each key to its per-step shape (no B, To): (d,) for low-dim keys, (h, w, 3) for `<camera>_rgb`.
    Every low-dim key must have statistics in `normalizer`.
    """

    def __init__(
        self,
        normalizer: Normalizer,
        obs_shapes: dict[str, tuple[int, ...]],
        cfg: PolicyConfig,
        pool: Pool | None = None,
    ) -> None:
        super().__init__()
        self.normalizer = normalizer
        if not obs_shapes:
            raise ValueError("a policy needs at least one observation key")
        self.obs_shapes = {k: tuple(obs_shapes[k]) for k in sorted(obs_shapes)}
        self.n_obs_steps = cfg.n_obs_steps
        self.image_keys = [k for k in self.obs_shapes if k.endswith("_rgb")]
        self.lowdim_keys = [k for k in self.obs_shapes if not k.endswith("_rgb")]
        missing = [k for k in self.lowdim_keys if k not in normalizer.obs_keys]
        if missing:
            raise KeyError(
                f"the normaliser has no statistics for observation keys {missing} (it has {normalizer.obs_keys})"
            )
        for key in self.image_keys:
            shape = self.obs_shapes[key]
            if len(shape) != 3 or shape[2] != 3:
                raise ValueError(f"image key {key!r} must have shape (h, w, 3), got {shape}")
        self.image_encoders = nn.ModuleDict(
            {k: ImageEncoder(cfg.image, pool, camera=k.removesuffix("_rgb")) for k in self.image_keys}
        )
        unknown = sorted(set(cfg.image.camera_shift) - {k.removesuffix("_rgb") for k in self.image_keys})
        if unknown:
            raise ValueError(f"policy.image.camera_shift names cameras {unknown} the policy does not see")
        step_dim = sum(math.prod(self.obs_shapes[k]) for k in self.lowdim_keys) + cfg.image.feature_dim * len(
            self.image_keys
        )
        self.out_dim = self.n_obs_steps * step_dim

    def forward(self, obs: dict[str, Tensor]) -> Tensor:
        parts: list[Tensor] = []
        batch = 0
        for key, shape in self.obs_shapes.items():
            value = obs[key]
            expected = (self.n_obs_steps, *shape)
            if tuple(value.shape[1:]) != expected:
                raise ValueError(
                    f"observation {key!r}: expected shape (B, {', '.join(map(str, expected))}), "
                    f"got {tuple(value.shape)}"
                )
            batch = value.shape[0]
            if key in self.image_encoders:
                feats = self.image_encoders[key](value.flatten(0, 1))  # (B*To, h, w, 3) -> (B*To, feature_dim)
                parts.append(feats.reshape(batch, self.n_obs_steps, -1))  # (B, To, feature_dim)
            else:
                normalized = self.normalizer.normalize_obs(key, value.float())  # (B, To, *shape)
                parts.append(normalized.reshape(batch, self.n_obs_steps, -1))  # (B, To, d)
        return torch.cat(parts, dim=-1).reshape(batch, self.out_dim)  # (B, To, D) -> (B, To * D)
