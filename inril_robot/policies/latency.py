"""Batch-1 inference latency of a policy's `predict`, on random observations, under `torch.inference_mode`."""

from __future__ import annotations

import time

import numpy as np
import torch

from inril_robot.policies.base import Obs, Policy


def random_obs(obs_shapes: dict[str, tuple[int, ...]], n_obs_steps: int, batch: int = 1,
               device: torch.device | str = "cpu") -> Obs:
    """Random observations (B, To, *shape): uint8 images for `<camera>_rgb` keys, float32 normals otherwise."""
    obs: Obs = {}
    for key, shape in obs_shapes.items():
        size = (batch, n_obs_steps, *shape)
        if key.endswith("_rgb"):
            obs[key] = torch.randint(0, 256, size, dtype=torch.uint8, device=device)
        else:
            obs[key] = torch.randn(size, device=device)
    return obs


def measure_latency(policy: Policy, obs_shapes: dict[str, tuple[int, ...]], repeats: int = 200,
                    warmup: int = 20) -> dict[str, float]:
    """Median, 99th-percentile and mean milliseconds of one `predict` (deterministic) at batch 1, in eval mode."""
    device = next(policy.parameters()).device
    obs = random_obs(obs_shapes, policy.cfg.n_obs_steps, device=device)
    was_training = policy.training
    policy.eval()
    times_ms = []
    try:
        with torch.inference_mode():
            for i in range(warmup + repeats):
                start = time.perf_counter()
                policy.predict(obs, deterministic=True)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if i >= warmup:
                    times_ms.append((time.perf_counter() - start) * 1e3)
    finally:
        policy.train(was_training)
    t = np.asarray(times_ms)
    return {"median_ms": float(np.median(t)), "p99_ms": float(np.percentile(t, 99)), "mean_ms": float(t.mean())}
