"""`inril-robot config show|presets`: the presets and the resolved configuration."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from inril_robot.cli._common import (
    CamerasOpt,
    ConfigOpt,
    JsonOpt,
    SetOpt,
    TaskOpt,
    emit_json,
    resolve,
)
from inril_robot.config import PRESET_KINDS, list_presets, to_yaml

# rich_markup_mode=None: help text is printed as written, so units such as "[mm]" and "[s]" are not eaten as markup


config_app = typer.Typer(help="Inspect presets and resolved configurations.", no_args_is_help=True)


# ------------------------------------------------------------------------------------------------------ config
@config_app.command("show")
def config_show(
    robot: Annotated[str, typer.Option(help="Robot preset (configs/robots).")] = "sim",
    task: TaskOpt = "lift",
    cameras: CamerasOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print the fully resolved, validated configuration (YAML, or JSON with --json)."""
    cfg = resolve(robot, task, cameras, config, set_)
    if json_out:
        emit_json(cfg.model_dump(mode="json"))
    else:
        sys.stdout.write(to_yaml(cfg))


@config_app.command("presets")
def config_presets(json_out: JsonOpt = False) -> None:
    """List the shipped presets by kind."""
    presets = {kind: list_presets(kind) for kind in PRESET_KINDS}
    if json_out:
        emit_json(presets)
        return
    table = Table("kind", "presets")
    for kind, names in presets.items():
        table.add_row(kind, ", ".join(names) or "—")
    Console().print(table)
