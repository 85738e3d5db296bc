"""PPO: GAE (termination vs truncation), the episode buffer, and the learner with m = 0 (plain PPO): the clipped
update, target-KL stop, critic warm-up, a bandit sanity check."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from inril_robot.config import FinetuneConfig, PolicyConfig
from inril_robot.learning.inril.learner import InrilLearner
from inril_robot.learning.policies.base import Obs
from inril_robot.learning.policies.gaussian import GaussianPolicy
from inril_robot.learning.policies.normalizer import Normalizer
from inril_robot.learning.rl.buffer import RolloutBuffer, compute_gae
from inril_robot.learning.rl.ppo import Critic, GaussianActor, clipped_surrogate

OBS_STATS = {"ee_pos": {"mean": [0.5, 0.0, 0.2], "std": [0.1, 0.1, 0.1]}}
OBS_SHAPES: dict[str, tuple[int, ...]] = {"ee_pos": (3,)}
A, H = 2, 2


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def make_policy(horizon: int = H) -> GaussianPolicy:
    normalizer = Normalizer(OBS_STATS, {"min": [-1.0] * A, "max": [1.0] * A})
    cfg = PolicyConfig(kind="gaussian", horizon=horizon, act_steps=1, hidden=(32, 32))
    return GaussianPolicy(cfg, normalizer, OBS_SHAPES, A)


def make_obs(batch: int) -> Obs:
    return {"ee_pos": torch.tensor([0.5, 0.0, 0.2]) + 0.1 * torch.randn(batch, 1, 3)}  # (B, To=1, 3)


def bandit_buffer(
    actor: GaussianActor, critic: Critic, episodes: int, rewards_fn: Callable[[Tensor], Tensor] | None = None
) -> RolloutBuffer:
    """One-step episodes (each terminates): the return is the reward. Rewards +-1 at random by default."""
    buf = RolloutBuffer()
    obs = make_obs(episodes)
    sample = actor.sample(obs)
    actions = sample.record["action"]  # (N, H*A)
    rewards = rewards_fn(actions) if rewards_fn is not None else torch.randint(0, 2, (episodes,)).float() * 2 - 1
    with torch.no_grad():
        values = critic(obs)
    for i in range(episodes):
        buf.add_episode(
            {"ee_pos": obs["ee_pos"][i : i + 1]},
            {"action": actions[i : i + 1]},
            sample.log_prob[i : i + 1],
            rewards[i : i + 1],
            values[i : i + 1],
            terminated=True,
        )
    return buf


def ppo_learner(policy: GaussianPolicy, critic_hidden: tuple[int, ...] = (32,), **ppo: object) -> InrilLearner:
    cfg = FinetuneConfig.model_validate(
        {"ppo": {"critic_warmup_iterations": 0, **ppo}, "inril": {"il_every": 0}, "guard": {"enabled": False}}
    )
    actor = GaussianActor(policy)
    return InrilLearner(actor, Critic.for_policy(policy, critic_hidden), cfg, demos=None)


# ------------------------------------------------------------------------------------------------------------ GAE
def test_gae_hand_computed_termination_and_truncation() -> None:
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])  # (T=3, N=2)
    values = torch.tensor([[0.5, 1.0], [1.0, 2.0], [1.5, 0.5]])
    dones = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])  # env 0 terminates after step 1
    trunc = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])  # env 1 is truncated after step 0
    boot = torch.tensor([[0.0, 4.0], [0.0, 0.0], [0.0, 0.0]])  # V(final obs) of env 1's truncated episode
    last_value = torch.tensor([2.0, 1.0])
    adv, ret = compute_gae(rewards, values, dones, trunc, last_value, gamma, lam, boot)
    # env 0: d2 = 3 + .9*2 - 1.5 = 3.3; d1 = 2 - 1 = 1 (no bootstrap, cut); d0 = 1 + .9*1 - .5 = 1.4, A0 = 1.4 + .72*1
    # env 1: d2 = .9*1 - .5 = .4; d1 = 1 + .9*.5 - 2 = -.55, A1 = -.55 + .72*.4; d0 = .9*4 - 1 = 2.6 (bootstrap, cut)
    expected = torch.tensor([[2.12, 2.6], [1.0, -0.262], [3.3, 0.4]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, adv + values)

    no_boot, _ = compute_gae(rewards, values, dones, trunc, last_value, gamma, lam, None)  # truncation as an end
    assert no_boot[0, 1].item() == pytest.approx(-1.0)
    both, _ = compute_gae(
        rewards,
        values,
        dones,
        trunc + torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]),
        last_value,
        gamma,
        lam,
        boot + torch.tensor([[0.0, 0.0], [9.0, 0.0], [0.0, 0.0]]),
    )
    torch.testing.assert_close(both, expected)  # terminated and truncated at once: termination wins


def test_gae_without_ends_is_the_discounted_return() -> None:
    rewards, values = torch.rand(5, 3), torch.rand(5, 3)
    zeros, last = torch.zeros(5, 3), torch.rand(3)
    _, ret = compute_gae(rewards, values, zeros, zeros, last, 0.9, 1.0)  # lambda = 1: Monte-Carlo returns
    expected = last.clone()
    for t in reversed(range(5)):
        expected = rewards[t] + 0.9 * expected
        torch.testing.assert_close(ret[t], expected)


def test_buffer_concatenates_episodes_and_cuts_gae_at_their_ends() -> None:
    buf = RolloutBuffer()
    obs = make_obs(5)
    lp = torch.zeros(5)
    buf.add_episode(
        {"ee_pos": obs["ee_pos"][:2]},
        {"action": torch.zeros(2, 4)},
        lp[:2],
        torch.tensor([0.0, 1.0]),
        torch.tensor([0.5, 0.5]),
        terminated=True,
    )
    buf.add_episode(
        {"ee_pos": obs["ee_pos"][2:]},
        {"action": torch.ones(3, 4)},
        lp[2:],
        torch.zeros(3),
        torch.tensor([0.2, 0.3, 0.4]),
        terminated=False,
        bootstrap_value=2.0,
    )
    buf.compute_returns(gamma=0.5, lam=1.0, bootstrap_truncations=True)
    assert buf.size == 5 and buf.log_probs.shape == (5, 1)
    # episode 1: R1 = 1, R0 = 0 + .5 * 1; episode 2 (truncated, bootstrapped from 2.0): R4 = .5*2, R3 = .5, R2 = .25
    torch.testing.assert_close(buf.returns, torch.tensor([0.5, 1.0, 0.25, 0.5, 1.0]))
    buf.compute_returns(gamma=0.5, lam=1.0, bootstrap_truncations=True, value_range=(0.0, 1.0))
    torch.testing.assert_close(buf.returns[2:], torch.tensor([0.125, 0.25, 0.5]))  # V(final) clamped to 1
    buf.compute_returns(gamma=0.5, lam=1.0)  # default: the time limit ends the episode like a termination
    torch.testing.assert_close(buf.returns[2:], torch.zeros(3))
    batches = list(buf.minibatches(2, torch.Generator().manual_seed(1)))
    assert [len(b) for b in batches] == [2, 2, 1]
    assert sorted(torch.cat(batches).tolist()) == list(range(5))
    b = buf.batch(torch.tensor([3]))
    torch.testing.assert_close(b.record["action"][0], torch.ones(4))
    torch.testing.assert_close(b.obs["ee_pos"][0], obs["ee_pos"][3])
    with pytest.raises(ValueError, match="log_probs"):
        buf.add_episode({"ee_pos": obs["ee_pos"][:2]}, {}, lp[:3], torch.zeros(2), torch.zeros(2), True)


# ------------------------------------------------------------------------------------------------------------ PPO
def test_ppo_update_raises_log_prob_of_positive_advantage_actions() -> None:
    policy = make_policy()
    learner = ppo_learner(policy, epochs=4, minibatch_size=64, target_kl=None, actor_lr=1e-3)
    buf = bandit_buffer(learner.actor, learner.critic, 256, rewards_fn=lambda a: a[:, 0].sign())  # learnable
    buf.compute_returns(0.99, 0.95)
    before = buf.batch(torch.arange(buf.size))
    log_prob, entropy = learner.actor.evaluate(before.obs, before.record)
    _, stats0 = clipped_surrogate(log_prob, before, learner.cfg.ppo, entropy)
    assert stats0["approx_kl"] == pytest.approx(0.0, abs=1e-6) and stats0["clip_fraction"] == 0.0

    stats = learner.update(buf)
    assert 0.0 <= stats["clip_fraction"] <= 1.0 and stats["clip_fraction"] > 0.0
    assert stats["epochs_run"] == 4 and stats["rl_steps"] == 16 and stats["il_steps"] == 0
    with torch.no_grad():
        delta = learner.actor.evaluate(before.obs, before.record)[0][:, 0] - before.log_probs[:, 0]  # (P,)
    adv = before.advantages
    assert delta[adv > 0].mean() > 0 > delta[adv < 0].mean()
    assert (adv * delta.exp()).mean() > adv.mean()  # the surrogate objective improved over ratio = 1
    log_prob, entropy = learner.actor.evaluate(before.obs, before.record)
    _, stats1 = clipped_surrogate(log_prob, before, learner.cfg.ppo, entropy)
    assert stats1["policy_loss"] < stats0["policy_loss"]


def test_target_kl_stops_early() -> None:
    learner = ppo_learner(make_policy(), epochs=10, minibatch_size=64, target_kl=1e-7, actor_lr=1e-3)
    stats = learner.update(bandit_buffer(learner.actor, learner.critic, 256))
    assert stats["early_stopped"] and stats["epochs_run"] < 10
    # the first minibatch is on-policy (KL 0) and steps; the next one sees the KL past the bound and does not step
    assert stats["rl_steps"] == 1


def test_critic_warmup_leaves_actor_bit_identical_and_fits_returns() -> None:
    policy = make_policy()
    learner = ppo_learner(policy, (32, 32), epochs=2, minibatch_size=64, critic_warmup_iterations=5, critic_lr=5e-3)
    buf = bandit_buffer(learner.actor, learner.critic, 256, rewards_fn=lambda a: 2.0 + a[:, 0])
    actor_before = {k: v.clone() for k, v in policy.state_dict().items()}
    losses = [learner.update(buf)["value_loss"] for _ in range(5)]
    for key, value in policy.state_dict().items():
        assert torch.equal(value, actor_before[key]), key
    assert all(p.grad is None for p in policy.parameters())
    assert losses[-1] < 0.5 * losses[0]
    assert learner.schedule.n_rl == 0  # warm-up steps are not actor steps


def test_value_clipping_keeps_the_loss_finite() -> None:
    learner = ppo_learner(make_policy(), epochs=1, minibatch_size=64, clip_value=0.1, critic_warmup_iterations=1)
    stats = learner.update(
        bandit_buffer(learner.actor, learner.critic, 64, rewards_fn=lambda a: torch.full((a.shape[0],), 50.0))
    )
    assert stats["value_loss"] > 0 and torch.isfinite(torch.tensor(stats["value_loss"]))


def test_bandit_moves_the_policy_mean_to_the_target() -> None:
    policy = make_policy(horizon=1)
    target = torch.tensor([0.5, -0.4])  # normalised units

    def reward(actions: Tensor) -> Tensor:
        return -((actions - target) ** 2).sum(-1)  # (N,)

    def mean_error() -> float:
        with torch.no_grad():
            return (policy.distribution(make_obs(1)).mean[0] - target).norm().item()

    learner = ppo_learner(policy, epochs=4, minibatch_size=64, actor_lr=3e-3, critic_lr=5e-3, target_kl=0.1)
    error0 = mean_error()
    for _ in range(40):
        learner.update(bandit_buffer(learner.actor, learner.critic, 128, rewards_fn=reward))
    assert error0 > 0.6
    assert mean_error() < 0.25 * error0


# ---------------------------------------------------------------------------------------------------- episode ends
@pytest.mark.timeout(120)
def test_a_safety_stop_is_terminal_and_never_bootstrapped() -> None:
    """A real MuJoCo safety stop (arm pushed down, contact force over a tightened limit) is reported as a stop, and
    the learner's returns end it at its rewards minus the penalty even when the time limit may bootstrap from a
    critic that promises the maximum everywhere; a time-limit end with the same critic is bootstrapped (clamped)."""
    import numpy as np

    import inril_robot.drivers.sim  # noqa: F401
    from inril_robot.config import load_config
    from inril_robot.learning.inril.finetune import to_buffer
    from inril_robot.learning.rl.rollouts import EpisodeTrace
    from inril_robot.learning.rl.vec_env import HistoryEnv

    cfg = load_config(robot="sim", task="lift", overrides=["safety.max_contact_force=0.5"])
    env = HistoryEnv(cfg, ["ee_pos"], 1)
    try:
        history = env.reset(seed=3)
        for _ in range(cfg.task.max_steps):
            result = env.step(np.array([[0.0, 0.0, -0.01, 0.0, 0.0, 0.0, 1.0]]))
            if result.terminated or result.truncated:
                break
    finally:
        env.close()
    assert result.stopped and result.truncated and not result.terminated  # the env's flags: a stop, not a success

    critic = Critic.for_policy(make_policy(), (8,), value_range=(-0.5, 1.0))
    with torch.no_grad():
        critic.head[-1].bias.fill_(50.0)  # V = 1.0, the most a return can be, on every state
    obs = {"ee_pos": torch.from_numpy(history["ee_pos"]).float()}  # (To=1, 3)
    kept = {"action": torch.zeros(2 * A), "log_prob": torch.zeros(1)}

    def trace(stopped: bool) -> EpisodeTrace:
        return EpisodeTrace(
            seed=0,
            obs=[{"ee_pos": obs["ee_pos"].numpy()}] * 3,
            kept=[kept] * 3,
            rewards=[0.0, 0.0, 0.0],
            steps=3,
            stopped=stopped,
            final_obs={"ee_pos": obs["ee_pos"].numpy()},
        )

    buf = to_buffer([trace(stopped=True), trace(stopped=False)], critic, torch.device("cpu"), stop_penalty=0.5)
    buf.compute_returns(gamma=0.9, lam=1.0, bootstrap_truncations=True, value_range=(-0.5, 1.0))
    stop, timeout = buf.returns[:3], buf.returns[3:]
    torch.testing.assert_close(stop, torch.tensor([-0.5 * 0.81, -0.5 * 0.9, -0.5]))  # the penalty, no V(final)
    torch.testing.assert_close(timeout, torch.tensor([0.729, 0.81, 0.9]))  # gamma^k * V(final) = gamma^k * 1.0


@pytest.mark.timeout(120)
def test_critic_values_stay_within_the_reward_bounds_on_a_sparse_task() -> None:
    """Sparse task (success pays 1 and ends the episode): after updates on episodes that end by success, safety stop
    or time limit, with the time limit bootstrapped by a trusted critic, V on fresh states stays within [0, 1] and
    the logged range says so."""
    policy = make_policy()
    cfg = FinetuneConfig.model_validate(
        {
            "ppo": {
                "critic_warmup_iterations": 0,
                "epochs": 4,
                "minibatch_size": 64,
                "critic_lr": 1e-2,
                "time_limit_bootstrap": "trusted",
                "trusted_critic_ev": -1.0,
            },
            "inril": {"il_every": 0},
            "guard": {"enabled": False},
        }
    )
    critic = Critic.for_policy(policy, (32, 32), value_range=(0.0, 1.0))
    learner = InrilLearner(GaussianActor(policy), critic, cfg, demos=None, value_range=(0.0, 1.0))
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        buf = RolloutBuffer()
        for i in range(36):
            obs = make_obs(5)
            sample = learner.actor.sample(obs, gen)
            with torch.no_grad():
                values = critic(obs)
                final = float(critic(make_obs(1))[0])
            kind = i % 3  # success, safety stop, time limit
            rewards = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0 if kind == 0 else 0.0])
            buf.add_episode(
                obs,
                sample.record,
                sample.log_prob,
                rewards,
                values,
                terminated=kind < 2,
                bootstrap_value=final if kind == 2 else 0.0,
            )
        stats = learner.update(buf)
    assert learner.critic_trusted and stats["bootstrapped_time_limit"]
    with torch.no_grad():
        v = critic(make_obs(2048))
    assert v.min().item() >= 0.0 and v.max().item() <= 1.0
    assert 0.0 <= stats["value_min"] <= stats["value_max"] <= 1.0 and stats["return_max"] <= 1.0
