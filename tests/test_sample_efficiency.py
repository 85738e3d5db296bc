"""The sample-efficiency report's arithmetic (AUC, held-out collapses, paired differences, decision rules), the
learner-cost bench on a tiny batch, and the seed statistics."""

from __future__ import annotations

from pathlib import Path

import pytest

from inril_robot.bench.learner import bench_learner
from inril_robot.bench.sample_efficiency import (
    RunOutcome,
    curve_auc,
    decide,
    markdown_table,
    outcome_from_curve,
    summarize,
    write_reports,
)
from inril_robot.reporting.rates import mean_ci


def test_mean_ci_matches_the_student_t_interval() -> None:
    ci = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert ci.mean == 3.0 and ci.n == 5
    assert ci.high - ci.mean == pytest.approx(2.776 * (2.5**0.5) / 5**0.5, rel=1e-3)
    assert mean_ci([0.7]).low == float("-inf") and mean_ci([]).n == 0


def test_auc_carries_the_last_evaluation_and_collapse_is_measured_on_the_held_out_seeds() -> None:
    o = outcome_from_curve(
        "lift",
        "rl-only",
        0,
        [(0, 0.5), (1000, 0.3), (2000, 0.7)],
        4000,
        1.0,
        heldout_pretrained=0.5,
        heldout_final=0.34,
    )
    # trapezoids: 1000 * 0.4 + 1000 * 0.5, then 0.7 carried over 2000 steps -> (400 + 500 + 1400) / 4000
    assert o.auc == pytest.approx(2300 / 4000) and o.final == 0.7 and o.pretrained == 0.5
    assert o.collapsed  # 16 points below the pre-trained held-out success
    assert not outcome_from_curve("lift", "x", 0, [(0, 0.5)], 10, 1.0, 0.5, 0.36).collapsed
    assert curve_auc([(0, 0.2), (100, 0.2)], 100) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="pre-trained"):
        outcome_from_curve("lift", "x", 0, [(500, 0.5)], 500, 1.0)


def test_summary_pairs_seeds_against_the_baseline_and_applies_the_decision_rules(tmp_path: Path) -> None:
    def run(arm: str, seed: int, final: float, curve_mid: float) -> RunOutcome:
        return outcome_from_curve(
            "lift",
            arm,
            seed,
            [(0, 0.5), (2000, curve_mid), (4000, final)],
            4000,
            1.0,
            heldout_pretrained=0.5,
            heldout_final=final,
        )

    outcomes = [run("rl-only", s, f, 0.5) for s, f in enumerate([0.6, 0.7, 0.8])]
    outcomes += [run("in-ril m=5 pcgrad", s, f, 0.9) for s, f in enumerate([0.8, 0.85, 0.95])]
    outcomes += [run("rl-only aggressive", s, f, 0.3) for s, f in enumerate([0.1, 0.2, 0.6])]
    outcomes += [run("in-ril m=5 pcgrad aggressive", s, f, 0.5) for s, f in enumerate([0.5, 0.2, 0.7])]
    rows = {r["arm"]: r for r in summarize(outcomes)}
    p = rows["in-ril m=5 pcgrad"]["paired_final"]
    assert p["base"] == "rl-only" and p["n"] == 3 and p["wins"] == 3
    assert p["diffs"] == pytest.approx([0.2, 0.15, 0.15]) and p["ci95_low"] > 0
    assert rows["in-ril m=5 pcgrad aggressive"]["vs"] == "rl-only aggressive"
    assert rows["rl-only aggressive"]["collapses"] == 2 and rows["in-ril m=5 pcgrad aggressive"]["collapses"] == 1
    assert rows["rl-only"]["paired_final"] is None  # not against itself
    verdicts = {v["rule"]: v for v in decide(outcomes, list(rows.values()))}
    assert verdicts["final"]["verdict"] == "supported"
    assert verdicts["collapse"]["verdict"] == "supported"  # fewer collapses, >= in every paired seed (a tie)
    assert verdicts["auc"]["verdict"] == "supported"
    assert verdicts["separation"]["verdict"] == "not run"
    table = markdown_table(list(rows.values()), list(verdicts.values()), 4000, 50, 100)
    assert "+17 [" in table and "(3/3)" in table and "Decision rules" in table
    files = write_reports(outcomes, list(rows.values()), list(verdicts.values()), tmp_path, 4000, 50, 100)
    for path in files.values():
        assert Path(path).is_file() and Path(path).stat().st_size > 0


def test_bench_learner_times_every_variant_against_rl_only() -> None:
    result = bench_learner(
        "reach",
        transitions=128,
        repeats=1,
        overrides=[
            "policy.hidden=[32, 32]",
            "finetune.ppo.minibatch_size=64",
            "finetune.ppo.epochs=1",
            "finetune.inril.il_batch_size=32",
            "finetune.ppo.critic_hidden=[32]",
        ],
        variants=["rl-only", "m=5 pcgrad"],
    )
    rows = {r["variant"]: r for r in result["variants"]}
    assert rows["rl-only"]["ratio_vs_rl_only"] == 1.0 and rows["m=5 pcgrad"]["ratio_vs_rl_only"] > 0
    assert rows["rl-only"]["actor_steps"] == rows["m=5 pcgrad"]["actor_steps"] == 2
    assert result["guard_ms"] > 0


@pytest.mark.slow  # ~2.5 min on 2 loaded cores (4 spawned fine-tunings + held-out evaluations)
@pytest.mark.timeout(600)
def test_parallel_runs_give_the_same_outcomes_as_sequential_ones(tmp_path: Path) -> None:
    """`--jobs 2`: the (arm, seed) runs in spawned processes; outcomes come back in the runs' order and equal what
    the sequential bench reports (fine-tuning is seeded: a run does not depend on the process it ran in)."""
    from inril_robot.bench.sample_efficiency import bench_sample_efficiency
    from inril_robot.learning.pretrain import pretrain
    from tests.test_pretrain import reach_cfg, record_demos

    demos = record_demos(tmp_path / "demos", "reach", 4)
    ckpt = Path(
        pretrain(
            reach_cfg(overrides=["train.steps=20", "train.eval_every=0"]), demos, tmp_path / "pre", resume=False
        ).last_checkpoint
    )
    tiny = [
        "finetune.eval_episodes=2",
        "finetune.num_envs=1",
        "finetune.episodes_per_iteration=2",
        "finetune.eval_every=0",
    ]

    def bench(out: Path, jobs: int) -> list[dict]:
        result = bench_sample_efficiency(
            out, ["reach"], ["rl-only"], 2, 60, tiny, lambda task, folder: (demos, ckpt), heldout_episodes=3, jobs=jobs
        )
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in result["runs"]]

    parallel = bench(tmp_path / "parallel", 2)
    assert [r["seed"] for r in parallel] == [0, 1]
    assert parallel == bench(tmp_path / "sequential", 1)
