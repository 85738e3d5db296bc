"""The IN-RIL learner: the interleave order, gradient separation as applied, residual separation, adaptive m, exact
resume, the update guard against a destructive update; the DPPO and residual actors."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

from inril_robot.config import DPPOConfig, FinetuneConfig, PolicyConfig
from inril_robot.learning.inril.learner import InrilLearner
from inril_robot.learning.inril.separation import cosine
from inril_robot.learning.policies.base import Obs, Policy
from inril_robot.learning.policies.diffusion import DiffusionPolicy
from inril_robot.learning.policies.factory import make_policy
from inril_robot.learning.policies.normalizer import Normalizer
from inril_robot.learning.policies.residual import ResidualPolicy
from inril_robot.learning.rl.actor import Actor
from inril_robot.learning.rl.buffer import RolloutBuffer
from inril_robot.learning.rl.dppo import DPPOActor, with_frozen_copy
from inril_robot.learning.rl.ppo import Critic, GaussianActor
from inril_robot.learning.rl.residual_ppo import ResidualActor
from tests.test_policies import ACTION_MAX, ACTION_MIN, OBS_STATS, A
from tests.test_policies import STATE_SHAPES as SHAPES
from tests.test_update_guard import make_actions, make_obs


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def policy_of(kind: str, horizon: int = 2) -> Policy:
    normalizer = Normalizer(OBS_STATS, {"min": ACTION_MIN.tolist(), "max": ACTION_MAX.tolist()})
    spec: dict[str, Any] = {"kind": kind, "horizon": horizon, "hidden": [32, 32]}
    if kind == "diffusion":
        spec["diffusion"] = {"denoiser": "mlp", "ddim_steps": 5, "train_steps": 20}
    return make_policy(PolicyConfig.model_validate(spec), normalizer, SHAPES, A)


def demos(horizon: int = 2):
    def sample(batch: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
        torch.manual_seed(int(rng.integers(1 << 31)))
        return ({k: v.numpy() for k, v in make_obs(batch).items()}, make_actions(batch, horizon).numpy())

    return sample


def learner_for(actor: Actor, **cfg: Any) -> InrilLearner:
    spec = {
        "ppo": {
            "critic_warmup_iterations": 0,
            "epochs": 2,
            "minibatch_size": 32,
            "target_kl": None,
            "actor_lr": 1e-3,
            **cfg.pop("ppo", {}),
        },
        "inril": {"il_every": 3, "il_lr": 1e-3, "il_batch_size": 32, **cfg.pop("inril", {})},
        "guard": {"enabled": False, **cfg.pop("guard", {})},
        **cfg,
    }
    if isinstance(actor, ResidualActor):
        spec["algo"] = "residual-ppo"
    return InrilLearner(
        actor,
        Critic.for_policy(actor.policy, (32,)),
        FinetuneConfig.model_validate(spec),
        demos(actor.policy.cfg.horizon),
        seed=0,
    )


def episodes(actor: Actor, critic: Critic, count: int = 64, length: int = 2, seed: int = 0) -> RolloutBuffer:
    """`count` episodes of `length` steps with random rewards, sampled from the actor."""
    gen = torch.Generator().manual_seed(seed)
    buf = RolloutBuffer()
    torch.manual_seed(seed)
    for i in range(count):
        obs = make_obs(length)
        sample = actor.sample(obs, gen)
        with torch.no_grad():
            values = critic(obs)
        rewards = torch.rand(length, generator=gen)
        buf.add_episode(
            obs, sample.record, sample.log_prob, rewards, values, terminated=i % 2 == 0, bootstrap_value=0.3
        )
    return buf


def record_steps(learner: InrilLearner, hook: Any = None) -> list[str]:
    """Wrap the learner's optimiser step to log which objective stepped (and call `hook(objective)` first)."""
    calls: list[str] = []
    original = learner._step

    def step(objective: str, loss: torch.Tensor, **kwargs: Any) -> dict[str, float]:
        calls.append(objective)
        if hook is not None:
            return hook(objective, loss, original)
        return original(objective, loss, **kwargs)

    learner._step = step  # type: ignore[method-assign]
    return calls


# -------------------------------------------------------------------------------------------------- interleaving
def test_update_interleaves_exactly_m_rl_steps_per_il_step() -> None:
    learner = learner_for(GaussianActor(policy_of("gaussian")), inril={"il_every": 3, "separation": "none"})
    calls = record_steps(learner)
    stats = learner.update(episodes(learner.actor, learner.critic, count=48))  # 96 transitions: 3 minibatches x 2
    assert calls == ["rl", "rl", "rl", "il", "rl", "rl"]
    assert (stats["rl_steps"], stats["il_steps"]) == (5, 1)
    calls.clear()
    learner.update(episodes(learner.actor, learner.critic, count=48, seed=1))
    assert calls == ["rl", "il", "rl", "rl", "rl", "il"]  # the cycle carries over between updates


@pytest.mark.parametrize("mode", ["pcgrad", "orthogonal"])
def test_applied_updates_respect_the_separation(mode: str) -> None:
    """What reaches the optimiser is (PCGrad) never opposed to, or (orthogonal) orthogonal to, the other objective's
    reference gradient."""
    learner = learner_for(
        GaussianActor(policy_of("gaussian")), inril={"il_every": 2, "separation": mode, "reference": "ema"}
    )
    dots: list[float] = []
    raw_conflicts = 0

    def hook(objective: str, loss: torch.Tensor, original: Any) -> dict[str, float]:
        nonlocal raw_conflicts
        other = learner.references["il" if objective == "rl" else "rl"].value()
        opt = learner.optimizers[objective]
        step = opt.step

        def checked_step(*args: Any, **kwargs: Any) -> Any:
            if other is not None:
                dots.append(cosine([p.grad for p in learner.params[objective]], other))
            return step(*args, **kwargs)

        opt.step = checked_step  # type: ignore[method-assign]
        try:
            grads = torch.autograd.grad(loss, learner.params[objective], retain_graph=True, allow_unused=True)
            if other is not None and cosine(list(grads), other) < 0:
                raw_conflicts += 1
            return original(objective, loss)
        finally:
            opt.step = step  # type: ignore[method-assign]

    record_steps(learner, hook)
    for seed in range(3):
        learner.update(episodes(learner.actor, learner.critic, count=64, seed=seed))
    assert len(dots) >= 10 and raw_conflicts > 0  # the raw gradients did conflict at times
    if mode == "pcgrad":
        assert min(dots) >= -1e-5
    else:
        assert max(abs(d) for d in dots) <= 1e-4


def test_residual_separation_il_moves_only_the_base_and_rl_only_the_residual() -> None:
    policy = ResidualPolicy(policy_of("gaussian"), hidden=(32,), freeze_base=False)
    learner = learner_for(ResidualActor(policy), inril={"il_every": 2, "separation": "residual"})
    base_names = {n for n, _ in policy.named_parameters() if n.startswith("base.")}
    checked: list[str] = []

    def hook(objective: str, loss: torch.Tensor, original: Any) -> dict[str, float]:
        before = {n: p.detach().clone() for n, p in policy.named_parameters()}
        out = original(objective, loss)
        after = dict(policy.named_parameters())
        untouched = {n for n in before if (n in base_names) == (objective == "rl")}
        moved = set(before) - untouched
        assert all(torch.equal(before[n], after[n]) for n in untouched), objective
        assert any(not torch.equal(before[n], after[n]) for n in moved), objective
        checked.append(objective)
        return out

    record_steps(learner, hook)
    learner.update(episodes(learner.actor, learner.critic, count=64))
    assert checked.count("rl") >= 2 and checked.count("il") >= 2


def test_residual_actor_refuses_gradient_projection() -> None:
    policy = ResidualPolicy(policy_of("gaussian"), hidden=(32,), freeze_base=False)
    with pytest.raises(ValueError, match="residual"):
        FinetuneConfig.model_validate({"algo": "residual-ppo", "inril": {"separation": "pcgrad"}})
    cfg = FinetuneConfig.model_validate({"algo": "ppo", "inril": {"separation": "pcgrad"}})
    with pytest.raises(ValueError, match="splits them"):
        InrilLearner(ResidualActor(policy), Critic.for_policy(policy, (8,)), cfg, demos())
    rl_only = FinetuneConfig.model_validate({"algo": "residual-ppo", "inril": {"il_every": 0}})
    InrilLearner(ResidualActor(policy), Critic.for_policy(policy, (8,)), rl_only, None)  # nothing to separate


def test_adaptive_m_is_measured_during_updates_and_stays_in_bounds() -> None:
    learner = learner_for(
        GaussianActor(policy_of("gaussian")),
        inril={"il_every": "auto", "adaptive": {"m_min": 2, "m_max": 6, "every_k": 2}},
    )
    for seed in range(2):
        stats = learner.update(episodes(learner.actor, learner.critic, count=64, seed=seed))
    rule = learner.schedule.rule
    assert rule.n_obs >= 3  # type: ignore[union-attr]
    assert 2 <= stats["m"] <= 6 and -1.0 <= stats["cos_hat"] <= 1.0 and stats["ratio_hat"] > 0


def test_in_ril_without_demonstrations_is_refused() -> None:
    policy = policy_of("gaussian")
    cfg = FinetuneConfig.model_validate({"inril": {"il_every": 5}})
    with pytest.raises(ValueError, match="demonstrations"):
        InrilLearner(GaussianActor(policy), Critic.for_policy(policy, (8,)), cfg, None)


# ------------------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("il_every", [3, "auto"])
def test_state_dict_round_trip_continues_identically(il_every: int | str) -> None:
    def fresh() -> InrilLearner:
        torch.manual_seed(0)
        return learner_for(
            GaussianActor(policy_of("gaussian")),
            inril={"il_every": il_every, "separation": "pcgrad", "adaptive": {"every_k": 2}},
        )

    a = fresh()
    a.update(episodes(a.actor, a.critic, count=48, seed=1))
    state = copy.deepcopy(a.state_dict())
    b = fresh()
    b.load_state_dict(state)
    buffer = episodes(a.actor, a.critic, count=48, seed=2)
    stats_a = a.update(copy.deepcopy(buffer))
    stats_b = b.update(buffer)
    for (name, pa), pb in zip(a.actor.policy.state_dict().items(), b.actor.policy.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    for pa, pb in zip(a.critic.state_dict().values(), b.critic.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    assert stats_a["m"] == stats_b["m"] and stats_a["il_steps"] == stats_b["il_steps"]
    assert a.schedule.state_dict() == b.schedule.state_dict()


# -------------------------------------------------------------------------------------------------------- guard
@pytest.mark.parametrize("mode", ["scale", "reject"])
def test_destructive_update_is_caught_and_live_actions_stay_within_the_bound(mode: str) -> None:
    policy = policy_of("gaussian")
    learner = learner_for(
        GaussianActor(policy),
        ppo={"actor_lr": 1.0, "max_grad_norm": 1e6},
        inril={"il_every": 0},
        guard={"enabled": True, "mode": mode, "max_translation": 0.005},
    )
    buffer = episodes(learner.actor, learner.critic, count=64)
    live = copy.deepcopy(policy)
    stats = learner.update(buffer)
    decision = stats["guard"]
    obs = buffer.recent_observations(learner.cfg.guard.observations)
    live_actions = learner.guard._actions(live, obs)  # type: ignore[union-attr]
    unguarded = copy.deepcopy(policy)
    change = learner.guard.measure(live_actions, learner.guard._actions(policy, obs))  # type: ignore[union-attr]
    assert change.translation <= 0.005 + 1e-9 and change.rotation <= learner.cfg.guard.max_rotation + 1e-9
    assert (decision["alpha"] < 1.0 and decision["translation"] > 0.005) or not decision["accepted"]
    if mode == "reject":
        assert not decision["accepted"]
        for pa, pb in zip(unguarded.state_dict().values(), live.state_dict().values(), strict=True):
            assert torch.equal(pa, pb)


# ---------------------------------------------------------------------------------------------------------- DPPO
def dppo_actor(ft_steps: int | None = None) -> DPPOActor:
    policy = policy_of("diffusion", horizon=4)
    assert isinstance(policy, DiffusionPolicy)
    return DPPOActor(with_frozen_copy(policy, ft_steps), DPPOConfig(ft_steps=ft_steps))


@pytest.mark.parametrize("ft_steps", [None, 2])
def test_dppo_log_probs_are_recomputed_exactly(ft_steps: int | None) -> None:
    actor = dppo_actor(ft_steps)
    obs = make_obs(16)
    sample = actor.sample(obs, torch.Generator().manual_seed(0))
    k = 5 if ft_steps is None else ft_steps
    assert sample.record["chain"].shape == (16, k + 1, 4, A) and sample.log_prob.shape == (16, k)
    log_prob, entropy = actor.evaluate(obs, sample.record)
    torch.testing.assert_close(log_prob, sample.log_prob, rtol=1e-5, atol=1e-4)  # the first PPO ratio is 1
    assert entropy is None and sample.action.abs().max() <= 1.0


def test_dppo_frozen_steps_ignore_the_finetuned_network() -> None:
    actor = dppo_actor(ft_steps=2)
    policy = actor.policy
    assert policy.frozen is not None and policy.frozen_steps(5) == 3
    assert all(not p.requires_grad for p in policy.frozen.parameters())
    obs = make_obs(8)
    chain_a = policy.ddim_chain(obs, 5, 0.0, torch.Generator().manual_seed(3))
    with torch.no_grad():
        for p in policy.denoiser.parameters():
            p.add_(0.5 * torch.randn_like(p))
    chain_b = policy.ddim_chain(obs, 5, 0.0, torch.Generator().manual_seed(3))
    for i in range(4):  # x_T and the 3 frozen steps
        assert torch.equal(chain_a[i], chain_b[i]), i
    assert not torch.equal(chain_a[-1], chain_b[-1])
    frozen_ids = {id(p) for p in policy.frozen.parameters()}
    assert not frozen_ids & {id(p) for p in actor.rl_parameters()}


def test_dppo_update_raises_log_prob_of_positive_advantage_chains() -> None:
    actor = dppo_actor(ft_steps=2)
    learner = learner_for(actor, inril={"il_every": 0}, ppo={"epochs": 3, "actor_lr": 3e-4})
    gen = torch.Generator().manual_seed(0)
    buf = RolloutBuffer()
    obs = make_obs(128)
    sample = actor.sample(obs, gen)
    rewards = sample.action[:, 0, 0].sign()  # reward: first action dimension positive
    with torch.no_grad():
        values = learner.critic(obs)
    for i in range(128):
        buf.add_episode(
            {k: v[i : i + 1] for k, v in obs.items()},
            {"chain": sample.record["chain"][i : i + 1]},
            sample.log_prob[i : i + 1],
            rewards[i : i + 1],
            values[i : i + 1],
            terminated=True,
        )
    learner.update(buf)
    with torch.no_grad():
        delta = (actor.evaluate(buf.obs, buf.record)[0] - buf.log_probs).sum(-1)  # (P,)
    adv = buf.advantages
    assert delta[adv > 0].mean() > delta[adv < 0].mean()


def test_dppo_policy_with_frozen_copy_round_trips_through_a_checkpoint(tmp_path: Any) -> None:
    from inril_robot.config import RunConfig
    from inril_robot.core.contract import Contract, ObsSpec
    from inril_robot.learning.policies.checkpoint import load_checkpoint, save_checkpoint

    actor = dppo_actor(ft_steps=2)
    contract = Contract(control_hz=10.0, observations={k: ObsSpec(shape=s, dtype="float32") for k, s in SHAPES.items()})
    path = save_checkpoint(tmp_path / "dppo.pt", actor.policy, contract=contract, run_cfg=RunConfig(), step=1)
    loaded = load_checkpoint(path)
    assert isinstance(loaded.policy, DiffusionPolicy) and loaded.policy.frozen is not None
    obs: Obs = make_obs(4)
    a = actor.policy.predict(obs, generator=torch.Generator().manual_seed(1))
    b = loaded.policy.predict(obs, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)


def test_kl_adaptive_actor_lr_shrinks_after_a_jump_and_grows_after_a_crawl() -> None:
    learner = learner_for(
        GaussianActor(policy_of("gaussian")),
        inril={"il_every": 0},
        ppo={"target_kl": 0.05, "lr_schedule": "kl", "actor_lr": 1e-4, "actor_lr_min": 5e-5},
    )
    assert learner._adapt_actor_lr(1.0) == pytest.approx(1e-4 / 1.5)
    assert learner._adapt_actor_lr(1.0) == pytest.approx(5e-5)  # floored at actor_lr_min
    assert learner._adapt_actor_lr(0.05) == pytest.approx(5e-5)  # inside [target / 1.5, 1.5 target]: unchanged
    assert learner._adapt_actor_lr(0.001) == pytest.approx(7.5e-5)
    stats = learner.update(episodes(learner.actor, learner.critic, count=32))
    assert stats["actor_lr"] == learner.optimizers["rl"].param_groups[0]["lr"]
    state = learner.state_dict()
    assert state["rl_opt"]["param_groups"][0]["lr"] == stats["actor_lr"]  # the adapted lr resumes with the run


# ------------------------------------------------------------------------------------------------ step-size rule
def bandit_batch(actor: Actor, critic: Critic, count: int, target: torch.Tensor) -> RolloutBuffer:
    """One-step episodes sampled from the current policy, reward -||a - target||^2 (a learnable bandit)."""
    buf = RolloutBuffer()
    obs = make_obs(count)
    sample = actor.sample(obs)
    action = sample.record["action"].reshape(count, -1, A)[:, 0]  # (N, A) the executed step
    rewards = -((action - target) ** 2).sum(-1)  # (N,)
    with torch.no_grad():
        values = critic(obs)
    for i in range(count):
        buf.add_episode(
            {k: v[i : i + 1] for k, v in obs.items()},
            {"action": sample.record["action"][i : i + 1]},
            sample.log_prob[i : i + 1],
            rewards[i : i + 1],
            values[i : i + 1],
            terminated=True,
        )
    return buf


@pytest.fixture
def one_thread() -> Any:
    """Tiny networks: torch's thread pool only adds contention on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("start_lr", [1e-6, 3e-2])
def test_step_size_rule_holds_the_target_kl(start_lr: float, one_thread: Any) -> None:
    """From a step size far too small or far too large, the rule brings the RL KL of whole updates into
    [target / 1.5, 1.5 target] and keeps it there (most of the last updates), early stops included."""
    target_kl = 0.02
    policy = policy_of("gaussian", horizon=1)
    learner = learner_for(
        GaussianActor(policy),
        inril={"il_every": 0},
        log_std_lr=0.0,
        ppo={
            "target_kl": target_kl,
            "lr_schedule": "kl",
            "actor_lr": start_lr,
            "epochs": 4,
            "minibatch_size": 64,
            "actor_lr_min": 1e-8,
            "actor_lr_max": 1.0,
        },
    )
    target = torch.full((A,), 0.8)
    kls = []
    for _ in range(30):
        stats = learner.update(bandit_batch(learner.actor, learner.critic, 256, target))
        kls.append(stats["update_rl_kl"])
    last = kls[-12:]
    inside = sum(target_kl / 2.25 <= kl <= 2.25 * target_kl for kl in last)
    assert inside >= 9, kls
    assert max(last) < 10 * target_kl, kls


@pytest.mark.timeout(60)
def test_il_steps_do_not_trigger_the_early_stop_and_their_kl_is_reported_apart() -> None:
    """Large IL steps (fixed IL lr 0.05) move the policy far, RL steps barely (lr 1e-7): the update runs all its
    epochs, the RL KL stays tiny, and the IL KL is reported separately (it exceeds the stop bound by far)."""
    policy = policy_of("gaussian")
    learner = learner_for(
        GaussianActor(policy),
        log_std_lr=0.0,
        inril={"il_every": 1, "il_lr_ratio": None, "il_lr": 5e-2, "separation": "none"},
        ppo={"target_kl": 0.01, "lr_schedule": "kl", "actor_lr": 1e-7, "epochs": 3},
    )
    stats = learner.update(episodes(learner.actor, learner.critic, count=64))
    assert not stats["early_stopped"] and stats["epochs_run"] == 3 and stats["il_steps"] > 0
    assert stats["il_kl"] > 2 * 0.01 and stats["update_kl"] > 2 * 0.01  # the policy did move, through IL
    assert stats["update_rl_kl"] < 0.01 and stats["approx_kl"] < 0.01


@pytest.mark.timeout(60)
def test_il_lr_follows_the_rl_lr_by_the_configured_ratio() -> None:
    learner = learner_for(
        GaussianActor(policy_of("gaussian")),
        inril={"il_lr_ratio": 0.5},
        ppo={"target_kl": 0.05, "lr_schedule": "kl", "actor_lr": 1e-4},
    )
    assert learner.optimizers["il"].param_groups[0]["lr"] == pytest.approx(5e-5)
    learner._adapt_actor_lr(1.0)  # a jump: RL lr / 1.5, IL follows
    assert learner.optimizers["il"].param_groups[0]["lr"] == pytest.approx(0.5 * 1e-4 / 1.5)
