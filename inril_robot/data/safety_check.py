"""`inril-robot safety-check`: replay a dataset's proposed actions through the current safety envelope.

For every step: the recorded proposed action goes through `apply_envelope` from the recorded robot state (what the
envelope would do today), and the recorded executed action is checked with `within_limits` (did anything outside
the current limits reach the arm?). The report lists every event, the largest excursion per limit (how far a
proposed action went past it), and every violating executed action; the command exits non-zero when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inril_robot.core.safety import SafetyLimits, apply_envelope, within_limits
from inril_robot.data.store import Dataset, DatasetError, Episode

RTOL = 1e-9  # actions are stored as float64: a replay is exact up to rounding


@dataclass
class SafetyReport:
    dataset: str
    episodes: int = 0
    steps: int = 0
    event_counts: dict[str, int] = field(default_factory=dict)
    largest_excursion: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


def _excess(proposed: Any, clipped: Any) -> float:
    """How far a proposed value went past what the limit allowed (the norm of the difference)."""
    try:
        p, c = np.atleast_1d(np.asarray(proposed, float)), np.atleast_1d(np.asarray(clipped, float))
        if p.shape != c.shape:
            return float("nan")
        return float(np.linalg.norm(p - c))
    except (TypeError, ValueError):
        return float("nan")


def check_episode(episode: Episode, limits: SafetyLimits, control_hz: float, report: SafetyReport) -> None:
    states = episode.load_states()
    if not states:
        raise DatasetError(f"episode {episode.index} has no recorded robot states: it cannot be replayed")
    proposed = episode.load("action/proposed").astype(np.float64)
    executed = episode.load("action/executed").astype(np.float64)
    previous: float | None = episode.meta.get("initial_gripper")
    for step in range(episode.length):
        state = episode.robot_state(step, states)
        replay = apply_envelope(proposed[step], state, limits, control_hz=control_hz, previous_gripper=previous)
        for event in replay.events:
            record = {"episode": episode.index, "step": step, **event.to_dict()}
            report.events.append(record)
            report.event_counts[event.limit] = report.event_counts.get(event.limit, 0) + 1
            excess = _excess(event.proposed, event.clipped)
            best = report.largest_excursion.get(event.limit)
            if best is None or (np.isfinite(excess) and excess > best["excess"]):
                report.largest_excursion[event.limit] = {**record, "excess": excess}
        for event in within_limits(executed[step], state, limits, control_hz, previous, rtol=RTOL):
            report.violations.append({"episode": episode.index, "step": step, **event.to_dict()})
        previous = float(executed[step][6])
    report.steps += episode.length
    report.episodes += 1


def safety_check(dataset: Dataset, limits: SafetyLimits, episode: int | None = None) -> SafetyReport:
    report = SafetyReport(str(dataset.root))
    control_hz = float(dataset.contract.control_hz)
    episodes = [dataset.episode(episode)] if episode is not None else dataset.episodes
    for ep in episodes:
        check_episode(ep, limits, control_hz, report)
    return report
