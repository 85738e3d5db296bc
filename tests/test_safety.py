"""The safety envelope: property tests over actions (NaN, inf, huge), states (at and beyond the box, near joint
limits, corrupted) and limits; unit tests for every event; `within_limits` agrees with `apply_envelope`.

The property tests run twice: a quick version in the default suite and a `slow` one with about 100,000 cases in all
(``pytest -m slow tests/test_safety.py``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inril_robot.config import load_config
from inril_robot.core.geometry import matrix_to_quat, quat_to_matrix, rotvec_to_matrix
from inril_robot.core.kinematics import JOINT_LIMITS, fk, jacobian
from inril_robot.core.safety import (
    LIMITS,
    EnvelopeResult,
    SafetyEvent,
    SafetyLimits,
    SafetyShapeError,
    apply_envelope,
    event_counts,
    hold_action,
    predict_joint_step,
    tilt_yaw,
    translation_cap,
    within_limits,
)
from inril_robot.core.state import RobotState

HOME_Q = np.array([0.0, -0.3, 0.0, -2.4, 0.0, 2.1, 0.785])
HOME_POS, HOME_ROT = fk(HOME_Q)
NOMINAL = np.array([1.0, 0.0, 0.0, 0.0])
DEFAULT = SafetyLimits()
FRANKA = load_config(robot="franka").safety
TOL = 1e-12


def make_state(
    ee_pos: Any = HOME_POS,
    ee_quat: Any = NOMINAL,
    joint_pos: Any = HOME_Q,
    gripper_width: float = 0.04,
    ee_wrench: Any = None,
) -> RobotState:
    return RobotState(
        time=0.0,
        ee_pos=np.asarray(ee_pos, dtype=float),
        ee_quat=np.asarray(ee_quat, dtype=float),
        ee_vel=np.zeros(6),
        joint_pos=np.asarray(joint_pos, dtype=float),
        joint_vel=np.zeros(7),
        gripper_width=gripper_width,
        ee_wrench=np.zeros(6) if ee_wrench is None else np.asarray(ee_wrench, dtype=float),
    )


def act(d: Any = (0, 0, 0), rv: Any = (0, 0, 0), g: float = 0.0) -> np.ndarray:
    return np.concatenate([np.asarray(d, float), np.asarray(rv, float), [g]])


def base_yaw_step(q: np.ndarray, size: float) -> np.ndarray:
    """A TCP step [d, rv] that rotates the whole arm about the base z axis by `size` rad (joint 1 only)."""
    return jacobian(q)[:, 0] * size


AT_J1_MARGIN = np.r_[JOINT_LIMITS[0, 1] - DEFAULT.joint_margin, HOME_Q[1:]]  # joint 1 exactly at its upper margin
TOWARDS_J1_LIMIT = np.r_[base_yaw_step(AT_J1_MARGIN, 0.02), 0.0]


def limits_of(result: EnvelopeResult) -> list[str]:
    return [e.limit for e in result.events]


def box_distance(p: np.ndarray, limits: SafetyLimits) -> float:
    return float(np.linalg.norm(p - np.clip(p, limits.workspace_min, limits.workspace_max)))


# ----------------------------------------------------------------------------------------------------- strategies
# Strategies are built once, at import, from flat tuples of numbers mapped through plain functions: constructing
# strategies inside draws costs milliseconds per example, and these tests draw about 100,000.
wild_floats = st.one_of(
    st.floats(-0.2, 0.2),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e300, -1e300, 1.7e308, math.nan, math.inf, -math.inf, 5e-324]),
)
actions = st.lists(wild_floats, min_size=7, max_size=7).map(np.array)


def build_finite_action(raw: tuple[tuple[int, ...], int]) -> np.ndarray:
    """Per entry: zero, near the caps, beyond them, huge (up to 1e300), tiny (down to 1e-320) or +-1."""
    kinds, seed = raw
    rng = np.random.default_rng(seed)
    sign = rng.choice([-1.0, 1.0], size=7)
    values = {
        0: lambda: 0.0,
        1: lambda: rng.uniform(-0.03, 0.03),
        2: lambda: rng.uniform(-0.3, 0.3),
        3: lambda: 10 ** rng.uniform(0, 300),
        4: lambda: 10 ** rng.uniform(-320, -5),
        5: lambda: 1.0,
    }
    return np.array([sign[i] * values[k]() for i, k in enumerate(kinds)])


finite_actions = st.tuples(st.tuples(*[st.integers(0, 5)] * 7), st.integers(0, 2**32 - 1)).map(build_finite_action)


def lerp(lo: float, hi: float, u: float) -> float:
    return lo + (hi - lo) * u


def unit_quat(v: Any) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    n = np.linalg.norm(v)
    return NOMINAL.copy() if n < 1e-3 else v / n


def build_limits(kind: int, u: np.ndarray) -> SafetyLimits:
    if kind < 2:
        return (DEFAULT, FRANKA)[kind]
    lo = np.array([lerp(0.1, 0.5, u[0]), lerp(-0.5, 0.0, u[1]), lerp(-0.1, 0.3, u[2])])
    size = np.array([lerp(0.01, 0.6, x) for x in u[3:6]])
    return SafetyLimits(
        workspace_min=tuple(lo),
        workspace_max=tuple(lo + size),
        max_step=lerp(1e-3, 0.05, u[6]),
        max_rot_step=lerp(1e-3, 0.5, u[7]),
        max_ee_speed=lerp(0.01, 1.0, u[8]),
        nominal_quat=tuple(unit_quat(2 * u[9:13] - 1)),
        max_tilt=lerp(0.05, math.pi, u[13]),
        max_yaw=lerp(0.05, math.pi, u[14]),
        joint_margin=lerp(0.0, 0.5, u[15]),
        max_contact_force=lerp(1.0, 150.0, u[16]),
        gripper_rate=lerp(0.1, 10.0, u[17]),
    )


def build_position(limits: SafetyLimits, cap: float, kinds: tuple[int, ...], u: np.ndarray) -> np.ndarray:
    """TCP positions inside, at the faces of, just beyond, about one cap beyond and far beyond the box."""
    out = []
    for kind, x, lo, hi in zip(kinds, u, limits.workspace_min, limits.workspace_max, strict=True):
        special = [lo, hi, lo - 1e-9, hi + 1e-9, lo - cap, hi + cap, lo - 0.999 * cap, hi + 1.001 * cap]
        out.append(
            [
                lerp(lo, hi, x),
                special[min(int(x * len(special)), len(special) - 1)],
                lerp(lo - 3 * cap, lo, x),
                lerp(hi, hi + 3 * cap, x),
                lerp(lo - 1.0, hi + 1.0, x),
            ][kind]
        )
    return np.array(out)


def build_joints(kind: int, rng: np.random.Generator) -> np.ndarray:
    """Home, uniform within the limits, or one joint near (within 0.6 rad of, or up to 0.05 rad past) a limit."""
    if kind == 0:
        return HOME_Q.copy()
    q = rng.uniform(JOINT_LIMITS[:, 0], JOINT_LIMITS[:, 1])
    if kind == 2:
        j, side = rng.integers(7), rng.integers(2)
        q[j] = JOINT_LIMITS[j, side] + rng.uniform(-0.05, 0.6) * (1 if side == 0 else -1)
    return q


def build_scenario(raw: tuple[Any, ...]) -> tuple[SafetyLimits, float, RobotState, float | None]:
    limits_kind, hz, quat_kind, position_kinds, joint_kind, in_contact, prev, seed = raw
    rng = np.random.default_rng(seed)
    limits = build_limits(limits_kind, rng.uniform(size=18))
    cap, _ = translation_cap(limits, hz)
    nominal = np.array(limits.nominal_quat)
    quat = [
        lambda: nominal,
        lambda: unit_quat(rng.normal(size=4)),
        lambda: matrix_to_quat(rotvec_to_matrix(rng.uniform(-1, 1, 3)) @ quat_to_matrix(nominal)),  # <= 1.7 rad
    ][quat_kind]()
    force = 2 * limits.max_contact_force * rng.uniform() if in_contact else 0.0
    state = make_state(
        ee_pos=build_position(limits, cap, position_kinds, rng.uniform(size=3)),
        ee_quat=quat,
        joint_pos=build_joints(joint_kind, rng),
        gripper_width=rng.uniform(0.0, 0.08),
        ee_wrench=[force, 0, 0, 0, 0, 0],
    )
    return limits, hz, state, prev


#: (limits, control_hz, a valid state, previous gripper command). Hypothesis picks the structure (which limits,
#: which side of the box on each axis, joints near a limit or not, ...), a seeded generator fills in the numbers.
scenarios = st.tuples(
    st.integers(0, 2),
    st.sampled_from([10.0, 5.0, 20.0, 100.0]) | st.floats(1.0, 100.0),
    st.integers(0, 2),
    st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4)),
    st.integers(0, 2),
    st.booleans(),
    st.none() | st.floats(0.0, 1.0) | st.sampled_from([math.nan, -0.5, 1.5]),
    st.integers(0, 2**32 - 1),
).map(build_scenario)


def two_sizes(fast: int, slow: int, **strategies: Any) -> Callable[[Callable[..., None]], tuple[Any, Any]]:
    """A property test in two sizes: `fast` examples in the default suite, `slow` under the slow marker."""

    def wrap(fn: Callable[..., None]) -> tuple[Any, Any]:
        def sized(n: int) -> Any:
            return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.too_slow])(
                given(**strategies)(fn)
            )

        return sized(fast), pytest.mark.slow(sized(slow))

    return wrap


# ------------------------------------------------------------------------------------------------ the properties
def _check_envelope(action: np.ndarray, scenario: tuple[SafetyLimits, float, RobotState, float | None]) -> None:
    limits, hz, state, prev = scenario
    result = apply_envelope(action, state, limits, control_hz=hz, previous_gripper=prev)
    out = result.action
    assert out.shape == (7,) and out.dtype == np.float64 and np.all(np.isfinite(out))
    for event in result.events:
        assert event.limit in LIMITS and event.detail
        json.dumps(event.to_dict())

    cap, _ = translation_cap(limits, hz)
    assert np.linalg.norm(out[:3]) <= cap + TOL
    assert np.linalg.norm(out[3:6]) <= limits.max_rot_step + TOL
    assert 0.0 <= out[6] <= 1.0
    if prev is not None and math.isfinite(prev):
        assert abs(out[6] - min(max(prev, 0.0), 1.0)) <= limits.gripper_rate / hz + TOL

    if not np.all(np.isfinite(action)) or np.linalg.norm(state.ee_wrench[:3]) > limits.max_contact_force:
        assert result.held and not np.any(out[:6])
    else:
        assert not result.held
        start, target = state.ee_pos, state.ee_pos + out[:3]
        scaled = "joint_margin" in limits_of(result)
        if box_distance(start, limits) <= cap and not scaled:
            lo, hi = np.array(limits.workspace_min), np.array(limits.workspace_max)
            assert np.all(target >= lo - TOL) and np.all(target <= hi + TOL), (start, target)
        elif scaled:
            assert box_distance(target, limits) <= box_distance(start, limits) + TOL
        else:
            assert box_distance(target, limits) < box_distance(start, limits)

    assert within_limits(out, state, limits, hz, prev) == []


test_envelope_invariants, test_envelope_invariants_slow = two_sizes(2000, 40_000, action=actions, scenario=scenarios)(
    _check_envelope
)
test_envelope_invariants_finite, test_envelope_invariants_finite_slow = two_sizes(
    1500, 30_000, action=finite_actions, scenario=scenarios
)(_check_envelope)


def _check_idempotent(action: np.ndarray, scenario: tuple[SafetyLimits, float, RobotState, float | None]) -> None:
    """An executed action passes the envelope again unchanged (up to rounding) from a state inside the box (from
    outside, every action, zero included, is pulled towards the box)."""
    limits, hz, state, prev = scenario
    state = dataclasses.replace(state, ee_pos=np.clip(state.ee_pos, limits.workspace_min, limits.workspace_max))
    first = apply_envelope(action, state, limits, control_hz=hz, previous_gripper=prev)
    again = apply_envelope(first.action, state, limits, control_hz=hz, previous_gripper=prev)
    np.testing.assert_allclose(again.action, first.action, rtol=0, atol=1e-9)
    assert again.held == first.held


test_envelope_idempotent, test_envelope_idempotent_slow = two_sizes(
    750, 15_000, action=finite_actions, scenario=scenarios
)(_check_idempotent)


def corrupt(kind: int, n: int, valid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`valid`, or n values with NaN / inf entries, huge, arbitrary or all zero (a zero quaternion)."""
    if kind == 0:
        return valid.copy()
    out = rng.normal(size=n) * 10.0 ** rng.integers(-3, 300)
    if kind in (1, 2):
        out[rng.random(n) < 0.5] = math.nan if kind == 1 else -math.inf
        out[rng.integers(n)] = math.nan if kind == 1 else math.inf
    return np.zeros(n) if kind == 4 else out


def build_corrupt_state(raw: tuple[Any, ...]) -> RobotState:
    """Each field valid or corrupted (see `corrupt`): NaN, inf, huge values, zero quaternions."""
    time_bad, width_kind, kinds, seed = raw
    rng = np.random.default_rng(seed)
    valid = (HOME_POS, NOMINAL, np.zeros(6), HOME_Q, np.zeros(7), np.zeros(6))
    arrays = [corrupt(k, len(v), v, rng) for k, v in zip(kinds, valid, strict=True)]
    ee_pos, ee_quat, ee_vel, joint_pos, joint_vel, ee_wrench = arrays
    width = float(corrupt(width_kind, 1, np.array([0.04]), rng)[0])
    return RobotState(
        time=math.nan if time_bad else 0.0,
        ee_pos=ee_pos,
        ee_quat=ee_quat,
        ee_vel=ee_vel,
        joint_pos=joint_pos,
        joint_vel=joint_vel,
        gripper_width=width,
        ee_wrench=ee_wrench,
    )


corrupt_states = st.tuples(
    st.booleans(),
    st.integers(0, 4),
    st.tuples(*[st.integers(0, 4)] * 6),
    st.integers(0, 2**32 - 1),
).map(build_corrupt_state)
any_previous = st.none() | st.floats(allow_nan=True, allow_infinity=True)


def _check_any_state(action: np.ndarray, state: RobotState, prev: float | None) -> None:
    result = apply_envelope(action, state, FRANKA, control_hz=10.0, previous_gripper=prev)
    assert result.action.shape == (7,) and np.all(np.isfinite(result.action))
    assert 0.0 <= result.action[6] <= 1.0
    fields = [
        state.time,
        state.ee_pos,
        state.ee_quat,
        state.ee_vel,
        state.joint_pos,
        state.joint_vel,
        state.gripper_width,
        state.ee_wrench,
    ]
    if not all(np.all(np.isfinite(f)) for f in fields):
        assert result.held and limits_of(result) == ["non_finite_state"]
        assert not np.any(result.action[:6])
    else:
        assert np.linalg.norm(result.action[:3]) <= FRANKA.max_step + TOL
    assert within_limits(result.action, state, FRANKA, 10.0, prev) == []


test_any_state_never_raises, test_any_state_never_raises_slow = two_sizes(
    750, 15_000, action=actions, state=corrupt_states, prev=any_previous
)(_check_any_state)


# ------------------------------------------------------------------------------------------ shapes and arguments
@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(6),
        np.zeros(8),
        np.zeros((7, 1)),
        np.zeros((1, 7)),
        0.0,
        [],
        ["a"] * 7,
        [None] * 7,
        [1, 2, 3, 4, 5, 6, [7]],
        np.zeros(7, dtype=bool),
        np.zeros(7, dtype=complex),
        "0123456",
        {"dx": 0.0},
    ],
)
def test_wrong_shape_or_type_raises_naming_the_expected_shape(bad: Any) -> None:
    with pytest.raises(SafetyShapeError, match=r"\(7,\)") as info:
        apply_envelope(bad, make_state(), DEFAULT, control_hz=10.0)
    assert isinstance(info.value, ValueError)


def test_integer_and_float32_actions_are_accepted() -> None:
    assert apply_envelope([0] * 7, make_state(), DEFAULT, control_hz=10.0).events == ()
    out = apply_envelope(np.zeros(7, np.float32), make_state(), DEFAULT, control_hz=10.0).action
    assert out.dtype == np.float64


@pytest.mark.parametrize("hz", [0.0, -10.0, math.nan, math.inf])
def test_bad_control_rate_raises(hz: float) -> None:
    with pytest.raises(ValueError, match="control_hz"):
        apply_envelope(np.zeros(7), make_state(), DEFAULT, control_hz=hz)


def test_in_range_action_passes_unchanged() -> None:
    a = act([0.005, -0.003, 0.002], [0.01, -0.02, 0.03], 0.2)
    result = apply_envelope(a, make_state(), DEFAULT, control_hz=10.0, previous_gripper=0.0)
    assert result.events == () and not result.held and not result.clipped
    np.testing.assert_array_equal(result.action, a)


# ---------------------------------------------------------------------------------------------- one per event
def test_non_finite_action_holds() -> None:
    result = apply_envelope(act([np.nan, 0, 0], g=1.0), make_state(), DEFAULT, control_hz=10.0, previous_gripper=0.3)
    assert result.held and limits_of(result) == ["non_finite"]
    np.testing.assert_array_equal(result.action, [0, 0, 0, 0, 0, 0, 0.3])
    assert "[0]" in result.events[0].detail


@pytest.mark.parametrize(
    ("width", "prev", "gripper"),
    [
        (0.08, None, 0.0),  # wide open: stays open
        (0.0, None, 1.0),  # closed on nothing
        (0.04, None, 1.0),  # closed on an object: must not drop it
        (0.04, 0.0, 0.0),  # the previous command wins
        (0.0, 1.7, 1.0),  # ... clipped to [0, 1]
        (0.08, math.nan, 0.0),  # a non-finite previous command is ignored
    ],
)
def test_hold_keeps_the_gripper(width: float, prev: float | None, gripper: float) -> None:
    state = make_state(gripper_width=width)
    assert hold_action(state, prev)[6] == gripper
    result = apply_envelope(act(g=math.inf), state, DEFAULT, control_hz=10.0, previous_gripper=prev)
    assert result.held and result.action[6] == gripper


@pytest.mark.parametrize(
    "field", ["time", "ee_pos", "ee_quat", "ee_vel", "joint_pos", "joint_vel", "gripper_width", "ee_wrench"]
)
def test_non_finite_state_holds(field: str) -> None:
    state = make_state()
    value = getattr(state, field)
    bad = math.nan if np.ndim(value) == 0 else np.where(np.arange(np.size(value)) == 0, math.inf, value)
    state = RobotState(**{**state.__dict__, field: bad})
    result = apply_envelope(act([0.01, 0, 0]), state, DEFAULT, control_hz=10.0, previous_gripper=1.0)
    assert result.held and limits_of(result) == ["non_finite_state"]
    assert field in result.events[0].detail
    np.testing.assert_array_equal(result.action, [0, 0, 0, 0, 0, 0, 1.0])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ee_pos", np.zeros(2)),
        ("joint_pos", np.zeros(6)),
        ("ee_quat", np.zeros(4)),
        ("ee_wrench", "heavy"),
        ("joint_vel", None),
    ],
)
def test_malformed_state_holds(field: str, value: Any) -> None:
    state = RobotState(**{**make_state().__dict__, field: value})
    result = apply_envelope(act([0.01, 0, 0]), state, DEFAULT, control_hz=10.0)
    assert result.held and limits_of(result) == ["invalid_state"]
    assert field in result.events[0].detail


def test_contact_force_holds() -> None:
    state = make_state(ee_wrench=[25.0, 0.0, 25.0, 0.0, 0.0, 9.0])  # 35 N > 30 N
    result = apply_envelope(act([0, 0, -0.01], g=1.0), state, DEFAULT, control_hz=10.0, previous_gripper=1.0)
    assert result.held and limits_of(result) == ["contact_force"]
    event = result.events[0]
    assert event.proposed == pytest.approx(math.hypot(25, 25)) and event.clipped == DEFAULT.max_contact_force
    np.testing.assert_array_equal(result.action, [0, 0, 0, 0, 0, 0, 1.0])
    torque_only = make_state(ee_wrench=[0, 0, 0, 50.0, 50.0, 50.0])  # torques are not forces
    assert not apply_envelope(act(), torque_only, DEFAULT, control_hz=10.0).held


def test_translation_cap_keeps_direction() -> None:
    result = apply_envelope(act([0.3, 0.4, 0.0]), make_state(), DEFAULT, control_hz=10.0)
    np.testing.assert_allclose(result.action[:3], [0.012, 0.016, 0.0])
    assert limits_of(result) == ["max_step"]
    assert result.events[0].proposed == pytest.approx(0.5) and result.events[0].clipped == DEFAULT.max_step


def test_speed_cap_applies_at_high_rates() -> None:
    cap, name = translation_cap(DEFAULT, 100.0)
    assert (cap, name) == (pytest.approx(0.0025), "max_ee_speed")
    result = apply_envelope(act([0.0, 0.0, 0.01]), make_state(), DEFAULT, control_hz=100.0)
    np.testing.assert_allclose(result.action[:3], [0, 0, 0.0025])
    assert limits_of(result) == ["max_ee_speed"]


def test_steps_at_the_cap_pass_unchanged() -> None:
    """A policy that caps its own step (norm * cap / norm) may land an ulp above the cap: that is not an event."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        d, rv = rng.normal(size=3), rng.normal(size=3)
        a = act(d * DEFAULT.max_step / np.linalg.norm(d), rv * DEFAULT.max_rot_step / np.linalg.norm(rv), 0.0)
        result = apply_envelope(a, make_state(), DEFAULT, control_hz=10.0, previous_gripper=0.0)
        assert result.events == ()
        np.testing.assert_array_equal(result.action, a)


def test_huge_translation_keeps_direction() -> None:
    result = apply_envelope(act([1e308, 1e308, 0.0]), make_state(), DEFAULT, control_hz=10.0)
    np.testing.assert_allclose(result.action[:3], [0.02 / math.sqrt(2)] * 2 + [0.0])
    assert result.events[0].proposed == math.inf or result.events[0].proposed > 1e308


def test_rotation_cap() -> None:
    result = apply_envelope(act(rv=[0.0, 0.0, 0.3]), make_state(), DEFAULT, control_hz=10.0)
    np.testing.assert_allclose(result.action[3:6], [0.0, 0.0, 0.1])
    assert limits_of(result) == ["max_rot_step"]


def test_workspace_clips_the_target() -> None:
    state = make_state(ee_pos=[0.5, 0.0, 0.03])
    result = apply_envelope(act([0.0, 0.0, -0.02]), state, DEFAULT, control_hz=10.0)
    np.testing.assert_allclose(state.ee_pos + result.action[:3], [0.5, 0.0, DEFAULT.workspace_min[2]])
    assert limits_of(result) == ["workspace"]
    event = result.events[0]
    assert event.proposed == pytest.approx((0.5, 0.0, 0.01)) and event.clipped == pytest.approx((0.5, 0.0, 0.02))


def test_outside_within_a_cap_lands_in_the_box() -> None:
    state = make_state(ee_pos=[0.5, 0.0, DEFAULT.workspace_max[2] + 0.015])  # 1.5 cm above the box
    result = apply_envelope(act([0.0, 0.0, 0.02]), state, DEFAULT, control_hz=10.0)  # asks to go further up
    np.testing.assert_allclose(state.ee_pos + result.action[:3], [0.5, 0.0, DEFAULT.workspace_max[2]])
    assert limits_of(result) == ["outside_workspace"]


def test_outside_far_moves_a_cap_towards_the_box() -> None:
    state = make_state(ee_pos=[0.5, 0.0, DEFAULT.workspace_max[2] + 0.1])
    for d in ([0.0, 0.0, 0.0], [0.0, 0.0, 0.02], [0.02, 0.0, 0.0]):  # even a zero action moves it back
        result = apply_envelope(act(d), state, DEFAULT, control_hz=10.0)
        np.testing.assert_allclose(result.action[:3], [0.0, 0.0, -0.02])
        assert limits_of(result) == ["outside_workspace"]
        assert "outside" in result.events[0].detail


def test_outside_with_a_move_into_the_box_keeps_it() -> None:
    state = make_state(ee_pos=[0.5, 0.0, DEFAULT.workspace_max[2] + 0.005])
    result = apply_envelope(act([0.01, 0.0, -0.015]), state, DEFAULT, control_hz=10.0)
    np.testing.assert_allclose(result.action[:3], [0.01, 0.0, -0.015])
    assert limits_of(result) == ["outside_workspace"]


def test_orientation_tilt_limit() -> None:
    limits = SafetyLimits(max_tilt=0.05)
    result = apply_envelope(act(rv=[0.1, 0.0, 0.0]), make_state(), limits, control_hz=10.0)
    assert limits_of(result) == ["orientation"]
    tilt, _ = tilt_yaw(rotvec_to_matrix(result.action[3:6]) @ HOME_ROT, quat_to_matrix(NOMINAL))
    assert 0.049 < tilt <= 0.05
    event = result.events[0]
    assert event.proposed[0] == pytest.approx(0.1, abs=1e-3) and event.clipped[0] == pytest.approx(tilt)


def test_orientation_yaw_limit() -> None:
    limits = SafetyLimits(max_yaw=0.05)
    state = make_state(ee_quat=NOMINAL)
    result = apply_envelope(act(rv=[0.0, 0.0, -0.1]), state, limits, control_hz=10.0)
    assert limits_of(result) == ["orientation"]
    _, yaw = tilt_yaw(rotvec_to_matrix(result.action[3:6]) @ quat_to_matrix(NOMINAL), quat_to_matrix(NOMINAL))
    assert 0.049 < abs(yaw) <= 0.05
    assert apply_envelope(act(rv=[0.0, 0.0, 0.04]), state, limits, control_hz=10.0).events == ()


def test_default_yaw_is_unlimited() -> None:
    state = make_state(ee_quat=matrix_to_quat(rotvec_to_matrix([0, 0, 3.1]) @ quat_to_matrix(NOMINAL)))
    assert apply_envelope(act(rv=[0, 0, 0.1]), state, DEFAULT, control_hz=10.0).events == ()


def test_orientation_beyond_the_limit_may_only_improve() -> None:
    limits = SafetyLimits(max_tilt=0.2)
    tilted = matrix_to_quat(rotvec_to_matrix([0.3, 0.0, 0.0]) @ quat_to_matrix(NOMINAL))
    state = make_state(ee_quat=tilted)
    worse = apply_envelope(act(rv=[0.05, 0.0, 0.0]), state, limits, control_hz=10.0)
    assert limits_of(worse) == ["orientation"] and np.allclose(worse.action[3:6], 0.0, atol=1e-8)
    better = apply_envelope(act(rv=[-0.05, 0.0, 0.0]), state, limits, control_hz=10.0)
    assert better.events == () and better.action[3] == -0.05


def test_joint_margin_scales_the_step() -> None:
    limits = SafetyLimits(max_step=0.05, max_rot_step=0.5, max_ee_speed=1.0)
    q = HOME_Q.copy()
    q[0] = JOINT_LIMITS[0, 1] - limits.joint_margin - 0.01  # 1 cm-rad short of the margin
    step = base_yaw_step(q, 0.04)
    state = make_state(ee_pos=[0.5, 0.0, 0.3], ee_quat=matrix_to_quat(fk(q)[1]), joint_pos=q)
    result = apply_envelope(np.concatenate([step, [0.0]]), state, limits, control_hz=10.0)
    assert limits_of(result) == ["joint_margin"]
    event = result.events[0]
    assert "joint 1" in event.detail
    assert event.proposed == pytest.approx(q[0] + predict_joint_step(q, step)[0])  # redundancy: other joints help
    assert event.clipped == pytest.approx(JOINT_LIMITS[0, 1] - limits.joint_margin, abs=1e-6)
    q_next = q + predict_joint_step(q, result.action[:6])
    assert q_next[0] <= JOINT_LIMITS[0, 1] - limits.joint_margin + 1e-8


def test_inside_the_joint_margin_may_only_move_away() -> None:
    limits = SafetyLimits(max_step=0.05, max_rot_step=0.5, max_ee_speed=1.0)
    q = HOME_Q.copy()
    q[0] = JOINT_LIMITS[0, 1] - 0.05  # inside the 0.1 rad margin
    state = make_state(ee_pos=[0.5, 0.0, 0.3], ee_quat=matrix_to_quat(fk(q)[1]), joint_pos=q)
    towards = apply_envelope(np.concatenate([base_yaw_step(q, 0.02), [0.0]]), state, limits, control_hz=10.0)
    assert limits_of(towards) == ["joint_margin"]
    np.testing.assert_allclose(towards.action[:6], 0.0, atol=1e-8)
    away = apply_envelope(np.concatenate([base_yaw_step(q, -0.02), [0.0]]), state, limits, control_hz=10.0)
    assert away.events == ()


def test_joint_beyond_its_limit_may_only_move_away() -> None:
    q = HOME_Q.copy()
    q[3] = JOINT_LIMITS[3, 1] + 0.02  # elbow reads past its upper limit
    state = make_state(ee_pos=[0.5, 0.0, 0.3], ee_quat=matrix_to_quat(fk(q)[1]), joint_pos=q)
    result = apply_envelope(act([0.01, 0.0, 0.0]), state, DEFAULT, control_hz=10.0)
    q_next = q + predict_joint_step(q, result.action[:6])
    assert q_next[3] <= q[3] + 1e-8


def test_gripper_range_and_rate() -> None:
    state = make_state()
    result = apply_envelope(act(g=1.8), state, DEFAULT, control_hz=10.0)
    assert result.action[6] == 1.0 and limits_of(result) == ["gripper_range"]
    assert result.events[0].proposed == 1.8 and result.events[0].clipped == 1.0
    result = apply_envelope(act(g=1.0), state, DEFAULT, control_hz=10.0, previous_gripper=0.0)
    assert result.action[6] == pytest.approx(0.5) and limits_of(result) == ["gripper_rate"]
    result = apply_envelope(act(g=-3.0), state, DEFAULT, control_hz=20.0, previous_gripper=1.0)
    assert result.action[6] == pytest.approx(0.75) and limits_of(result) == ["gripper_range", "gripper_rate"]


def test_several_events_in_check_order() -> None:
    state = make_state(ee_pos=[0.5, 0.0, 0.03])
    result = apply_envelope(act([0.0, 0.0, -1.0], [0.0, 0.0, 1.0], 2.0), state, DEFAULT, control_hz=10.0)
    assert limits_of(result) == ["max_step", "max_rot_step", "workspace", "gripper_range"]
    assert event_counts(result.events) == {"max_step": 1, "max_rot_step": 1, "workspace": 1, "gripper_range": 1}


def test_every_event_names_limit_proposed_and_clipped() -> None:
    seen: dict[str, SafetyEvent] = {}
    cases = [
        (act([np.nan, 0, 0]), make_state(), DEFAULT, None),
        (act(), make_state(ee_pos=[np.nan, 0, 0]), DEFAULT, None),
        (act(), make_state(ee_quat=np.zeros(4)), DEFAULT, None),
        (act(), make_state(ee_wrench=[100.0, 0, 0, 0, 0, 0]), DEFAULT, None),
        (act([1.0, 0, 0]), make_state(), DEFAULT, None),
        (act([1.0, 0, 0]), make_state(), SafetyLimits(max_ee_speed=0.05), None),
        (act(rv=[1.0, 0, 0]), make_state(), DEFAULT, None),
        (act([0, 0, -0.02]), make_state(ee_pos=[0.5, 0, 0.03]), DEFAULT, None),
        (act(), make_state(ee_pos=[0.5, 0, 1.0]), DEFAULT, None),
        (act(rv=[0.1, 0, 0]), make_state(), SafetyLimits(max_tilt=0.05), None),
        (TOWARDS_J1_LIMIT, make_state(joint_pos=AT_J1_MARGIN), DEFAULT, None),
        (act(g=2.0), make_state(), DEFAULT, None),
        (act(g=1.0), make_state(), DEFAULT, 0.0),
    ]
    for a, state, limits, prev in cases:
        for event in apply_envelope(a, state, limits, control_hz=10.0, previous_gripper=prev).events:
            seen.setdefault(event.limit, event)
    assert set(seen) == set(LIMITS)
    for event in seen.values():
        record = event.to_dict()
        assert set(record) == {"limit", "proposed", "clipped", "detail"}
        assert record["detail"] and record["limit"] in LIMITS
        assert isinstance(record["proposed"], float | list) and isinstance(record["clipped"], float | list)
        json.loads(json.dumps(record))


# ------------------------------------------------------------------------------------------------ within_limits
def test_within_limits_accepts_exactly_at_cap() -> None:
    a = act([DEFAULT.max_step, 0, 0], [0, 0, DEFAULT.max_rot_step], 0.5)
    assert within_limits(a, make_state(), DEFAULT, 10.0, 0.0) == []
    at_face = make_state(ee_pos=[0.5, 0.0, DEFAULT.workspace_min[2] + 0.02])
    assert within_limits(act([0, 0, -0.02]), at_face, DEFAULT, 10.0) == []


@pytest.mark.parametrize(
    ("action", "state_kw", "prev", "limit"),
    [
        (act([0.021, 0, 0]), {}, None, "max_step"),
        (act(rv=[0.0, 0.11, 0.0]), {}, None, "max_rot_step"),
        (act([0, 0, -0.02]), {"ee_pos": [0.5, 0.0, 0.03]}, None, "workspace"),
        (act([0, 0, 0.01]), {"ee_pos": [0.5, 0.0, 0.7]}, None, "outside_workspace"),
        (act(g=1.01), {}, None, "gripper_range"),
        (act(g=0.6), {}, 0.0, "gripper_rate"),
        (act([0.01, 0, 0]), {"ee_wrench": [0, 0, 31.0, 0, 0, 0]}, None, "contact_force"),
        (act([0.01, 0, 0]), {"joint_pos": [np.nan] * 7}, None, "non_finite_state"),
        (act([np.inf, 0, 0]), {}, None, "non_finite"),
        (
            act(rv=[0.1, 0, 0]),
            {"ee_quat": matrix_to_quat(rotvec_to_matrix([0.75, 0, 0]) @ quat_to_matrix(NOMINAL))},
            None,
            "orientation",
        ),
        (TOWARDS_J1_LIMIT, {"joint_pos": AT_J1_MARGIN}, None, "joint_margin"),
    ],
)
def test_within_limits_names_the_broken_limit(
    action: np.ndarray,
    state_kw: dict[str, Any],
    prev: float | None,
    limit: str,
) -> None:
    events = within_limits(action, make_state(**state_kw), DEFAULT, 10.0, prev)
    assert limit in [e.limit for e in events], events


def test_within_limits_float32_needs_a_looser_tolerance() -> None:
    executed = apply_envelope(act([0.3, 0.1, -0.2], g=1.0), make_state(), DEFAULT, control_hz=10.0).action
    stored = executed.astype(np.float32).astype(np.float64)
    assert within_limits(stored, make_state(), DEFAULT, 10.0, rtol=1e-6) == []


# ------------------------------------------------------------------------------------------------------ config
def test_nominal_quat_must_be_unit() -> None:
    assert SafetyLimits(nominal_quat=(0.0, 0.0, 0.0, 1.0005)).nominal_quat == (0.0, 0.0, 0.0, 1.0)
    for bad in [(0.0, 0.0, 0.0, 2.0), (0.0, 0.0, 0.0, 0.0), (math.nan, 0.0, 0.0, 1.0)]:
        with pytest.raises(ValueError, match="unit quaternion"):
            SafetyLimits(nominal_quat=bad)


def test_home_orientation_is_nominal() -> None:
    tilt, yaw = tilt_yaw(HOME_ROT, quat_to_matrix(DEFAULT.nominal_quat))
    assert tilt < 1e-3 and abs(yaw) < 1e-3


def test_franka_preset_is_not_looser_than_defaults() -> None:
    for name in (
        "max_step",
        "max_rot_step",
        "max_ee_speed",
        "max_tilt",
        "max_yaw",
        "max_contact_force",
        "gripper_rate",
    ):
        assert getattr(FRANKA, name) <= getattr(DEFAULT, name), name
    assert FRANKA.joint_margin >= DEFAULT.joint_margin
    assert all(f >= d for f, d in zip(FRANKA.workspace_min, DEFAULT.workspace_min, strict=True))
    assert all(f <= d for f, d in zip(FRANKA.workspace_max, DEFAULT.workspace_max, strict=True))


def test_an_absurd_joint_reading_holds_the_arm() -> None:
    """A joint read 1e14 rad past its limit: q + dq == q in float64, so no margin check could see the motion."""
    from inril_robot.core.kinematics import JOINT_LIMITS
    from inril_robot.core.safety import SafetyLimits, apply_envelope
    from inril_robot.core.state import RobotState

    q = JOINT_LIMITS.mean(axis=1)
    q[3] = JOINT_LIMITS[3, 1] + 1e14
    state = RobotState(
        time=0.0,
        ee_pos=np.array([0.5, 0.0, 0.4]),
        ee_quat=np.array([1.0, 0.0, 0.0, 0.0]),
        ee_vel=np.zeros(6),
        joint_pos=q,
        joint_vel=np.zeros(7),
        gripper_width=0.04,
        ee_wrench=np.zeros(6),
    )
    result = apply_envelope(np.array([0.01, 0, 0, 0, 0, 0, 0.0]), state, SafetyLimits(), control_hz=10.0)
    assert result.held and result.events[0].limit == "invalid_state" and "joint 4" in result.events[0].detail
    assert np.allclose(result.action[:6], 0.0)
