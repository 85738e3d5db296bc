"""The agent's clock: a monotonic control-rate scheduler and per-stage timing statistics."""

from __future__ import annotations

import time
from collections import deque

import numpy as np


class Scheduler:
    """Ticks every `period` seconds on the monotonic clock. Deadlines advance by exactly one period, so the loop
    keeps its rate whatever each step's work takes; a step that ends past the *next* deadline is an overrun, and the
    schedule re-anchors instead of bursting to catch up. `period` 0 never sleeps (simulation as fast as it runs)."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.deadline: float | None = None
        self.overruns = 0
        self.ticks = 0
        self.started = time.monotonic()

    def wait(self) -> float:
        """Sleep until the next tick; returns how late this tick is [s]."""
        now = time.monotonic()
        self.ticks += 1
        if self.deadline is None or self.period <= 0:
            self.deadline = now + self.period
            return 0.0
        late = now - self.deadline
        if late > self.period:
            self.overruns += 1
            self.deadline = now + self.period
            return late
        if late < 0:
            time.sleep(-late)
        self.deadline += self.period
        return max(late, 0.0)

    def restart(self) -> None:
        """Forget the schedule (after a reset or a wait that was not control)."""
        self.deadline = None

    def hz(self, window: deque[float]) -> float:
        if len(window) < 2:
            return 0.0
        return (len(window) - 1) / max(window[-1] - window[0], 1e-9)


class StageTimes:
    """Recent durations [ms] per named stage, with p50/p99/max summaries."""

    def __init__(self, window: int = 2000) -> None:
        self.window = window
        self.samples: dict[str, deque[float]] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.samples.setdefault(stage, deque(maxlen=self.window)).append(seconds * 1e3)

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for stage, values in self.samples.items():
            if values:
                a = np.fromiter(values, float)
                out[stage] = {
                    "p50_ms": float(np.percentile(a, 50)),
                    "p99_ms": float(np.percentile(a, 99)),
                    "max_ms": float(a.max()),
                    "n": len(a),
                }
        return out


def percentiles(samples_ms: list[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(samples_ms, dtype=float)
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "n": int(a.size),
    }
