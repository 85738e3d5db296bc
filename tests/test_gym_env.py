"""Tests for inril_robot.tasks.gym_env: the Gymnasium ids, spaces, seeding and image observations."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Iterator

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import drivers.sim  # noqa: F401 - picks the GL backend: must come before mujoco's first import
import inril_robot
from inril_robot.tasks.gym_env import ENTRY_POINT, ENV_IDS, InrilGymEnv, register_envs

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
        assert spec.max_episode_steps is None
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
    np.testing.assert_allclose(space.low, [-0.02] * 3 + [-0.1] * 3 + [0.0])
    np.testing.assert_allclose(space.high, [0.02] * 3 + [0.1] * 3 + [1.0])


def test_check_env_lift_state(lift: gymnasium.Env) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*infinity.*")  # unbounded float observations, by design
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
        assert env.action_space.high[0] == pytest.approx(0.01)
    finally:
        env.close()
    with pytest.raises(ValueError, match="render_mode"):
        InrilGymEnv(task="reach", render_mode="human")  # type: ignore[arg-type]
