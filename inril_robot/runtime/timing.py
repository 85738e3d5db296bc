"""The agent's clock: a monotonic control-rate scheduler and per-stage timing statistics."""

from __future__ import annotations

import time
from collections import deque

import numpy as np


class Scheduler:
    """Ticks every `period` seconds on the monotonic clock: the control loop's one pacing rule.

    Two actions are never closer than a period (less `tolerance`, a tenth of a period, of sleep jitter): the loop
    reports each action with `acted()`, and a tick never starts before the last action plus that. A tick that starts
    on time keeps the phase (the next deadline is one period after this one). A tick that starts later than
    `tolerance` past its deadline is an overrun: it is counted and the schedule re-anchors (on now, or on the last
    action plus a period when the slow work came after that action) instead of catching up with back-to-back steps,
    which the safety envelope's per-step caps do not expect. `period` 0 never sleeps (simulation as fast as it runs)."""

    def __init__(self, period: float, tolerance: float | None = None) -> None:
        self.period = period
        self.tolerance = 0.1 * period if tolerance is None else tolerance
        self.deadline: float | None = None
        self.last_action: float | None = None
        self.overruns = 0
        self.late_max = 0.0  # the latest tick since `reset_peak` [s]: what an overrun was made of
        self.ticks = 0
        self.started = time.monotonic()

    def wait(self) -> float:
        """Sleep until the next tick; returns how late this tick is [s]."""
        now = time.monotonic()
        self.ticks += 1
        if self.period <= 0:
            return 0.0
        earliest = self.last_action + self.period - self.tolerance if self.last_action is not None else now
        if self.deadline is None:  # a new schedule: from now, a period after the last action at the earliest
            start = max(now, earliest)
            time.sleep(max(0.0, start - now))
            self.deadline = start + self.period
            return 0.0
        late = now - self.deadline
        self.late_max = max(self.late_max, late)
        if late > self.tolerance:
            self.overruns += 1
            start = max(now, earliest)
            time.sleep(max(0.0, start - now))
            self.deadline = start + self.period
            return late
        start = max(self.deadline, earliest)
        if start > now:
            time.sleep(start - now)
        # an action that came late in its tick pushes the phase (never two actions within a period)
        self.deadline = (start if start > self.deadline + self.tolerance else self.deadline) + self.period
        return max(late, 0.0)

    def acted(self) -> None:
        """The control step's action was just sent to the robot."""
        self.last_action = time.monotonic()

    def reset_peak(self) -> None:
        self.late_max = 0.0

    def restart(self) -> None:
        """Forget the schedule (after a reset or a wait that was not control); the last action still counts."""
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
        self.peaks: dict[str, float] = {}  # the longest of each stage since `reset_peaks` [ms]

    def add(self, stage: str, seconds: float) -> None:
        self.samples.setdefault(stage, deque(maxlen=self.window)).append(seconds * 1e3)
        self.peaks[stage] = max(self.peaks.get(stage, 0.0), seconds * 1e3)

    def reset_peaks(self) -> None:
        self.peaks.clear()

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
