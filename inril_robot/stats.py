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
        return {"rate": self.value, "ci95_low": self.low, "ci95_high": self.high,
                "successes": self.successes, "trials": self.trials}


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
