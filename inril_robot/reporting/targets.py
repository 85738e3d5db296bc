"""Targets a benchmark or `doctor` is judged by: a measured value, a limit, and whether it was met.

Every bench builds its `Target`s from the figures it measured; the CLI prints each one marked met or missed, puts
them (with `met: true|false`) into `--json`, and exits 1 when one is missed unless `--report-only` is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Target:
    name: str  # what is measured, e.g. "bridge p50 / raw echo p50"
    value: float
    limit: float
    op: Literal["<=", ">="]
    unit: str = ""  # "x", "ms", ...

    @property
    def met(self) -> bool:
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "limit": self.limit,
            "op": self.op,
            "unit": self.unit,
            "met": self.met,
        }

    def text(self) -> str:
        return f"{self.name}: {self.value:.3g}{self.unit} (target {self.op} {self.limit:g}{self.unit})"


def targets_payload(targets: list[Target]) -> dict[str, Any]:
    """The `--json` part every bench adds: each target with `met`, and `met` overall."""
    return {"targets": [t.to_dict() for t in targets], "met": all(t.met for t in targets)}
