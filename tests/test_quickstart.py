"""`inril-robot quickstart` end to end on a tiny budget (the real run: 50 lift demos, 2,000 BC steps, 2 x 12k env
steps of fine-tuning)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inril_robot.cli import app


def test_quickstart_records_pretrains_finetunes_both_ways_and_compares(tmp_path: Path) -> None:
    args = [
        "quickstart",
        "--out",
        str(tmp_path / "qs"),
        "--task",
        "reach",
        "--demos",
        "3",
        "--steps",
        "20",
        "--env-steps",
        "40",
        "--episodes",
        "2",
        "--heldout-episodes",
        "3",
        "--json",
        "--set",
        "task.max_steps=20",
        "--set",
        "finetune.episodes_per_iteration=2",
        "--set",
        "finetune.subprocess_envs=false",
        "--set",
        "finetune.ppo.minibatch_size=16",
        "--set",
        "finetune.inril.il_batch_size=16",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["demos"] == 3 and payload["pretrain_steps"] == 20
    assert set(payload["results"]) == {"RL only", "IN-RIL"}
    for row in payload["results"].values():
        assert row["env_steps"] >= 40 and row["final"]["trials"] == 2 and row["pretrained"]["trials"] == 2
        assert row["heldout_final"]["trials"] == 3 and row["heldout_pretrained"]["trials"] == 3
        assert row["moved"] == row["heldout_final"]["rate"] - row["heldout_pretrained"]["rate"]
        assert row["below_start"] == (row["moved"] < 0)
    assert payload["results"]["RL only"]["pretrained"] == payload["results"]["IN-RIL"]["pretrained"]
    for path in payload["files"].values():
        assert Path(path).exists(), path
    again = CliRunner().invoke(app, args)  # re-running resumes: nothing recorded or trained twice
    assert again.exit_code == 0, again.output
    repeated = json.loads(again.stdout.strip().splitlines()[-1])
    assert repeated["demos"] == 3 and repeated["results"] == payload["results"] | {
        arm: {**row, "wall_s": repeated["results"][arm]["wall_s"]} for arm, row in payload["results"].items()
    }


def test_an_arm_that_ended_below_its_start_is_flagged() -> None:
    from inril_robot.cli.quickstart import _result_row
    from inril_robot.learning.inril.finetune import FinetuneResult

    def rate(k: int) -> dict[str, float]:
        return {"rate": k / 100, "successes": k, "trials": 100, "ci95_low": 0.0, "ci95_high": 1.0}

    run = FinetuneResult(
        "x",
        "ppo",
        0,
        "none",
        0,
        8,
        12000,
        1.0,
        [{"success_rate": 0.5}, {"success_rate": 0.4}],
        None,
        None,
        None,
        "x/last.pt",
        None,
    )
    worse = _result_row(run, {"success": rate(48), "stops": 28}, {"success": rate(40), "stops": 35})
    better = _result_row(run, {"success": rate(48), "stops": 28}, {"success": rate(90), "stops": 2})
    assert worse["below_start"] and worse["moved"] == pytest.approx(-0.08)
    assert not better["below_start"] and better["heldout_stops"] == {"pretrained": 28, "final": 2}
