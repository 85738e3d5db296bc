"""Tests for inril_robot.runtime.gym_env: the Gymnasium ids, spaces, seeding and image observations."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Iterator

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import inril_robot
import inril_robot.drivers.sim
from inril_robot.config import load_config
from inril_robot.runtime.gym_env import ENTRY_POINT, ENV_IDS, InrilGymEnv, register_envs

pytest.importorskip("mujoco")


@pytest.fixture(scope="module")
def lift() -> Iterator[gymnasium.Env]:
    env = gymnasium.make("inril_robot/Lift-v0")
    yield env
    env.close()


@pytest.fixture(scope="module")
def image_env() -> Iterator[InrilGymEnv]:
    env = InrilGymEnv(task="lift", observation="image", image_size=64)
    yield env
    env.close()


def test_version_and_ids_registered() -> None:
    assert inril_robot.__version__ == "0.1.0"
    for task, env_id in ENV_IDS.items():
        spec = gymnasium.spec(env_id)
        assert spec.entry_point == ENTRY_POINT
        assert spec.kwargs == {"task": task}
        assert spec.max_episode_steps == load_config(task=task).task.max_steps  # the preset's time limit
    assert set(ENV_IDS.values()) == {f"inril_robot/{t}-v0" for t in ("Reach", "Lift", "Push", "Peg")}


def test_register_envs_is_idempotent() -> None:
    before = dict(gymnasium.registry)
    register_envs()
    register_envs()
    assert dict(gymnasium.registry) == before


def test_package_import_loads_neither_mujoco_nor_drivers() -> None:
    code = (
        "import sys, gymnasium, inril_robot\n"
        "assert 'inril_robot/Lift-v0' in gymnasium.registry\n"
        "loaded = [m for m in sys.modules if m == 'mujoco' or m.split('.')[0] == 'drivers']\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_make_lift(lift: gymnasium.Env) -> None:
    obs, info = lift.reset(seed=0)
    assert obs in lift.observation_space
    assert set(obs) == {"ee_pos", "ee_quat", "gripper_width", "cube_pos", "cube_quat"}
    assert info["success"] is False
    obs, reward, terminated, truncated, info = lift.step(lift.action_space.sample())
    assert obs in lift.observation_space
    assert isinstance(reward, float) and terminated is False and truncated is False
    assert lift.unwrapped.render() is None  # render_mode None: no camera, nothing rendered


def test_action_space_follows_safety_limits(lift: gymnasium.Env) -> None:
    space = lift.action_space
    assert space.shape == (7,) and space.dtype == np.float32
    np.testing.assert_array_equal(space.low, [-1.0] * 7)  # normalised by default
    np.testing.assert_array_equal(space.high, [1.0] * 7)
    physical = lift.unwrapped.physical_action_space
    np.testing.assert_allclose(physical.low, [-0.02] * 3 + [-0.1] * 3 + [0.0])
    np.testing.assert_allclose(physical.high, [0.02] * 3 + [0.1] * 3 + [1.0])


def test_check_env_lift_state(lift: gymnasium.Env) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at all
        check_env(lift.unwrapped, skip_render_check=True)


def test_image_observations(image_env: InrilGymEnv) -> None:
    obs, _ = image_env.reset(seed=3)
    assert obs in image_env.observation_space
    for key in ("front_rgb", "wrist_rgb"):
        assert obs[key].dtype == np.uint8
        assert obs[key].shape == (64, 64, 3)
        assert obs[key].std() > 0  # a rendered scene, not a blank frame
    assert "cube_pos" not in obs  # image mode: no privileged object state
    space = image_env.observation_space["front_rgb"]
    assert space.dtype == np.uint8 and space.low.min() == 0 and space.high.max() == 255


def test_same_seed_same_first_observation(image_env: InrilGymEnv) -> None:
    other = InrilGymEnv(task="lift", observation="image", image_size=64)
    try:
        first, _ = image_env.reset(seed=11)
        second, _ = other.reset(seed=11)
        assert first.keys() == second.keys()
        for key in first:
            np.testing.assert_array_equal(first[key], second[key], err_msg=key)
        different, _ = other.reset(seed=12)
        assert not np.array_equal(different["front_rgb"], first["front_rgb"])
    finally:
        other.close()


def test_reset_renders_the_new_episode(image_env: InrilGymEnv) -> None:
    a = image_env.reset(seed=1)[0]["front_rgb"]
    b = image_env.reset(seed=2)[0]["front_rgb"]
    assert not np.array_equal(a, b)  # the cube moved: the frame must not be the previous episode's


def test_render_state_mode() -> None:
    env = InrilGymEnv(task="reach", render_mode="rgb_array", image_size=48, overrides=["safety.max_step=0.01"])
    try:
        obs, _ = env.reset(seed=0)
        assert not any(key.endswith("_rgb") for key in obs)  # the render camera is not an observation
        frame = env.render()
        assert frame is not None and frame.shape == (48, 48, 3) and frame.dtype == np.uint8
        assert env.physical_action_space.high[0] == pytest.approx(0.01)
    finally:
        env.close()
    with pytest.raises(ValueError, match="render_mode"):
        InrilGymEnv(task="reach", render_mode="human")  # type: ignore[arg-type]


def test_normalized_actions_map_onto_the_physical_limits() -> None:
    env = InrilGymEnv(task="reach", action_scale="physical")
    try:
        assert env.action_space.high[0] == pytest.approx(0.02)
    finally:
        env.close()
    env = InrilGymEnv(task="reach")
    try:
        env.reset(seed=0)
        _, _, _, _, info = env.step(np.array([1.0, 0, 0, 0, 0, -0.5, 1.0], np.float32))
        executed = info["executed_action"]  # after the envelope: the full-scale x step is the 2 cm cap
        assert executed[0] == pytest.approx(0.02) and executed[1] == pytest.approx(0.0)
        assert executed[5] == pytest.approx(-0.05)  # -0.5 of the 0.1 rad cap
        assert 0.0 < executed[6] <= 1.0  # +1 = closed (the gripper-rate limit may slow the first step)
        assert info["is_success"] is False and info["is_success"] == info["success"]
    finally:
        env.close()
    with pytest.raises(ValueError, match="action_scale"):
        InrilGymEnv(task="reach", action_scale="metres")  # type: ignore[arg-type]


def test_time_limit_from_the_registry() -> None:
    env = gymnasium.make("inril_robot/Reach-v0")
    try:
        env.reset(seed=0)
        steps, truncated, terminated = 0, False, False
        while not (truncated or terminated):
            _, _, terminated, truncated, _ = env.step(np.zeros(7, np.float32))
            steps += 1
        assert truncated and not terminated and steps == 50
    finally:
        env.close()


def test_unclosed_rendering_env_exits_cleanly() -> None:
    code = (
        "import inril_robot.drivers.sim, gymnasium, inril_robot\n"
        "env = gymnasium.make('inril_robot/Reach-v0', render_mode='rgb_array', image_size=32)\n"
        "env.reset(seed=0)\nassert env.render().shape == (32, 32, 3)\n"
    )  # no close()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Exception ignored" not in proc.stderr and "EGL" not in proc.stderr, proc.stderr


@pytest.mark.timeout(300)
def test_stable_baselines3_sac_without_action_space_warning() -> None:
    sb3 = pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gymnasium.make("inril_robot/Reach-v0")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # SB3's "use a symmetric and normalized Box action space" would raise
            sb3_check_env(env.unwrapped)
            model = sb3.SAC(
                "MultiInputPolicy",
                env,
                learning_starts=30,
                batch_size=16,
                train_freq=1,
                policy_kwargs={"net_arch": [32, 32]},
                seed=0,
                device="cpu",
            )
            model.learn(total_timesteps=60)
        action, _ = model.predict(env.reset(seed=1)[0], deterministic=True)
        assert action in env.action_space
    finally:
        env.close()
