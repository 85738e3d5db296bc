"""Batch-1 CPU latency of the image-encoder choices, timed interleaved (A, B, A, B, ...) so that the load of a shared
machine falls on every choice alike. Usage: python3 scripts/encoder_latency.py [--repeats N] [--size PX] [--json]"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from inril_robot.config import ImageEncoderConfig, PolicyConfig, load_config
from inril_robot.learning.policies.factory import make_policy
from inril_robot.learning.policies.normalizer import Normalizer
from inril_robot.runtime.env import PROPRIO_KEYS

CHOICES = {
    "conv 32-64-64 + spatial softmax": ImageEncoderConfig(pool="spatial_softmax"),
    "conv 32-64-64 + average pool": ImageEncoderConfig(pool="avg"),
    "conv 16-32-32 + spatial softmax": ImageEncoderConfig(channels=(16, 32, 32), pool="spatial_softmax"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shapes = {**PROPRIO_KEYS, **{k: (args.size, args.size, 3) for k in ("front_rgb", "wrist_rgb")}}
    stats = {
        k: {"mean": [0.0] * s[0], "std": [1.0] * s[0], "min": [-1.0] * s[0], "max": [1.0] * s[0]}
        for k, s in PROPRIO_KEYS.items()
    }
    actions = {"min": [-0.02] * 3 + [-0.1] * 3 + [0.0], "max": [0.02] * 3 + [0.1] * 3 + [1.0]}
    base: PolicyConfig = load_config(algo="bc_gaussian").policy
    policies = {}
    for name, image in CHOICES.items():
        torch.manual_seed(0)
        policies[name] = make_policy(base.model_copy(update={"image": image}), Normalizer(stats, actions), shapes, 7)
        policies[name].eval()
    rng = np.random.default_rng(0)
    obs = {
        k: torch.as_tensor(
            rng.integers(0, 255, (1, 1, *s), dtype=np.uint8)
            if k.endswith("_rgb")
            else rng.normal(size=(1, 1, *s)).astype(np.float32)
        )
        for k, s in shapes.items()
    }
    times: dict[str, list[float]] = {n: [] for n in policies}
    with torch.inference_mode():
        for i in range(args.repeats + 20):
            for name, policy in policies.items():
                start = time.perf_counter()
                policy.predict(obs, deterministic=True)
                if i >= 20:
                    times[name].append((time.perf_counter() - start) * 1e3)
    rows = [
        {
            "encoder": n,
            "parameters": sum(p.numel() for p in policies[n].parameters()),
            "median_ms": float(np.median(t)),
            "p90_ms": float(np.percentile(t, 90)),
            "p99_ms": float(np.percentile(t, 99)),
        }
        for n, t in times.items()
    ]
    if args.json:
        print(json.dumps({"size": args.size, "repeats": args.repeats, "rows": rows}))
    else:
        for r in rows:
            print(
                f"{r['encoder']:34s} {r['parameters']:8d} params  median {r['median_ms']:.2f} ms  "
                f"p90 {r['p90_ms']:.2f}  p99 {r['p99_ms']:.2f}"
            )


if __name__ == "__main__":
    main()
