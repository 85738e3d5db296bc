"""The scripted experts solve their tasks in simulation (they generate the IL demonstrations).

Each task runs 50 seeded episodes (~0.5 s for reach up to ~10 s for peg on one core).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from inril_robot.runtime.env import RobotEnv

MakeEnv = Callable[..., RobotEnv]  # the `make_env` fixture (conftest.py)
EPISODES = 50
MIN_SUCCESS_RATE = 0.9


def run_episode(env: RobotEnv, seed: int) -> tuple[bool, int]:
    """(success, steps) of one expert episode from `env.reset(seed=seed)`; `env.step` applies the safety envelope
    exactly as in `collect`."""
    env.reset(seed=seed)
    steps = 0
    while True:
        _, _, terminated, truncated, _ = env.step(env.expert_action())
        steps += 1
        if terminated or truncated:
            return terminated, steps


@pytest.mark.timeout(120)
@pytest.mark.parametrize("task", ["reach", "lift", "push", "peg"])
def test_scripted_expert_succeeds(make_env: MakeEnv, task: str) -> None:
    env = make_env(task)
    assert env.cfg.task.expert_noise == 0.0
    failed = [seed for seed in range(EPISODES) if not run_episode(env, seed)[0]]
    rate = 1.0 - len(failed) / EPISODES
    assert rate >= MIN_SUCCESS_RATE, f"{task}: expert succeeded in {rate:.0%} of {EPISODES} episodes; failed {failed}"


def test_expert_action_before_reset_raises(make_env: MakeEnv) -> None:
    env = make_env("reach")
    with pytest.raises(RuntimeError, match="reset"):
        env.expert_action()


def test_expert_actions_respect_step_limits(make_env: MakeEnv) -> None:
    env = make_env("lift")
    safety = env.cfg.safety
    env.reset(seed=0)
    for _ in range(30):
        action = env.expert_action()
        assert action.shape == (7,)
        assert np.linalg.norm(action[:3]) <= safety.max_step + 1e-9
        assert np.linalg.norm(action[3:6]) <= safety.max_rot_step + 1e-9
        assert 0.0 <= action[6] <= 1.0
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break


def test_noisy_expert_runs_and_differs(make_env: MakeEnv) -> None:
    clean = make_env("lift")
    noisy = make_env("lift", overrides=["task.expert_noise=0.5"])
    assert noisy.cfg.task.expert_noise == 0.5
    obs_clean, _ = clean.reset(seed=0)
    obs_noisy, _ = noisy.reset(seed=0)
    for key in obs_clean:  # noise only touches actions: same initial scene
        np.testing.assert_array_equal(obs_clean[key], obs_noisy[key])

    a_clean, a_noisy = clean.expert_action(), noisy.expert_action()
    assert a_noisy.shape == (7,) and np.all(np.isfinite(a_noisy))
    assert not np.allclose(a_noisy[:3], a_clean[:3], atol=1e-6)
    np.testing.assert_allclose(a_noisy[3:], a_clean[3:])  # only the translation is perturbed

    # a whole noisy episode still runs to the end through the env (actions pass the contract)
    differing = 0
    noisy.reset(seed=1)
    clean.reset(seed=1)
    for _ in range(noisy.cfg.task.max_steps):
        action = noisy.expert_action()
        differing += not np.allclose(action[:3], clean.expert_action()[:3], atol=1e-6)
        clean.step(action)  # keep both envs in the same state
        _, _, terminated, truncated, _ = noisy.step(action)
        if terminated or truncated:
            break
    assert differing > 0
