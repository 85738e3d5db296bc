"""IN-RIL math: gradient separation (PCGrad, orthogonal, residual param groups) and the interleave schedule."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from inril_robot.learning.inril.schedule import AdaptiveM, FixedM, InterleaveSchedule
from inril_robot.learning.inril.separation import (
    SEPARATION_MODES,
    GradientEMA,
    flatten,
    orthogonal,
    param_groups_for,
    pcgrad,
    project_step,
    unflatten,
)
from inril_robot.learning.policies.residual import ResidualPolicy
from tests.test_policies import make_actions, make_obs, make_policy_named

# float64 so that the 1e-6 relative tolerance measures the math, not float32 rounding
finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)
vec_pairs = st.integers(min_value=1, max_value=24).flatmap(
    lambda n: st.tuples(st.lists(finite, min_size=n, max_size=n), st.lists(finite, min_size=n, max_size=n))
)


def as_grads(values: list[float]) -> list[Tensor | None]:
    """A flat list as a parameter-shaped gradient list: a (k,) piece, a None, and the rest as (1, m)."""
    t = torch.tensor(values, dtype=torch.float64)
    k = len(values) // 2
    return [t[:k].clone(), None, t[k:].clone().reshape(1, -1)]


def vec(grads: list[Tensor | None]) -> Tensor:
    return flatten(grads)


def tol(a: Tensor, b: Tensor) -> float:
    return 1e-6 * (a.norm() * b.norm()).item() + 1e-12


# ------------------------------------------------------------------------------------------------ projections
@settings(max_examples=200, deadline=None)
@given(vec_pairs, st.booleans())
def test_pcgrad_removes_conflict(pair: tuple[list[float], list[float]], force_conflict: bool) -> None:
    a, b = pair
    if force_conflict:  # b leans against a: a guaranteed conflict whenever a is not zero
        b = [y - 2.0 * x for x, y in zip(a, b, strict=True)]
    g_rl, g_il = as_grads(a), as_grads(b)
    r, i = pcgrad(g_rl, g_il)
    assert r[1] is None and i[1] is None
    va, vb, vr, vi = vec(g_rl), vec(g_il), vec(r), vec(i)
    assert torch.isfinite(vr).all() and torch.isfinite(vi).all()
    assert torch.dot(vr, vi) >= -tol(va, vb)
    if torch.dot(va, vb) >= 0:  # no conflict: untouched
        assert torch.equal(vr, va) and torch.equal(vi, vb)


def test_pcgrad_projects_each_against_the_original_other() -> None:
    g, h = [torch.tensor([1.0, 0.0])], [torch.tensor([-1.0, 1.0])]
    r, i = pcgrad(g, h)
    torch.testing.assert_close(r[0], torch.tensor([0.5, 0.5]))  # g - (-1/2) h
    torch.testing.assert_close(i[0], torch.tensor([0.0, 1.0]))  # h - (-1/1) g


@settings(max_examples=200, deadline=None)
@given(vec_pairs)
def test_orthogonal_is_orthogonal_to_the_original_other(pair: tuple[list[float], list[float]]) -> None:
    g_rl, g_il = as_grads(pair[0]), as_grads(pair[1])
    r, i = orthogonal(g_rl, g_il)
    va, vb = vec(g_rl), vec(g_il)
    assert abs(torch.dot(vec(r), vb)) <= tol(va, vb)
    assert abs(torch.dot(vec(i), va)) <= tol(va, vb)


@pytest.mark.parametrize("mode", SEPARATION_MODES)
def test_zero_gradients_give_no_nan(mode: str) -> None:
    zero, g = [torch.zeros(3), torch.zeros(2, 2)], [torch.randn(3), torch.randn(2, 2)]
    for a, b in [(zero, g), (g, zero), (zero, zero)]:
        for out in (*pcgrad(a, b), *orthogonal(a, b), project_step(a, b, mode)):  # type: ignore[arg-type]
            assert torch.isfinite(flatten(out)).all()
    assert torch.equal(flatten(pcgrad(g, zero)[0]), flatten(g))  # nothing to project against


def test_unflatten_round_trips_with_none() -> None:
    grads: list[Tensor | None] = [torch.randn(2, 3), None, torch.randn(4), None, torch.randn(1, 1, 2)]
    v = flatten(grads)
    assert v.shape == (6 + 4 + 2,)
    back = unflatten(v, grads)
    assert [b is None for b in back] == [g is None for g in grads]
    assert all(g is None or (b is not None and torch.equal(b, g)) for b, g in zip(back, grads, strict=True))
    with pytest.raises(ValueError):
        unflatten(torch.zeros(5), grads)


def test_project_step_against_ema_reference() -> None:
    ema = GradientEMA(decay=0.5)
    g = [torch.tensor([1.0, 0.0]), None]
    assert ema.value() is None and project_step(g, ema.value(), "pcgrad") == g  # no reference yet
    ema.update([torch.tensor([-1.0, 1.0]), torch.tensor([3.0])])
    ema.update([torch.tensor([-1.0, 1.0]), torch.tensor([3.0])])
    ref = ema.value()
    assert ref is not None
    torch.testing.assert_close(ref[0], torch.tensor([-1.0, 1.0]))  # bias-corrected: constant input, constant EMA
    out = project_step(g, ref, "pcgrad")
    assert out[1] is None  # the reference never creates an update where g has none
    torch.testing.assert_close(out[0], torch.tensor([0.5, 0.5]))
    assert project_step(g, ref, "none") == g and project_step(g, ref, "residual") == g
    state = ema.state_dict()
    ema2 = GradientEMA()
    ema2.load_state_dict(state)
    torch.testing.assert_close(flatten(ema2.value() or []), flatten(ref))
    with pytest.raises(ValueError):
        project_step(g, ref, "bogus")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ network separation
def test_residual_param_groups_keep_the_other_part_bit_identical() -> None:
    torch.manual_seed(0)
    policy = ResidualPolicy(make_policy_named("gaussian"), freeze_base=False)
    il_params, rl_params = param_groups_for(policy, "il"), param_groups_for(policy, "rl")
    assert {id(p) for p in il_params}.isdisjoint(id(p) for p in rl_params)
    obs, actions = make_obs(8), make_actions(8, policy.cfg.horizon)
    il_opt, rl_opt = torch.optim.Adam(il_params, lr=1e-2), torch.optim.Adam(rl_params, lr=1e-2)

    def both_losses_backward() -> None:  # every parameter gets a gradient, so only the groups can protect them
        policy.zero_grad(set_to_none=True)
        base_action = policy.base_action(obs)
        r = policy.distribution(obs, base_action).sample()
        (policy.loss(obs, actions) - policy.log_prob(obs, base_action, r).mean()).backward()
        for p in policy.parameters():
            p.grad = torch.randn_like(p) if p.grad is None else p.grad

    before, before_il = [p.detach().clone() for p in rl_params], [p.detach().clone() for p in il_params]
    both_losses_backward()
    il_opt.step()  # IL step
    assert all(torch.equal(p, b) for p, b in zip(rl_params, before, strict=True))
    assert any(not torch.equal(p, b) for p, b in zip(il_params, before_il, strict=True))

    before_base = [p.detach().clone() for p in il_params]
    before_rl = [p.detach().clone() for p in rl_params]
    both_losses_backward()
    rl_opt.step()  # RL step
    assert all(torch.equal(p, b) for p, b in zip(il_params, before_base, strict=True))
    assert any(not torch.equal(p, b) for p, b in zip(rl_params, before_rl, strict=True))


def test_param_groups_for_rejects_what_cannot_separate() -> None:
    with pytest.raises(TypeError, match="ResidualPolicy"):
        param_groups_for(make_policy_named("gaussian"), "il")
    with pytest.raises(ValueError, match="frozen"):
        param_groups_for(ResidualPolicy(make_policy_named("gaussian")), "il")
    with pytest.raises(ValueError):
        param_groups_for(ResidualPolicy(make_policy_named("gaussian"), freeze_base=False), "bc")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ schedule
def test_schedule_gives_the_configured_sequence() -> None:
    s = InterleaveSchedule(FixedM(3))
    assert [s.next_update() for _ in range(12)] == ["rl", "rl", "rl", "il"] * 3
    assert (s.step, s.n_rl, s.n_il) == (12, 9, 3)
    s2 = InterleaveSchedule(2, il_steps=2)
    assert [s2.next_update() for _ in range(8)] == ["rl", "rl", "il", "il"] * 2
    s0 = InterleaveSchedule(0)
    assert all(s0.next_update() == "rl" for _ in range(100))
    assert not s.wants_observation()
    with pytest.raises(ValueError):
        FixedM(-1)


def pair_with(cos: float, ratio: float, n: int = 64) -> tuple[Tensor, Tensor]:
    """Synthetic flattened gradients (N,) with the given cosine and norm ratio ||g_il|| / ||g_rl||."""
    e1, e2 = torch.zeros(n), torch.zeros(n)
    e1[0], e2[1] = 1.0, 1.0
    g_rl = 2.0 * e1
    g_il = 2.0 * ratio * (cos * e1 + math.sqrt(1 - cos**2) * e2)
    return g_rl, g_il


def settle(rule: AdaptiveM, cos: float, ratio: float, steps: int = 60) -> int:
    for _ in range(steps):
        rule.observe(*pair_with(cos, ratio))
    return rule.m


def test_adaptive_m_follows_conflict_and_norm_ratio() -> None:
    rule = AdaptiveM(m_min=2, m_max=30, ema_decay=0.8, every_k=5, m_ref=8.0)
    m_aligned = settle(rule, 0.6, 1.0)
    m_conflict = settle(rule, -0.5, 1.0)
    assert m_conflict > m_aligned  # more conflict -> more RL steps per IL step
    m_big_ratio = settle(rule, -0.5, 2.0)
    assert m_big_ratio > m_conflict  # a larger IL/RL norm ratio -> larger m
    assert settle(rule, -0.5, 1.0) < m_big_ratio  # and back down
    assert settle(rule, 0.6, 1.0) < m_conflict
    assert rule.rho_hat == pytest.approx(rule.cos_hat * rule.ratio_hat)
    # stays in range for any sequence, including zero and extreme gradients
    torch.manual_seed(1)
    for _ in range(300):
        scale = 10 ** float(torch.empty(()).uniform_(-6, 6))
        rule.observe(torch.randn(16), scale * torch.randn(16))
        assert 2 <= rule.m <= 30
    rule.observe(torch.zeros(16), torch.randn(16))  # skipped, no NaN
    assert 2 <= rule.m <= 30 and math.isfinite(rule.cos_hat)
    assert settle(rule, -1.0, 100.0) == 30 and settle(rule, 1.0, 1.0) == 2


def test_adaptive_schedule_asks_for_observations_every_k() -> None:
    s = InterleaveSchedule(AdaptiveM(every_k=4))
    asked = []
    for _ in range(12):
        s.next_update()
        asked.append(s.wants_observation())
    assert asked == [False, False, False, True] * 3


@pytest.mark.parametrize("adaptive", [False, True])
def test_state_dict_round_trip_continues_identically(adaptive: bool) -> None:
    def make() -> InterleaveSchedule:
        return InterleaveSchedule(
            AdaptiveM(m_min=1, m_max=12, every_k=3, m_ref=4.0) if adaptive else FixedM(3), il_steps=2
        )

    def drive(s: InterleaveSchedule, n: int, offset: int) -> list[str]:
        out = []
        for t in range(offset, offset + n):
            out.append(s.next_update())
            if s.wants_observation():
                s.observe(*pair_with(math.cos(0.3 * t), 1.0 + 0.1 * (t % 7)))
        return out

    reference = make()
    full = drive(reference, 50, 0)
    first = make()
    head = drive(first, 23, 0)  # stop mid-cycle
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    assert head + drive(resumed, 27, 23) == full
    assert resumed.state_dict() == reference.state_dict()
