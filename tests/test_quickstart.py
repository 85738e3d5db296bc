"""`inril-robot quickstart` end to end on a tiny budget (the real run: 50 lift demos, 2,000 steps, ~45 s)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from inril_robot.cli import app


def test_quickstart_records_pretrains_and_evaluates(tmp_path: Path) -> None:
    args = ["quickstart", "--out", str(tmp_path / "qs"), "--task", "reach", "--demos", "3", "--steps", "20",
            "--episodes", "2", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["demos"] == 3 and payload["pretrain_steps"] == 20 and payload["eval"]["episodes"] == 2
    for path in payload["files"].values():
        assert Path(path).exists(), path
    again = CliRunner().invoke(app, args)  # re-running resumes: nothing recorded or trained twice
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout.strip().splitlines()[-1])["demos"] == 3
