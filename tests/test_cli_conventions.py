"""README's paragraph on the options every command takes is true, and help text keeps its units."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from inril_robot.cli import app

CONFIG_AND_SET = [
    "collect",
    "pretrain",
    "finetune",
    "serve",
    "eval",
    "sim run",
    "safety-check",
    "config show",
    "bench markers",
    "bench sim",
    "bench policy",
    "bench markers",
    "calibrate intrinsics",
    "calibrate hand-eye",
    "robot recover",
]
SET_ONLY = ["quickstart", "sim-pretrain", "bench learner", "bench sample-efficiency", "bench sim2sim"]


def leaf_commands() -> dict[str, Any]:
    out: dict[str, Any] = {}

    def walk(cmd: Any, prefix: str) -> None:
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
            for name, sub in cmd.commands.items():
                walk(sub, f"{prefix} {name}".strip())
        else:
            out[prefix] = cmd

    walk(typer.main.get_command(app), "")
    return out


def options(cmd: Any) -> set[str]:
    return {opt for p in cmd.params for opt in getattr(p, "opts", [])}


def test_every_command_takes_json() -> None:
    commands = leaf_commands()
    assert len(commands) >= 25
    missing = sorted(name for name, cmd in commands.items() if "--json" not in options(cmd))
    assert not missing, f"commands without --json: {missing}"


def test_config_and_set_as_the_readme_says() -> None:
    commands = leaf_commands()
    for name in CONFIG_AND_SET:
        assert {"--config", "--set"} <= options(commands[name]), name
    for name in SET_ONLY:
        assert "--set" in options(commands[name]) and "--config" not in options(commands[name]), name
    others = set(commands) - set(CONFIG_AND_SET) - set(SET_ONLY)
    assert not [n for n in others if "--set" in options(commands[n])], "a command takes --set: list it in README"


@pytest.mark.parametrize(
    ("command", "unit"),
    [(["calibrate", "board"], "side [mm]"), (["serve"], "this long [s]"), (["bench", "sim"], "per task [s]")],
)
def test_help_keeps_units(command: list[str], unit: str) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert unit in result.output, result.output
