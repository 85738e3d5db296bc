"""Update guard: small updates pass untouched, destructive ones are scaled back into bounds or rejected."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import torch
from torch import Tensor

from inril_robot.config import PolicyConfig
from inril_robot.learning.inril.guard import GuardConfig, GuardDecision, UpdateGuard, interpolate
from inril_robot.learning.policies.base import Obs, Policy
from inril_robot.learning.policies.factory import make_policy
from inril_robot.learning.policies.latency import random_obs
from inril_robot.learning.policies.normalizer import Normalizer
from tests.test_policies import ACTION_MAX, ACTION_MIN, OBS_STATS, A
from tests.test_policies import STATE_SHAPES as SHAPES

KINDS: dict[str, dict[str, Any]] = {
    "gaussian": {"kind": "gaussian", "horizon": 2, "hidden": [64, 64]},
    "diffusion": {
        "kind": "diffusion",
        "horizon": 4,
        "hidden": [64, 64],
        "diffusion": {"denoiser": "mlp", "ddim_steps": 5},
    },
}
TOL = 1e-6


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def make(name: str) -> Policy:
    normalizer = Normalizer(OBS_STATS, {"min": ACTION_MIN.tolist(), "max": ACTION_MAX.tolist()})
    return make_policy(PolicyConfig.model_validate(KINDS[name]), normalizer, SHAPES, A)


def make_obs(batch: int) -> Obs:
    obs = random_obs(SHAPES, 1, batch)
    for key, stats in OBS_STATS.items():
        obs[key] = torch.tensor(stats["mean"]) + torch.tensor(stats["std"]) * obs[key]
    return obs


def make_actions(batch: int, horizon: int) -> Tensor:
    u = torch.rand(batch, horizon, A) * 1.8 - 0.9
    return ACTION_MIN + (u + 1) / 2 * (ACTION_MAX - ACTION_MIN)


def bc_steps(policy: Policy, obs: Obs, steps: int, optimizer: torch.optim.Optimizer) -> None:
    actions = make_actions(next(iter(obs.values())).shape[0], policy.cfg.horizon)
    for _ in range(steps):
        loss = policy.loss(obs, actions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def destroy(policy: Policy, scale: float = 2.0) -> None:
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * scale)


def actions(guard: UpdateGuard, policy: Policy, obs: Obs) -> Tensor:
    return guard._actions(policy, obs)


def assert_within_bounds(guard: UpdateGuard, live: Policy, candidate: Policy, obs: Obs) -> None:
    delta = actions(guard, candidate, obs) - actions(guard, live, obs)  # (B, H, A)
    assert delta[..., 0:3].norm(dim=-1).max().item() <= guard.cfg.max_translation + TOL
    assert delta[..., 3:6].norm(dim=-1).max().item() <= guard.cfg.max_rotation + TOL
    assert delta[..., 6].abs().max().item() <= guard.cfg.max_gripper + TOL


def same_weights(a: Policy, b: Policy) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", list(KINDS))
def test_small_update_is_accepted_unchanged(name: str) -> None:
    live = make(name)
    candidate = copy.deepcopy(live)
    obs = make_obs(32)
    bc_steps(candidate, obs, 3, torch.optim.Adam(candidate.parameters(), lr=1e-4))
    updated = copy.deepcopy(candidate.state_dict())

    decision = UpdateGuard().check(live, candidate, obs)
    assert decision.accepted and decision.alpha == 1.0, decision
    assert decision.translation <= 0.01 and decision.rotation <= 0.05 and decision.gripper <= 0.5
    assert all(torch.equal(v, candidate.state_dict()[k]) for k, v in updated.items())  # weights untouched
    assert not same_weights(live, candidate)  # ... and the update really did change something


@pytest.mark.parametrize("name", list(KINDS))
@pytest.mark.parametrize("how", ["noise", "sgd"])
def test_destructive_update_is_scaled_into_bounds_or_rejected(name: str, how: str) -> None:
    live = make(name)
    candidate = copy.deepcopy(live)
    obs = make_obs(32)
    if how == "noise":
        destroy(candidate)
    else:
        bc_steps(candidate, obs, 1, torch.optim.SGD(candidate.parameters(), lr=1e4))
    guard = UpdateGuard(GuardConfig())
    live_before = copy.deepcopy(live.state_dict())

    decision = guard.check(live, candidate, obs)
    assert decision.alpha < 1.0, decision
    assert "out of bounds" in decision.reason
    assert_within_bounds(guard, live, candidate, obs)
    assert all(torch.equal(v, live.state_dict()[k]) for k, v in live_before.items())  # live never touched
    if decision.accepted:
        assert guard.cfg.min_alpha <= decision.alpha < 1.0
        assert decision.translation <= guard.cfg.max_translation
    else:
        assert decision.alpha == 0.0 and same_weights(live, candidate)


# Noise just past the bounds (the diffusion chain amplifies weight changes far more than the Gaussian MLP).
MODERATE_NOISE = {"gaussian": 0.1, "diffusion": 0.01}


@pytest.mark.parametrize("name", list(KINDS))
def test_moderately_bad_update_is_scaled_back_in_place(name: str) -> None:
    live = make(name)
    candidate = copy.deepcopy(live)
    obs = make_obs(32)
    destroy(candidate, MODERATE_NOISE[name])
    proposed = copy.deepcopy(candidate.state_dict())
    guard = UpdateGuard()

    decision = guard.check(live, candidate, obs)
    assert decision.accepted and guard.cfg.min_alpha <= decision.alpha < 1.0, decision
    assert "scaled" in decision.reason
    assert_within_bounds(guard, live, candidate, obs)
    expected = interpolate(live.state_dict(), proposed, decision.alpha)  # the weights really are the blend
    assert all(torch.equal(v, candidate.state_dict()[k]) for k, v in expected.items())


@pytest.mark.parametrize("name", list(KINDS))
def test_reject_mode_resets_candidate_bit_identically(name: str) -> None:
    live = make(name)
    candidate = copy.deepcopy(live)
    destroy(candidate)
    obs = make_obs(16)
    guard = UpdateGuard(GuardConfig(mode="reject"))

    decision = guard.check(live, candidate, obs)
    assert not decision.accepted and decision.alpha == 0.0
    assert (
        decision.translation > guard.cfg.max_translation
        or decision.rotation > guard.cfg.max_rotation
        or decision.gripper > guard.cfg.max_gripper
    )
    assert same_weights(live, candidate)
    assert torch.equal(actions(guard, live, obs), actions(guard, candidate, obs))


def test_high_min_alpha_rejects_instead_of_scaling() -> None:
    live = make("gaussian")
    candidate = copy.deepcopy(live)
    destroy(candidate)
    obs = make_obs(16)
    decision = UpdateGuard(GuardConfig(min_alpha=1.0)).check(live, candidate, obs)
    assert not decision.accepted and "min_alpha" in decision.reason
    assert same_weights(live, candidate)


def test_p95_statistic_tolerates_a_few_outliers() -> None:
    guard = UpdateGuard(GuardConfig(statistic="p95"))
    live = torch.zeros(100, 2, A)
    candidate = live.clone()
    candidate[:3, :, 0] = 1.0  # 3 % of the samples move a lot
    change = guard.measure(live, candidate)
    assert change.translation == pytest.approx(0.0) and guard.within_bounds(change)
    assert not UpdateGuard().within_bounds(UpdateGuard().measure(live, candidate))  # "max" catches them


def test_interpolate_blends_float_entries_and_copies_the_rest() -> None:
    live = {"w": torch.zeros(3), "n": torch.tensor(1)}
    cand = {"w": torch.full((3,), 2.0), "n": torch.tensor(5)}
    mixed = interpolate(live, cand, 0.25)
    assert torch.equal(mixed["w"], torch.full((3,), 0.5)) and mixed["n"].item() == 5
    assert torch.equal(interpolate(live, cand, 0.0)["w"], live["w"])
    with pytest.raises(ValueError, match="keys"):
        interpolate(live, {"w": cand["w"]}, 0.5)


def test_decisions_serialise_to_dicts() -> None:
    live = make("gaussian")
    candidate = copy.deepcopy(live)
    destroy(candidate)
    decision = UpdateGuard().check(live, candidate, make_obs(8))
    d = decision.to_dict()
    assert set(d) == {"accepted", "alpha", "translation", "rotation", "gripper", "reason"}
    assert GuardDecision(**json.loads(json.dumps(d))) == decision
