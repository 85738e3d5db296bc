"""Small statistics used in every report: success rates come with a Wilson 95% interval, never bare."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    successes: int
    trials: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.successes / self.trials if self.trials else float("nan")

    def __str__(self) -> str:
        return f"{self.value:.0%} [{self.low:.0%}, {self.high:.0%}] ({self.successes}/{self.trials})"

    def to_dict(self) -> dict[str, float | int]:
        return {
            "rate": self.value,
            "ci95_low": self.low,
            "ci95_high": self.high,
            "successes": self.successes,
            "trials": self.trials,
        }


def wilson_interval(successes: int, trials: int, z: float = 1.959963984540054) -> Rate:
    """Wilson score interval: well behaved at 0 and 100% and for small n, unlike the normal approximation."""
    if trials <= 0:
        return Rate(0, 0, 0.0, 1.0)
    if not 0 <= successes <= trials:
        raise ValueError(f"successes={successes} must be within [0, trials={trials}]")
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return Rate(successes, trials, max(0.0, centre - half), min(1.0, centre + half))


# two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..30; beyond, the normal 1.96 is within 2%
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


@dataclass(frozen=True)
class MeanCI:
    """Mean over n independent runs (seeds) with a Student-t 95% interval; n = 1 gives an unbounded interval."""

    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "ci95_low": self.low, "ci95_high": self.high, "n": self.n}


def mean_ci(values: list[float]) -> MeanCI:
    n = len(values)
    if n == 0:
        return MeanCI(float("nan"), float("nan"), float("nan"), 0)
    mean = sum(values) / n
    if n == 1:
        return MeanCI(mean, float("-inf"), float("inf"), 1)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = (_T975[n - 2] if n - 1 <= len(_T975) else 1.96) * sd / math.sqrt(n)
    return MeanCI(mean, mean - half, mean + half, n)
