"""The commanded reference stays inside the envelope: `safety.bound_reference` over sequences of actions.

Each sequence drives the envelope (`apply_envelope`, from the measured state) and the reference bound (as
`FrankaRobot.apply` does) against a plant that follows the reference with a random lag (never past it; sometimes held
back entirely, as in contact), and checks the reference and the measured pose at every tick. The default run has 100
sequences; ``pytest -m slow tests/test_reference_bounds.py`` runs 10,000. The plant overshoots sometimes, so the
paths for a measured pose beyond the box or tilt/yaw run too. On franky-sim the same checks run against
the real driver in tests/test_franka.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from inril_robot.config import load_config
from inril_robot.core.geometry import matrix_to_quat, matrix_to_rotvec, quat_to_matrix, rotvec_to_matrix
from inril_robot.core.kinematics import fk
from inril_robot.core.safety import (
    REFERENCE_LIMITS,
    SafetyLimits,
    apply_envelope,
    bound_reference,
    reference_violations,
    tilt_yaw,
)
from inril_robot.core.state import RobotState

HOME_Q = np.array([0.0, -0.3, 0.0, -2.4, 0.0, 2.1, 0.785])
FRANKA = load_config(robot="franka")
TICKS = 40


def pose(pos: np.ndarray, rot: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rot, pos
    return out


def state_of(measured: np.ndarray) -> RobotState:
    return RobotState(
        time=0.0,
        ee_pos=measured[:3, 3].copy(),
        ee_quat=matrix_to_quat(measured[:3, :3]),
        ee_vel=np.zeros(6),
        joint_pos=HOME_Q,
        joint_vel=np.zeros(7),
        gripper_width=0.08,
        ee_wrench=np.zeros(6),
    )


def action_sequence(rng: np.random.Generator, limits: SafetyLimits) -> np.ndarray:
    """Wind-up pushes (one direction, up to 3x the caps), noise, and a few huge or non-finite entries."""
    kind = rng.integers(3)
    scale = np.array([limits.max_step] * 3 + [limits.max_rot_step] * 3)
    if kind == 0:
        direction = rng.normal(size=6)
        seq = np.tile(direction / np.abs(direction).max() * scale * rng.uniform(0.5, 3.0), (TICKS, 1))
    elif kind == 1:
        seq = rng.normal(size=(TICKS, 6)) * scale * rng.uniform(0.2, 3.0)
    else:
        seq = np.cumsum(rng.normal(size=(TICKS, 6)) * scale * 0.3, axis=0)
        seq[rng.integers(TICKS, size=2)] = rng.choice([1e6, -1e6, np.nan], size=(2, 6))
    return np.concatenate([seq, rng.uniform(0, 1, size=(TICKS, 1))], axis=1)


OVERSHOOT = 0.3


def plant(measured: np.ndarray, reference: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The arm moves a random fraction of the way to the reference (0: held back), sometimes up to 30% past it (a
    compliant arm's overshoot)."""
    u = rng.random()
    frac = 0.0 if u < 0.15 else rng.uniform(1.0, 1.0 + OVERSHOOT) if u > 0.8 else rng.uniform(0.05, 1.0)
    pos = measured[:3, 3] + frac * (reference[:3, 3] - measured[:3, 3])
    arc = matrix_to_rotvec(reference[:3, :3] @ measured[:3, :3].T)
    return pose(pos, rotvec_to_matrix(frac * arc) @ measured[:3, :3])


def run_sequences(n: int, limits: SafetyLimits, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    lo, hi = np.array(limits.workspace_min), np.array(limits.workspace_max)
    nominal = quat_to_matrix(limits.nominal_quat)
    home_pos, home_rot = fk(HOME_Q)
    counts = {name: 0 for name in (*REFERENCE_LIMITS, "measured_beyond_tilt_yaw")}
    for i in range(n):
        # start anywhere in the box, at any allowed yaw / tilt (often near the limits)
        start_rot = (
            rotvec_to_matrix(np.array([0, 0, rng.uniform(-0.98, 0.98) * limits.max_yaw]))
            @ rotvec_to_matrix(rng.normal(size=3) * limits.max_tilt * 0.3)
            @ nominal
        )
        if tilt_yaw(start_rot, nominal)[0] > limits.max_tilt or abs(tilt_yaw(start_rot, nominal)[1]) > limits.max_yaw:
            start_rot = home_rot
        measured = pose(rng.uniform(lo, hi) if i % 4 else home_pos, start_rot)
        reference = measured.copy()
        gripper = 0.0
        for t, action in enumerate(action_sequence(rng, limits)):
            env = apply_envelope(action, state_of(measured), limits, control_hz=10.0, previous_gripper=gripper)
            gripper = float(env.action[6])
            bounded = bound_reference(reference, measured, env.action[:6], limits)
            reference = bounded.pose
            for e in bounded.events:
                counts[e.limit] += 1
            problems = reference_violations(reference, measured, limits)
            assert not problems, f"sequence {i} tick {t}: {problems}"
            measured = plant(measured, reference, rng)
            # the measured pose: inside, up to the plant's overshoot past a reference that is inside
            tilt, yaw = tilt_yaw(measured[:3, :3], nominal)
            slack, rot_slack = OVERSHOOT * limits.max_ref_gap, OVERSHOOT * limits.max_ref_rot_gap
            assert np.all(measured[:3, 3] >= lo - slack) and np.all(measured[:3, 3] <= hi + slack), (i, t)
            assert tilt <= limits.max_tilt + rot_slack and abs(yaw) <= limits.max_yaw + rot_slack, (i, t, tilt, yaw)
            counts["measured_beyond_tilt_yaw"] += int(tilt > limits.max_tilt or abs(yaw) > limits.max_yaw)
    return counts


@pytest.mark.timeout(120)
def test_reference_and_measured_pose_stay_inside_over_action_sequences() -> None:
    counts = run_sequences(100, FRANKA.safety, seed=0)
    # the sequences do reach every bound: the test exercises them, not only the easy interior
    assert all(v > 0 for v in counts.values()), counts


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_reference_bounds_hold_over_10000_sequences() -> None:
    counts = run_sequences(10_000, FRANKA.safety, seed=1)
    assert all(v > 0 for v in counts.values()), counts


@pytest.mark.timeout(60)
def test_rotation_wind_up_is_bounded_by_the_gap_and_the_yaw_limit() -> None:
    """The issue's wind-up: the largest yaw step every tick while the arm does not turn at all."""
    limits = FRANKA.safety
    measured = pose(fk(HOME_Q)[0], fk(HOME_Q)[1])
    reference = measured.copy()
    for _ in range(30):
        reference = bound_reference(reference, measured, np.array([0, 0, 0, 0, 0, limits.max_rot_step]), limits).pose
    angle = np.linalg.norm(matrix_to_rotvec(reference[:3, :3] @ measured[:3, :3].T))
    assert angle == pytest.approx(limits.max_ref_rot_gap, abs=1e-9)
    # the arm following it up to the yaw limit: the reference stops at max_yaw
    nominal = quat_to_matrix(limits.nominal_quat)
    for _ in range(200):
        reference = bound_reference(reference, measured, np.array([0, 0, 0, 0, 0, limits.max_rot_step]), limits).pose
        measured = reference.copy()
    assert abs(tilt_yaw(reference[:3, :3], nominal)[1]) <= limits.max_yaw + 1e-9
    assert abs(tilt_yaw(reference[:3, :3], nominal)[1]) > limits.max_yaw - 0.01


@pytest.mark.timeout(60)
def test_translation_gap_and_box() -> None:
    limits = FRANKA.safety
    measured = pose(np.array([0.5, 0.0, 0.2]), quat_to_matrix(limits.nominal_quat))
    reference = measured.copy()
    for _ in range(10):
        out = bound_reference(reference, measured, np.array([0.01, 0, 0, 0, 0, 0]), limits)
        reference = out.pose
    assert np.linalg.norm(reference[:3, 3] - measured[:3, 3]) == pytest.approx(limits.max_ref_gap)
    assert [e.limit for e in out.events] == ["reference_gap"]
    edge = pose(np.array([limits.workspace_max[0] - 0.001, 0.0, 0.2]), measured[:3, :3])
    out = bound_reference(edge, edge, np.array([0.01, 0, 0, 0, 0, 0]), limits)
    assert out.pose[0, 3] == limits.workspace_max[0] and [e.limit for e in out.events] == ["reference_workspace"]
    with pytest.raises(ValueError, match="finite"):
        bound_reference(edge, edge, np.array([np.nan, 0, 0, 0, 0, 0]), limits)


@pytest.mark.timeout(60)
def test_franka_config_refuses_steps_the_arm_cannot_follow() -> None:
    from inril_robot.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"safety\.max_rot_step.*0\.6 rad/s.*0\.25 rad/s.*relative_dynamics_factor"):
        load_config(robot="franka", overrides=["safety.max_rot_step=0.06"])
    with pytest.raises(ConfigError, match=r"safety\.max_step x robot\.control_hz"):
        load_config(robot="franka", overrides=["robot.franka.relative_dynamics_factor=0.05"])
    with pytest.raises(ConfigError, match=r"translational_stiffness x translational_error_clip.*max_contact_force"):
        load_config(robot="franka", overrides=["robot.franka.translational_stiffness=3000"])
    # a faster arm allows larger steps; simulation is not checked against Franka dynamics
    load_config(robot="franka", overrides=["robot.franka.relative_dynamics_factor=0.3", "safety.max_rot_step=0.06"])
    load_config(overrides=["safety.max_rot_step=0.2"])
