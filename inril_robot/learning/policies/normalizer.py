"""Normalisation whose statistics travel with the weights (registered buffers, saved in the state dict).

Actions: min-max to [-1, 1] per dimension (a constant dimension maps to 0). Observations: mean/std or min-max per
key. Images are not normalised here (the encoder divides by 255). `unnormalize_action` clips to the bounds seen in
the data, so a policy can never command more than the demonstrations did.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

EPS = 1e-6


class Normalizer(nn.Module):
    def __init__(
        self,
        obs_stats: dict[str, dict[str, Any]],
        action_stats: dict[str, Any],
        obs_mode: Literal["mean_std", "min_max"] = "mean_std",
    ) -> None:
        super().__init__()
        self.obs_mode = obs_mode
        self.obs_keys = sorted(obs_stats)
        for key in self.obs_keys:
            s = obs_stats[key]
            if obs_mode == "mean_std":
                offset, scale = torch.tensor(s["mean"]), torch.tensor(s["std"]).clamp_min(EPS)
            else:
                lo, hi = torch.tensor(s["min"]), torch.tensor(s["max"])
                offset, scale = (hi + lo) / 2, ((hi - lo) / 2).clamp_min(EPS)
            self.register_buffer(f"obs_offset__{_safe(key)}", offset.float())
            self.register_buffer(f"obs_scale__{_safe(key)}", scale.float())
        lo, hi = torch.tensor(action_stats["min"]).float(), torch.tensor(action_stats["max"]).float()
        self.register_buffer("action_min", lo)
        self.register_buffer("action_max", hi)

    @classmethod
    def from_dataset_stats(
        cls,
        stats: dict[str, dict[str, Any]],
        obs_keys: list[str],
        obs_mode: Literal["mean_std", "min_max"] = "mean_std",
        action_key: str = "action/executed",
    ) -> Normalizer:
        """From `inril_robot.data.normalization.compute_stats` output (keys `obs/<key>` and `action/executed`)."""
        missing = [k for k in obs_keys if f"obs/{k}" not in stats]
        if missing or action_key not in stats:
            raise KeyError(f"dataset statistics lack {missing or [action_key]}")
        return cls({k: stats[f"obs/{k}"] for k in obs_keys}, stats[action_key], obs_mode)

    def normalize_obs(self, key: str, value: Tensor) -> Tensor:
        return (value - getattr(self, f"obs_offset__{_safe(key)}")) / getattr(self, f"obs_scale__{_safe(key)}")

    def normalize_action(self, action: Tensor) -> Tensor:
        span = self.action_max - self.action_min
        scaled = 2.0 * (action - self.action_min) / span.clamp_min(EPS) - 1.0
        return torch.where(span > EPS, scaled, torch.zeros_like(scaled)).clamp(-1.0, 1.0)  # constant dimension -> 0

    def unnormalize_action(self, action: Tensor) -> Tensor:
        action = action.clamp(-1.0, 1.0)
        return self.action_min + (action + 1.0) / 2.0 * (self.action_max - self.action_min)


def _safe(key: str) -> str:
    return key.replace("/", "__").replace(".", "_")
