"""Property tests for inril_robot.core.geometry (rotation vectors, matrices, xyzw quaternions)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inril_robot.core.geometry import (
    matrix_to_quat,
    matrix_to_rotvec,
    quat_to_matrix,
    quat_to_rotvec,
    rotation_error,
    rotvec_to_matrix,
    skew,
    top_down_rotation,
    wrap_angle,
)

MAX_ANGLE = np.pi - 1e-3
ATOL = 1e-8
PROPERTY = settings(max_examples=200, deadline=None)


@st.composite
def rotvecs(draw: st.DrawFn, max_angle: float = MAX_ANGLE) -> np.ndarray:
    """Rotation vectors with angle in [0, max_angle]: a unit axis times an angle (tiny angles included)."""
    axis = np.array(draw(st.lists(st.floats(-1.0, 1.0), min_size=3, max_size=3)))
    norm = float(np.linalg.norm(axis))
    if norm < 1e-3:
        axis, norm = np.array([0.0, 0.0, 1.0]), 1.0
    angle = draw(st.one_of(st.floats(0.0, max_angle), st.floats(0.0, 1e-6), st.floats(max_angle - 1e-2, max_angle)))
    return axis / norm * angle


def assert_rotation(rot: np.ndarray) -> None:
    assert rot.shape == (3, 3)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-10)
    assert np.linalg.det(rot) == pytest.approx(1.0, abs=1e-10)


@PROPERTY
@given(rotvecs())
def test_rotvec_matrix_round_trip(v: np.ndarray) -> None:
    rot = rotvec_to_matrix(v)
    assert_rotation(rot)
    np.testing.assert_allclose(matrix_to_rotvec(rot), v, atol=ATOL)


@PROPERTY
@given(rotvecs())
def test_matrix_quat_round_trip(v: np.ndarray) -> None:
    rot = rotvec_to_matrix(v)
    q = matrix_to_quat(rot)
    assert q.shape == (4,)
    assert np.linalg.norm(q) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(quat_to_matrix(q), rot, atol=ATOL)
    np.testing.assert_allclose(quat_to_rotvec(q), v, atol=ATOL)


@PROPERTY
@given(rotvecs())
def test_quaternion_is_xyzw_with_nonnegative_w(v: np.ndarray) -> None:
    q = matrix_to_quat(rotvec_to_matrix(v))
    angle = float(np.linalg.norm(v))
    assert q[3] >= 0.0
    # xyzw: the vector part is sin(angle/2) * axis, the scalar (last) part cos(angle/2)
    assert q[3] == pytest.approx(np.cos(angle / 2), abs=ATOL)
    axis = v / angle if angle > 0 else np.zeros(3)
    np.testing.assert_allclose(q[:3], np.sin(angle / 2) * axis, atol=ATOL)


@PROPERTY
@given(rotvecs())
def test_quat_sign_does_not_matter(v: np.ndarray) -> None:
    q = matrix_to_quat(rotvec_to_matrix(v))
    np.testing.assert_allclose(quat_to_matrix(-q), quat_to_matrix(q), atol=1e-12)
    np.testing.assert_allclose(quat_to_rotvec(-q), quat_to_rotvec(q), atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(3.0 * q), quat_to_matrix(q), atol=1e-12)  # normalises


@PROPERTY
@given(rotvecs(max_angle=np.pi))
def test_rotation_error_of_equal_orientations_is_zero(r: np.ndarray) -> None:
    rot = rotvec_to_matrix(r)
    np.testing.assert_allclose(rotation_error(rot, rot), np.zeros(3), atol=ATOL)


@PROPERTY
@given(rotvecs(), rotvecs(max_angle=np.pi))
def test_rotation_error_recovers_applied_rotation(v: np.ndarray, r: np.ndarray) -> None:
    current = rotvec_to_matrix(r)
    target = rotvec_to_matrix(v) @ current  # base-frame rotation, as the action convention applies it
    np.testing.assert_allclose(rotation_error(target, current), v, atol=1e-7)


def test_quaternion_order_is_xyzw() -> None:
    a = 0.7
    q = matrix_to_quat(rotvec_to_matrix([0.0, 0.0, a]))
    np.testing.assert_allclose(q, [0.0, 0.0, np.sin(a / 2), np.cos(a / 2)], atol=1e-12)
    np.testing.assert_allclose(matrix_to_quat(np.eye(3)), [0.0, 0.0, 0.0, 1.0])
    # 90 deg about x maps y to z
    rot = quat_to_matrix(np.array([np.sin(np.pi / 4), 0.0, 0.0, np.cos(np.pi / 4)]))
    np.testing.assert_allclose(rot @ [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], atol=1e-12)


def test_half_turn() -> None:
    for axis in np.eye(3):
        rot = rotvec_to_matrix(np.pi * axis)
        assert_rotation(rot)
        q = matrix_to_quat(rot)
        assert q[3] == pytest.approx(0.0, abs=1e-12)
        assert np.linalg.norm(matrix_to_rotvec(rot)) == pytest.approx(np.pi)


def test_skew_is_cross_product() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=3), rng.normal(size=3)
    np.testing.assert_allclose(skew(a) @ b, np.cross(a, b))


@PROPERTY
@given(st.floats(-50.0, 50.0))
def test_wrap_angle(angle: float) -> None:
    w = wrap_angle(angle)
    assert -np.pi <= w < np.pi
    assert np.cos(w) == pytest.approx(np.cos(angle), abs=1e-9)
    assert np.sin(w) == pytest.approx(np.sin(angle), abs=1e-9)


@PROPERTY
@given(st.floats(-np.pi, np.pi))
def test_top_down_rotation(yaw: float) -> None:
    rot = top_down_rotation(yaw)
    assert_rotation(rot)
    np.testing.assert_allclose(rot[:, 2], [0.0, 0.0, -1.0], atol=1e-12)  # tool z points down
    assert wrap_angle(np.arctan2(rot[1, 1], rot[0, 1]) - yaw) == pytest.approx(0.0, abs=1e-9)  # closing axis


def test_observed_quaternion_does_not_flip_at_the_tool_down_home_pose() -> None:
    from inril_robot.core.state import RobotState

    def state(q: np.ndarray) -> RobotState:
        z3, z6, z7 = np.zeros(3), np.zeros(6), np.zeros(7)
        return RobotState(0.0, z3, q, z6, z7, z7, 0.04, z6)

    # tool down is a half turn about x: w = 0, so noise alone decides the sign of w
    a = state(np.array([1.0, 0.0, 0.0, 1e-9]) / np.linalg.norm([1.0, 0.0, 0.0, 1e-9])).proprio()["ee_quat"]
    b = state(-np.array([1.0, 0.0, 0.0, -1e-9]) / np.linalg.norm([1.0, 0.0, 0.0, 1e-9])).proprio()["ee_quat"]
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert a[0] > 0
