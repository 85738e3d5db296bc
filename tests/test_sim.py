"""The simulated FR3 through RobotEnv: state, motion, contact sensing, determinism, rendering, contracts."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from inril_robot.core.contract import ContractMismatch
from inril_robot.core.state import RobotState
from inril_robot.runtime.env import RobotEnv

MakeEnv = Callable[..., RobotEnv]  # the `make_env` fixture (conftest.py)
HOLD = np.zeros(7)


def move(dx: float = 0.0, dy: float = 0.0, dz: float = 0.0, gripper: float = 0.0) -> np.ndarray:
    return np.array([dx, dy, dz, 0.0, 0.0, 0.0, gripper])


def run(env: RobotEnv, action: np.ndarray, steps: int) -> RobotState:
    info: dict = {}
    for _ in range(steps):
        _, _, _, _, info = env.step(action)
    return info["state"]


# ------------------------------------------------------------------------------------------------------- state
def test_robot_state_shapes_at_home(lift_env: RobotEnv) -> None:
    _, info = lift_env.reset(seed=0)
    state = info["state"]
    assert isinstance(state, RobotState)
    assert isinstance(state.time, float)
    assert isinstance(state.gripper_width, float)
    for name, shape in {
        "ee_pos": (3,),
        "ee_quat": (4,),
        "ee_vel": (6,),
        "joint_pos": (7,),
        "joint_vel": (7,),
        "ee_wrench": (6,),
    }.items():
        value = getattr(state, name)
        assert isinstance(value, np.ndarray), name
        assert value.shape == shape, name
        assert np.all(np.isfinite(value)), name
    assert np.linalg.norm(state.ee_quat) == pytest.approx(1.0, abs=1e-9)
    assert state.ee_quat[3] >= 0.0
    assert state.gripper_width == pytest.approx(0.08, abs=2e-3)
    np.testing.assert_allclose(state.joint_pos, lift_env.cfg.robot.home_joints, atol=1e-9)
    np.testing.assert_allclose(state.ee_vel, 0.0, atol=1e-9)
    # home is inside the workspace, above the table, gripper pointing down
    safety = lift_env.cfg.safety
    assert np.all(state.ee_pos > safety.workspace_min) and np.all(state.ee_pos < safety.workspace_max)


def test_state_stays_valid_after_steps(lift_env: RobotEnv) -> None:
    lift_env.reset(seed=1)
    state = run(lift_env, move(0.01, 0.01, -0.01), 3)
    assert state.time > 0.0
    assert np.linalg.norm(state.ee_quat) == pytest.approx(1.0, abs=1e-9)
    assert state.ee_pos.shape == (3,) and state.joint_pos.shape == (7,)


def test_observation_matches_contract(lift_env: RobotEnv) -> None:
    obs, _ = lift_env.reset(seed=0)
    lift_env.contract.check_observation(obs)
    assert set(obs) == {"ee_pos", "ee_quat", "gripper_width", "cube_pos", "cube_quat"}
    obs, reward, terminated, truncated, _ = lift_env.step(HOLD)
    lift_env.contract.check_observation(obs)
    assert (reward, terminated, truncated) == (0.0, False, False)


def test_step_rejects_wrong_action_shape(lift_env: RobotEnv) -> None:
    lift_env.reset(seed=0)
    with pytest.raises(ContractMismatch, match="action_dim"):
        lift_env.step(np.zeros(6))


# ------------------------------------------------------------------------------------------------------ motion
def test_translation_action_moves_tcp(lift_env: RobotEnv) -> None:
    _, info = lift_env.reset(seed=0)
    start = info["state"].ee_pos.copy()
    end = run(lift_env, move(dx=0.02), 5).ee_pos
    delta = end - start
    assert delta[0] == pytest.approx(0.10, abs=0.015)
    assert abs(delta[1]) < 0.01
    assert abs(delta[2]) < 0.01


def test_hold_keeps_pose(lift_env: RobotEnv) -> None:
    _, info = lift_env.reset(seed=0)
    start = info["state"].ee_pos.copy()
    end = run(lift_env, HOLD, 5).ee_pos
    np.testing.assert_allclose(end, start, atol=2e-3)


def test_gripper_closes_and_opens(lift_env: RobotEnv) -> None:
    lift_env.reset(seed=0)
    assert run(lift_env, move(gripper=1.0), 5).gripper_width < 0.005  # nothing between the fingers
    assert run(lift_env, move(gripper=0.0), 5).gripper_width == pytest.approx(0.08, abs=3e-3)


def test_workspace_clips_targets(lift_env: RobotEnv) -> None:
    lift_env.reset(seed=0)
    state = run(lift_env, move(dz=0.02), 20)  # home is at z ~0.33; the box stops at 0.55
    assert state.ee_pos[2] <= lift_env.cfg.safety.workspace_max[2] + 0.01


# ----------------------------------------------------------------------------------------------------- contact
def test_external_wrench_free_space_and_contact(make_env: MakeEnv) -> None:
    # reach has no colliding objects; lower the workspace floor so the fingers can be pressed into the table
    env = make_env("reach", overrides=["safety.workspace_min=[0.25, -0.35, -0.05]"])
    _, info = env.reset(seed=0)
    np.testing.assert_allclose(info["state"].ee_wrench, 0.0, atol=1e-6)
    free = run(env, move(dz=-0.02), 5)  # still well above the table
    assert free.ee_pos[2] > 0.15
    assert np.linalg.norm(free.ee_wrench[:3]) < 0.1
    for _ in range(15):  # through the driver: the env would stop the arm above safety.max_contact_force
        env.robot.apply(move(dz=-0.02))
    pressed = env.robot.state()
    force = pressed.ee_wrench[:3]
    assert np.linalg.norm(force) > 1.0
    assert force[2] > 1.0  # the table pushes the hand up
    assert pressed.ee_pos[2] < 0.05


# ------------------------------------------------------------------------------------------------- determinism
def _expert_trajectory(env: RobotEnv, seed: int, steps: int = 20) -> np.ndarray:
    _, info = env.reset(seed=seed)
    positions = [info["state"].ee_pos.copy()]
    for _ in range(steps):
        _, _, terminated, truncated, info = env.step(env.expert_action())
        positions.append(info["state"].ee_pos.copy())
        if terminated or truncated:
            break
    return np.array(positions)


def test_same_seed_same_trajectory(make_env: MakeEnv) -> None:
    a = _expert_trajectory(make_env("lift"), seed=7)
    b = _expert_trajectory(make_env("lift"), seed=7)
    assert a.shape == (21, 3)
    np.testing.assert_array_equal(a, b)
    assert np.linalg.norm(a[-1] - a[0]) > 0.05  # the expert actually moved


def test_reset_with_same_seed_reproduces_on_one_env(lift_env: RobotEnv) -> None:
    a = _expert_trajectory(lift_env, seed=3, steps=10)
    b = _expert_trajectory(lift_env, seed=3, steps=10)
    np.testing.assert_array_equal(a, b)


def test_different_seeds_different_initial_poses(lift_env: RobotEnv) -> None:
    poses = []
    for seed in range(5):
        obs, _ = lift_env.reset(seed=seed)
        poses.append(np.concatenate([obs["cube_pos"], obs["cube_quat"]]))
    for i in range(len(poses)):
        for j in range(i + 1, len(poses)):
            assert not np.allclose(poses[i], poses[j]), (i, j)
    obs, _ = lift_env.reset(seed=0)
    np.testing.assert_array_equal(np.concatenate([obs["cube_pos"], obs["cube_quat"]]), poses[0])


def test_initial_object_poses_within_range(make_env: MakeEnv) -> None:
    env = make_env("push")
    r = env.cfg.task.object_range
    for seed in range(10):
        obs, _ = env.reset(seed=seed)
        assert abs(obs["cube_pos"][0] - 0.5) <= r + 1e-6
        assert abs(obs["cube_pos"][1] + 0.08) <= r + 1e-6
        assert obs["cube_pos"][2] == pytest.approx(0.025, abs=1e-6)


# --------------------------------------------------------------------------------------------------- rendering
RENDER_OVERRIDES = ["cameras.front.width=96", "cameras.front.height=64"]


def test_rendering_front_and_wrist(make_env: MakeEnv) -> None:
    env = make_env("lift", cameras="sim_front_wrist", overrides=RENDER_OVERRIDES)
    obs, _ = env.reset(seed=0)
    front, wrist = obs["front_rgb"], obs["wrist_rgb"]
    assert front.shape == (64, 96, 3) and front.dtype == np.uint8
    assert wrist.shape == (128, 128, 3) and wrist.dtype == np.uint8
    assert float(front.std()) > 5.0
    assert float(wrist.std()) > 5.0
    env.contract.check_observation(obs)
    assert env.contract.cameras == {"front": (64, 96), "wrist": (128, 128)}

    obs, *_ = env.step(env.expert_action())
    env.contract.check_observation(obs)
    for _ in range(4):
        obs, *_ = env.step(env.expert_action())
    assert not np.array_equal(obs["wrist_rgb"], wrist)  # the wrist camera moved with the hand


def test_state_and_image_contracts_differ(make_env: MakeEnv) -> None:
    image_env = make_env("lift", cameras="sim_front_wrist", overrides=RENDER_OVERRIDES)
    state_env = make_env("lift")
    with pytest.raises(ContractMismatch) as exc:
        state_env.contract.require_match(image_env.contract)
    assert exc.value.field == "observations.front_rgb"
    assert "observations.front_rgb" in str(exc.value)
    assert "observations.wrist_rgb" in str(exc.value)
    # the same config builds the same contract
    make_env("lift").contract.require_match(state_env.contract)


def test_image_observation_mode_drops_privileged_state(make_env: MakeEnv) -> None:
    env = make_env("lift", cameras="sim_front", overrides=["task.observation=image"])
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"ee_pos", "ee_quat", "gripper_width", "front_rgb"}
    env.contract.check_observation(obs)
