"""The control-authority state machine: valid paths, refused events, e-stop from everywhere, recovery, the record."""

from __future__ import annotations

import itertools
import logging

import pytest

from inril_robot.runtime.authority import CONTROL, STATES, TRANSITIONS, Authority, AuthorityError, Transition

EVENTS = ("intervene", "release", "pause", "resume", "begin_reset", "reset_done", "estop", "recover")
# how to reach each state from the initial "policy" state
PATHS = {
    "policy": [],
    "human": ["intervene"],
    "paused": ["pause"],
    "reset": ["begin_reset"],
    "stopped": ["estop"],
}


def fire(authority: Authority, event: str) -> None:
    if event == "estop":
        authority.estop("test")
    else:
        getattr(authority, event)()


def at(state: str) -> Authority:
    authority = Authority(clock=itertools.count().__next__)
    for event in PATHS[state]:
        fire(authority, event)
    assert authority.state == state
    return authority


@pytest.mark.parametrize(("state", "event"), sorted(TRANSITIONS))
def test_every_valid_transition(state: str, event: str) -> None:
    authority = at(state)
    fire(authority, event)
    assert authority.state == TRANSITIONS[(state, event)]
    last = authority.transitions[-1]
    assert (last.from_state, last.to_state, last.event) == (state, TRANSITIONS[(state, event)], event)


INVALID = [(s, e) for s in STATES for e in EVENTS if (s, e) not in TRANSITIONS]


@pytest.mark.parametrize(("state", "event"), INVALID)
def test_every_invalid_transition_raises(state: str, event: str) -> None:
    authority = at(state)
    before = list(authority.transitions)
    with pytest.raises(AuthorityError) as info:
        fire(authority, event)
    message = str(info.value)
    assert event in message and repr(state) in message
    for allowed in authority.allowed():
        assert allowed in message
    assert authority.state == state and authority.transitions == before


def test_the_table_is_the_documented_one() -> None:
    assert len(INVALID) == len(STATES) * len(EVENTS) - len(TRANSITIONS)
    assert at("policy").allowed() == ["intervene", "pause", "begin_reset", "estop"]
    assert at("stopped").allowed() == ["recover", "estop"]


@pytest.mark.parametrize("state", STATES)
def test_estop_from_every_state(state: str) -> None:
    authority = at(state)
    authority.estop("operator pressed the e-stop")
    assert authority.is_stopped and authority.in_control == "none"
    assert authority.transitions[-1].reason == "operator pressed the e-stop"


def test_recover_goes_through_reset() -> None:
    authority = at("stopped")
    for event in ("release", "resume", "reset_done", "intervene", "pause", "begin_reset"):
        with pytest.raises(AuthorityError, match="recover"):
            fire(authority, event)
    authority.recover()
    assert authority.state == "reset"
    authority.reset_done()
    assert authority.state == "policy"


def test_an_episode_with_intervention_is_recorded() -> None:
    authority = Authority(clock=itertools.count(100).__next__)
    for step, action in [
        (3, "intervene"),
        (9, "release"),
        (12, "pause"),
        (20, "resume"),
        (25, "begin_reset"),
        (26, "reset_done"),
    ]:
        authority.step = step
        fire(authority, action)
    authority.step = 30
    authority.estop("contact force")
    authority.recover()
    records = authority.to_records()
    assert [r["event"] for r in records] == [
        "intervene",
        "release",
        "pause",
        "resume",
        "begin_reset",
        "reset_done",
        "estop",
        "recover",
    ]
    assert [r["step"] for r in records] == [3, 9, 12, 20, 25, 26, 30, 30]
    assert [r["time"] for r in records] == list(range(100, 108))
    assert records[0] == {
        "time": 100,
        "step": 3,
        "from_state": "policy",
        "to_state": "human",
        "event": "intervene",
        "reason": "",
    }
    assert records[6]["reason"] == "contact force"
    assert all(isinstance(t, Transition) for t in authority.transitions)


def test_control_field_and_intervention_flag() -> None:
    assert {s: at(s).in_control for s in STATES} == CONTROL
    assert set(CONTROL.values()) <= {"policy", "human", "scripted", "reset", "none"}
    assert [s for s in STATES if at(s).is_intervention] == ["human"]


def test_transitions_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    authority = at("policy")
    with caplog.at_level(logging.INFO, logger="inril_robot.runtime.authority"):
        authority.intervene("operator button")
        authority.estop("teleop e-stop")
    assert "policy -> human" in caplog.text and "operator button" in caplog.text
    assert any(r.levelno == logging.WARNING and "teleop e-stop" in r.getMessage() for r in caplog.records)


def test_unknown_initial_state_is_refused() -> None:
    with pytest.raises(AuthorityError, match="unknown state"):
        Authority(state="running")  # type: ignore[arg-type]
