"""`inril-robot quickstart` end to end on a tiny budget (the real run: 50 lift demos, 2,000 BC steps, 2 x 12k env
steps of fine-tuning)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from inril_robot.cli import app


def test_quickstart_records_pretrains_finetunes_both_ways_and_compares(tmp_path: Path) -> None:
    args = ["quickstart", "--out", str(tmp_path / "qs"), "--task", "reach", "--demos", "3", "--steps", "20",
            "--env-steps", "40", "--episodes", "2", "--json", "--set", "task.max_steps=20",
            "--set", "finetune.episodes_per_iteration=2", "--set", "finetune.subprocess_envs=false",
            "--set", "finetune.ppo.minibatch_size=16", "--set", "finetune.inril.il_batch_size=16"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["demos"] == 3 and payload["pretrain_steps"] == 20
    assert set(payload["results"]) == {"RL only", "IN-RIL"}
    for row in payload["results"].values():
        assert row["env_steps"] >= 40 and row["final"]["trials"] == 2 and row["pretrained"]["trials"] == 2
    assert payload["results"]["RL only"]["pretrained"] == payload["results"]["IN-RIL"]["pretrained"]
    for path in payload["files"].values():
        assert Path(path).exists(), path
    again = CliRunner().invoke(app, args)  # re-running resumes: nothing recorded or trained twice
    assert again.exit_code == 0, again.output
    repeated = json.loads(again.stdout.strip().splitlines()[-1])
    assert repeated["demos"] == 3 and repeated["results"] == payload["results"] | {
        arm: {**row, "wall_s": repeated["results"][arm]["wall_s"]} for arm, row in payload["results"].items()}
