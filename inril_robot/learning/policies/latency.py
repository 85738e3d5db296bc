"""Batch-1 inference latency of a policy's `predict`, on random observations, under `torch.inference_mode`."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from inril_robot.config import RunConfig
from inril_robot.learning.policies.base import Obs, Policy


def random_obs(
    obs_shapes: dict[str, tuple[int, ...]], n_obs_steps: int, batch: int = 1, device: torch.device | str = "cpu"
) -> Obs:
    """Random observations (B, To, *shape): uint8 images for `<camera>_rgb` keys, float32 normals otherwise."""
    obs: Obs = {}
    for key, shape in obs_shapes.items():
        size = (batch, n_obs_steps, *shape)
        if key.endswith("_rgb"):
            obs[key] = torch.randint(0, 256, size, dtype=torch.uint8, device=device)
        else:
            obs[key] = torch.randn(size, device=device)
    return obs


def measure_latency(
    policy: Policy, obs_shapes: dict[str, tuple[int, ...]], repeats: int = 200, warmup: int = 20
) -> dict[str, float]:
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


def bench_default_policies(
    cfg: RunConfig,
    repeats: int = 200,
    device: str = "cpu",
    threads: int = 0,
    algos: tuple[str, ...] = ("bc_gaussian", "bc_diffusion"),
) -> list[dict[str, Any]]:
    """Latency of each default policy preset, state-only (proprioception + task state) and with `cfg.cameras`.

    Weights are random (latency does not depend on them); the normaliser gets unit statistics.
    """
    from inril_robot.config import load_config
    from inril_robot.learning.policies.factory import make_policy
    from inril_robot.learning.policies.normalizer import Normalizer
    from inril_robot.runtime.env import PROPRIO_KEYS
    from inril_robot.tasks import TASKS

    if threads > 0:
        torch.set_num_threads(threads)
    lowdim = {**PROPRIO_KEYS, **TASKS[cfg.task.name].state_keys}
    images = {f"{c.name}_rgb": (c.height, c.width, 3) for c in cfg.cameras}
    stats = {
        k: {"mean": [0.0] * s[0], "std": [1.0] * s[0], "min": [-1.0] * s[0], "max": [1.0] * s[0]}
        for k, s in lowdim.items()
    }
    actions = {
        "min": [-cfg.safety.max_step] * 3 + [-cfg.safety.max_rot_step] * 3 + [0.0],
        "max": [cfg.safety.max_step] * 3 + [cfg.safety.max_rot_step] * 3 + [1.0],
    }
    rows = []
    for algo in algos:
        # the preset's policy with the run's image encoder, so `--set policy.image.*` times an encoder choice
        policy_cfg = load_config(algo=algo).policy.model_copy(update={"image": cfg.policy.image})
        variants = [("state", lowdim)]
        if images:
            variants.append(
                (" + ".join(sorted(images)) + f" ({next(iter(images.values()))[1]} px)", {**PROPRIO_KEYS, **images})
            )
        for name, shapes in variants:
            torch.manual_seed(0)
            policy = make_policy(policy_cfg, Normalizer(stats, actions), shapes, 7).to(device)
            timing = measure_latency(policy, shapes, repeats=repeats, warmup=max(5, repeats // 10))
            label = algo.removeprefix("bc_") + (
                f"/{policy_cfg.diffusion.denoiser}" if policy_cfg.kind == "diffusion" else ""
            )
            rows.append(
                {
                    "policy": label,
                    "observations": name,
                    "horizon": policy_cfg.horizon,
                    "parameters": sum(p.numel() for p in policy.parameters()),
                    **timing,
                }
            )
    return rows
