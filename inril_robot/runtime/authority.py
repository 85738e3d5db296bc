"""Who controls the arm: a small explicit state machine shared by collection, evaluation and on-robot fine-tuning.

States: ``policy`` (the learner's actions are executed), ``human`` (an operator intervenes through the teleop device),
``reset`` (scripted homing and scene reset between episodes), ``paused`` (the arm holds; nothing is executed) and
``stopped`` (e-stop: nothing moves until an operator acknowledges with `recover`, which leads to ``reset``, never
straight back to the policy). `estop` is valid from every state, so an e-stop never fails.

Every transition is kept in `transitions` (and logged), for the episode store to record with the episode.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

logger = logging.getLogger(__name__)

State = Literal["policy", "human", "reset", "paused", "stopped"]
#: the per-step `control` field of the episode store (`inril_robot.data.CONTROL_CODES`); "scripted" is set by the
#: collection loop when a scripted expert drives, never by this state machine
Control = Literal["policy", "human", "scripted", "reset", "none"]
STATES: tuple[State, ...] = ("policy", "human", "reset", "paused", "stopped")

#: (state, event) -> next state; `estop` is added for every state below
TRANSITIONS: dict[tuple[State, str], State] = {
    ("policy", "intervene"): "human",
    ("human", "release"): "policy",
    ("policy", "pause"): "paused",
    ("human", "pause"): "paused",
    ("paused", "resume"): "policy",
    ("policy", "begin_reset"): "reset",
    ("human", "begin_reset"): "reset",
    ("paused", "begin_reset"): "reset",
    ("reset", "reset_done"): "policy",
    ("stopped", "recover"): "reset",
    **{(s, "estop"): "stopped" for s in STATES},
}
# paused and stopped execute nothing, so no one is in control of the step
CONTROL: dict[State, Control] = {
    "policy": "policy",
    "human": "human",
    "reset": "reset",
    "paused": "none",
    "stopped": "none",
}


class AuthorityError(RuntimeError):
    """An event that is not allowed from the current state."""


@dataclass(frozen=True)
class Transition:
    time: float  # seconds, the authority's clock (wall clock by default)
    step: int  # control step of the episode when it happened
    from_state: State
    to_state: State
    event: str
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Authority:
    """The control-authority state machine. Set `step` from the control loop so transitions carry it."""

    state: State = "policy"
    step: int = 0
    clock: Callable[[], float] = time.time
    transitions: list[Transition] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise AuthorityError(f"unknown state {self.state!r}; states: {', '.join(STATES)}")

    # --------------------------------------------------------------------------------------------- events
    def intervene(self, reason: str = "") -> None:
        self._fire("intervene", reason)

    def release(self, reason: str = "") -> None:
        self._fire("release", reason)

    def pause(self, reason: str = "") -> None:
        self._fire("pause", reason)

    def resume(self, reason: str = "") -> None:
        self._fire("resume", reason)

    def begin_reset(self, reason: str = "") -> None:
        self._fire("begin_reset", reason)

    def reset_done(self, reason: str = "") -> None:
        self._fire("reset_done", reason)

    def estop(self, reason: str) -> None:
        self._fire("estop", reason)

    def recover(self, reason: str = "operator acknowledged") -> None:
        self._fire("recover", reason)

    # ----------------------------------------------------------------------------------------------- views
    @property
    def in_control(self) -> Control:
        return CONTROL[self.state]

    @property
    def is_intervention(self) -> bool:
        return self.state == "human"

    @property
    def is_stopped(self) -> bool:
        return self.state == "stopped"

    def allowed(self) -> list[str]:
        """The events valid from the current state."""
        return [event for (state, event) in TRANSITIONS if state == self.state]

    def to_records(self) -> list[dict[str, Any]]:
        return [t.to_dict() for t in self.transitions]

    # ---------------------------------------------------------------------------------------------- internals
    def _fire(self, event: str, reason: str) -> None:
        target = TRANSITIONS.get((self.state, event))
        if target is None:
            raise AuthorityError(
                f"cannot {event} from state {self.state!r}; allowed from {self.state!r}: {', '.join(self.allowed())}"
            )
        transition = Transition(self.clock(), self.step, self.state, target, event, reason)
        self.transitions.append(transition)
        self.state = target
        log = logger.warning if event == "estop" else logger.info
        log(
            "control %s -> %s (%s) at step %d%s",
            transition.from_state,
            target,
            event,
            self.step,
            f": {reason}" if reason else "",
        )
