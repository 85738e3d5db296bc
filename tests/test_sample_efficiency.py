"""The sample-efficiency report's arithmetic (threshold crossings, censoring, intervals, speed-ups), the learner-cost
bench on a tiny batch, and the seed statistics."""

from __future__ import annotations

from pathlib import Path

import pytest

from inril_robot.inril.learner_bench import bench_learner
from inril_robot.inril.sample_efficiency import markdown_table, outcome_from_curve, summarize, write_reports
from inril_robot.stats import mean_ci


def test_mean_ci_matches_the_student_t_interval() -> None:
    ci = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert ci.mean == 3.0 and ci.n == 5
    assert ci.high - ci.mean == pytest.approx(2.776 * (2.5 ** 0.5) / 5 ** 0.5, rel=1e-3)
    assert mean_ci([0.7]).low == float("-inf") and mean_ci([]).n == 0


def test_outcomes_cross_thresholds_count_collapse_and_censor() -> None:
    o = outcome_from_curve("lift", "rl-only", 0, [(0, 0.5), (1000, 0.3), (2000, 0.6), (3000, 0.85), (4000, 0.7)],
                           4000, 1.0)
    assert o.steps_to == {0.5: 0, 0.8: 3000} and o.worst_after_start == 0.3 and o.final == 0.7
    never = outcome_from_curve("lift", "x", 1, [(0, 0.2), (1000, 0.4)], 1000, 1.0)
    assert never.steps_to == {0.5: None, 0.8: None}
    with pytest.raises(ValueError, match="pre-trained"):
        outcome_from_curve("lift", "x", 0, [(500, 0.5)], 500, 1.0)


def test_summary_counts_never_reached_as_the_budget_and_reports_speedups(tmp_path: Path) -> None:
    budget = 4000
    outcomes = [
        outcome_from_curve("lift", "rl-only", 0, [(0, 0.5), (2000, 0.8), (4000, 0.9)], budget, 1.0),
        outcome_from_curve("lift", "rl-only", 1, [(0, 0.5), (2000, 0.6), (4000, 0.7)], budget, 1.0),
        outcome_from_curve("lift", "in-ril m=5 pcgrad", 0, [(0, 0.5), (1000, 0.8), (4000, 0.9)], budget, 1.0),
        outcome_from_curve("lift", "in-ril m=5 pcgrad", 1, [(0, 0.5), (1000, 0.85), (4000, 0.9)], budget, 1.0),
    ]
    rows = {r["arm"]: r for r in summarize(outcomes, budget)}
    assert rows["rl-only"]["steps_to_80"]["mean"] == 3000  # (2000 + the budget 4000) / 2
    assert rows["rl-only"]["reached_80"] == 1 and rows["in-ril m=5 pcgrad"]["reached_80"] == 2
    assert rows["in-ril m=5 pcgrad"]["speedup_80"] == pytest.approx(3.0)
    assert rows["rl-only"]["worst_after_start"]["mean"] == pytest.approx(0.7)
    table = markdown_table(list(rows.values()), budget, 2, 32)
    assert ">= 3,000" in table and "(1/2)" in table and "3.00x" in table
    files = write_reports(outcomes, list(rows.values()), tmp_path, budget, 2, 32)
    for path in files.values():
        assert Path(path).is_file() and Path(path).stat().st_size > 0


def test_bench_learner_times_every_variant_against_rl_only() -> None:
    result = bench_learner("reach", transitions=128, repeats=1, overrides=[
        "policy.hidden=[32, 32]", "finetune.ppo.minibatch_size=64", "finetune.ppo.epochs=1",
        "finetune.inril.il_batch_size=32", "finetune.ppo.critic_hidden=[32]"], variants=["rl-only", "m=5 pcgrad"])
    rows = {r["variant"]: r for r in result["variants"]}
    assert rows["rl-only"]["ratio_vs_rl_only"] == 1.0 and rows["m=5 pcgrad"]["ratio_vs_rl_only"] > 0
    assert rows["rl-only"]["actor_steps"] == rows["m=5 pcgrad"]["actor_steps"] == 2
    assert result["guard_ms"] > 0
