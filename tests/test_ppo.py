"""PPO: GAE (termination vs truncation), the clipped update, target-KL stop, critic warm-up, a bandit sanity check."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from inril_robot.config import PolicyConfig
from inril_robot.policies.base import Obs
from inril_robot.policies.gaussian import GaussianPolicy
from inril_robot.policies.normalizer import Normalizer
from inril_robot.rl.buffer import RolloutBuffer, compute_gae
from inril_robot.rl.ppo import Critic, PPOConfig, actor_loss, ppo_update

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


def one_step_buffer(policy: GaussianPolicy, critic: Critic, steps: int, envs: int,
                    rewards_fn: Callable[[Tensor], Tensor] | None = None) -> RolloutBuffer:
    """One-step episodes (every step terminates): the return is the reward. Rewards +-1 at random by default."""
    buf = RolloutBuffer(steps, envs, policy.chunk_dim)
    for _ in range(steps):
        obs = make_obs(envs)
        with torch.no_grad():
            dist = policy.distribution(obs)
            actions = dist.sample()  # (N, H*A)
            log_probs = dist.log_prob(actions).sum(-1)  # (N,)
            values = critic(obs)  # (N,)
        rewards = rewards_fn(actions) if rewards_fn is not None else torch.randint(0, 2, (envs,)).float() * 2 - 1
        buf.add(obs, actions, log_probs, rewards, torch.ones(envs), torch.zeros(envs), values)
    buf.compute_returns(torch.zeros(envs), gamma=0.99, lam=0.95)
    return buf


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
    both, _ = compute_gae(rewards, values, dones, trunc + torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]),
                          last_value, gamma, lam, boot + torch.tensor([[0.0, 0.0], [9.0, 0.0], [0.0, 0.0]]))
    torch.testing.assert_close(both, expected)  # terminated and truncated at once: termination wins


def test_gae_without_ends_is_the_discounted_return() -> None:
    rewards, values = torch.rand(5, 3), torch.rand(5, 3)
    zeros, last = torch.zeros(5, 3), torch.rand(3)
    _, ret = compute_gae(rewards, values, zeros, zeros, last, 0.9, 1.0)  # lambda = 1: Monte-Carlo returns
    expected = last.clone()
    for t in reversed(range(5)):
        expected = rewards[t] + 0.9 * expected
        torch.testing.assert_close(ret[t], expected)


def test_buffer_minibatches_cover_every_sample_once() -> None:
    policy = make_policy()
    buf = one_step_buffer(policy, Critic.for_policy(policy, (16,)), steps=3, envs=5)
    batches = list(buf.minibatches(4, torch.Generator().manual_seed(1)))
    assert [len(b) for b in batches] == [4, 4, 4, 3]
    assert sorted(torch.cat(batches).tolist()) == list(range(15))
    b = buf.batch(torch.tensor([7]))  # flat index 7 = step 1, env 2
    torch.testing.assert_close(b.actions[0], buf.actions[1, 2])
    torch.testing.assert_close(b.obs["ee_pos"][0], buf.obs["ee_pos"][1, 2])


# ------------------------------------------------------------------------------------------------------------ PPO
def test_ppo_update_raises_log_prob_of_positive_advantage_actions() -> None:
    policy = make_policy()
    critic = Critic.for_policy(policy, (32,))
    buf = one_step_buffer(policy, critic, steps=8, envs=32, rewards_fn=lambda a: a[:, 0].sign())  # learnable
    cfg = PPOConfig(epochs=4, minibatch_size=64, target_kl=None, actor_lr=1e-3)
    all_idx = torch.arange(buf.size)
    before = buf.batch(all_idx)
    _, stats0 = actor_loss(policy, before, cfg)
    assert stats0["approx_kl"] == pytest.approx(0.0, abs=1e-6) and stats0["clip_fraction"] == 0.0

    actor_opt = torch.optim.Adam(policy.parameters(), lr=cfg.actor_lr)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr)
    stats = ppo_update(policy, critic, actor_opt, critic_opt, buf, cfg, torch.Generator().manual_seed(0))
    assert 0.0 <= stats["clip_fraction"] <= 1.0 and stats["clip_fraction"] > 0.0
    assert stats["epochs_run"] == 4 and stats["updates_run"] == 16
    with torch.no_grad():
        delta = policy.log_prob(before.obs, before.actions) - before.log_probs  # (T*N,)
    adv = before.advantages
    assert delta[adv > 0].mean() > 0 > delta[adv < 0].mean()
    assert (adv * delta.exp()).mean() > adv.mean()  # the surrogate objective improved over ratio = 1
    _, stats1 = actor_loss(policy, before, cfg)
    assert stats1["policy_loss"] < stats0["policy_loss"]


def test_target_kl_stops_early() -> None:
    policy = make_policy()
    critic = Critic.for_policy(policy, (32,))
    buf = one_step_buffer(policy, critic, steps=8, envs=32)
    cfg = PPOConfig(epochs=10, minibatch_size=64, target_kl=1e-7, actor_lr=1e-3)
    stats = ppo_update(policy, critic, torch.optim.Adam(policy.parameters(), lr=cfg.actor_lr),
                       torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr), buf, cfg,
                       torch.Generator().manual_seed(0))
    assert stats["early_stopped"] == 1.0 and stats["epochs_run"] < cfg.epochs
    assert stats["updates_run"] >= 2  # the first minibatch is on-policy (KL 0); the stop comes after a step


def test_critic_warmup_leaves_actor_bit_identical_and_fits_returns() -> None:
    policy = make_policy()
    critic = Critic.for_policy(policy, (32, 32))
    buf = one_step_buffer(policy, critic, steps=8, envs=32, rewards_fn=lambda a: 2.0 + a[:, 0])
    actor_before = {k: v.clone() for k, v in policy.state_dict().items()}
    cfg = PPOConfig(epochs=2, minibatch_size=64, critic_warmup_updates=5)
    actor_opt = torch.optim.Adam(policy.parameters(), lr=cfg.actor_lr)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr)
    losses = [ppo_update(policy, critic, actor_opt, critic_opt, buf, cfg, torch.Generator().manual_seed(i),
                         actor_frozen=True)["value_loss"] for i in range(cfg.critic_warmup_updates)]
    for key, value in policy.state_dict().items():
        assert torch.equal(value, actor_before[key]), key
    assert all(p.grad is None for p in policy.parameters())
    assert losses[-1] < 0.5 * losses[0]


def test_value_clipping_bounds_the_step() -> None:
    policy = make_policy()
    critic = Critic.for_policy(policy, (32,))
    buf = one_step_buffer(policy, critic, steps=4, envs=16, rewards_fn=lambda a: torch.full((a.shape[0],), 50.0))
    cfg = PPOConfig(epochs=1, minibatch_size=64, clip_value=0.1)
    stats = ppo_update(policy, critic, torch.optim.Adam(policy.parameters()),
                       torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr), buf, cfg, actor_frozen=True)
    assert stats["value_loss"] > 0 and torch.isfinite(torch.tensor(stats["value_loss"]))


def test_bandit_moves_the_policy_mean_to_the_target() -> None:
    policy = make_policy(horizon=1)
    critic = Critic.for_policy(policy, (32,))
    target = torch.tensor([0.5, -0.4])  # normalised units

    def reward(actions: Tensor) -> Tensor:
        return -((actions - target) ** 2).sum(-1)  # (N,)

    def mean_error() -> float:
        with torch.no_grad():
            return (policy.distribution(make_obs(1)).mean[0] - target).norm().item()

    cfg = PPOConfig(epochs=4, minibatch_size=64, actor_lr=3e-3, critic_lr=5e-3)
    actor_opt = torch.optim.Adam(policy.parameters(), lr=cfg.actor_lr)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr)
    error0 = mean_error()
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        buf = one_step_buffer(policy, critic, steps=2, envs=64, rewards_fn=reward)
        ppo_update(policy, critic, actor_opt, critic_opt, buf, cfg, gen)
    assert error0 > 0.6
    assert mean_error() < 0.25 * error0
