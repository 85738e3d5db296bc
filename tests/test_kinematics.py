"""inril_robot.core.kinematics against the MuJoCo FR3 model (the sim base frame is MuJoCo's world frame)."""

import inril_robot.drivers.sim  # noqa: F401, I001  (selects the GL backend before mujoco is imported)

import mujoco
import numpy as np
import pytest

from inril_robot.drivers.sim.world import SimWorld
from inril_robot.config import RobotConfig
from inril_robot.core.geometry import rotation_error, rotvec_to_matrix
from inril_robot.core.kinematics import JOINT_LIMITS, fk, jacobian


@pytest.fixture(scope="module")
def world() -> SimWorld:
    return SimWorld(RobotConfig())


def random_joints(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(JOINT_LIMITS[:, 0], JOINT_LIMITS[:, 1], size=(n, 7))


def test_joint_limits_match_the_model(world: SimWorld) -> None:
    np.testing.assert_allclose(JOINT_LIMITS, world.joint_range, atol=1e-9)


def test_fk_matches_mujoco_tcp_site(world: SimWorld) -> None:
    rng = np.random.default_rng(0)
    configs = np.vstack([random_joints(rng, 200), JOINT_LIMITS[:, 0], JOINT_LIMITS[:, 1], world.home_q])
    for q in configs:
        world.data.qpos[world.arm_qpos] = q
        mujoco.mj_kinematics(world.model, world.data)
        site_pos, site_rot = world.tcp_pose()
        pos, rot = fk(q)
        assert np.linalg.norm(pos - site_pos) < 1e-3, q
        assert np.linalg.norm(rotation_error(rot, site_rot)) < 0.01, q
        np.testing.assert_allclose(pos, site_pos, atol=1e-6)  # in fact it agrees far below the 1 mm requirement
    world.reset_arm()


def test_home_pose_points_the_gripper_down(world: SimWorld) -> None:
    _, rot = fk(world.home_q)
    np.testing.assert_allclose(rot[:, 2], [0.0, 0.0, -1.0], atol=1e-3)


def test_jacobian_matches_finite_differences() -> None:
    rng = np.random.default_rng(1)
    eps = 1e-6
    for q in random_joints(rng, 50):
        jac = jacobian(q)
        for i in range(7):
            dq = np.zeros(7)
            dq[i] = eps
            pos_p, rot_p = fk(q + dq)
            pos_m, rot_m = fk(q - dq)
            np.testing.assert_allclose(jac[:3, i], (pos_p - pos_m) / (2 * eps), atol=1e-7)
            np.testing.assert_allclose(jac[3:, i], rotation_error(rot_p, rot_m) / (2 * eps), atol=1e-7)


def test_jacobian_matches_mujoco(world: SimWorld) -> None:
    rng = np.random.default_rng(2)
    jp, jr = np.zeros((3, world.model.nv)), np.zeros((3, world.model.nv))
    for q in random_joints(rng, 20):
        world.data.qpos[world.arm_qpos] = q
        mujoco.mj_kinematics(world.model, world.data)
        mujoco.mj_comPos(world.model, world.data)
        mujoco.mj_jacSite(world.model, world.data, jp, jr, world.tcp_site)
        expected = np.vstack([jp[:, world.arm_dof], jr[:, world.arm_dof]])
        np.testing.assert_allclose(jacobian(q), expected, atol=1e-6)
    world.reset_arm()


def test_small_joint_step_predicts_the_pose_change() -> None:
    q = np.array([0.1, -0.3, 0.2, -2.2, 0.1, 2.0, 0.7])
    dq = np.full(7, 1e-4)
    pos, rot = fk(q)
    twist = jacobian(q) @ dq
    pos2, rot2 = fk(q + dq)
    np.testing.assert_allclose(pos2, pos + twist[:3], atol=1e-7)
    np.testing.assert_allclose(rot2, rotvec_to_matrix(twist[3:]) @ rot, atol=1e-7)


def test_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\(7,\)"):
        fk(np.zeros(6))
