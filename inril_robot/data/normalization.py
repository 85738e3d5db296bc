"""Normalisation statistics of a dataset, as training uses them (and checkpoints will carry them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from inril_robot.data.store import Dataset, atomic_write_json

STATS_FILE = "stats.json"


def compute_stats(dataset: Dataset, keys: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per key (all low-dimensional float arrays by default): mean, std, min, max, count, over every step.

    Images are excluded (they are normalised by /255 in the encoder). Accumulated in float64, episode by episode.
    """
    if not dataset.episodes:
        return {}
    first = dataset.episodes[0]
    if keys is None:
        keys = [k for k in first.array_keys() if first.array(k).dtype.kind == "f" and not k.startswith("time/")]
    acc: dict[str, dict[str, Any]] = {}
    for episode in dataset.episodes:
        for key in keys:
            values = episode.load(key).astype(np.float64).reshape(episode.length, -1)
            a = acc.setdefault(key, {"n": 0, "sum": 0.0, "sumsq": 0.0, "min": np.inf, "max": -np.inf})
            a["n"] += len(values)
            a["sum"] = a["sum"] + values.sum(0)
            a["sumsq"] = a["sumsq"] + (values**2).sum(0)
            a["min"] = np.minimum(a["min"], values.min(0))
            a["max"] = np.maximum(a["max"], values.max(0))
    out = {}
    for key, a in acc.items():
        mean = a["sum"] / a["n"]
        std = np.sqrt(np.maximum(a["sumsq"] / a["n"] - mean**2, 0.0))
        out[key] = {
            "mean": mean.tolist(),
            "std": std.tolist(),
            "min": a["min"].tolist(),
            "max": a["max"].tolist(),
            "count": int(a["n"]),
        }
    return out


def write_stats(dataset: Dataset, stats: dict[str, dict[str, Any]]) -> Path:
    path = dataset.root / STATS_FILE
    atomic_write_json(path, {"episodes": len(dataset), "steps": dataset.num_steps, "keys": stats})
    return path
