"""What every `inril-robot` command group shares: the error console, the option aliases, `fail`, `emit_json`,
`resolve` and the progress/table helpers.

Every module of the `inril_robot.cli` package imports from here, so none of them imports another.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from inril_robot.config import RunConfig, load_config
from inril_robot.core.errors import ConfigError, InrilError
from inril_robot.reporting.progress import status_line as _status_line

err = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML file merged over the presets.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override, e.g. --set safety.max_step=0.01 (repeat).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print results as one JSON object on stdout.")]
TaskOpt = Annotated[str, typer.Option("--task", help="Task preset: reach, lift, push, peg.")]
CamerasOpt = Annotated[str | None, typer.Option("--cameras", help="Camera preset (configs/cameras), e.g. sim_front.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Base seed; episode i uses seed + i.")]


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


class InrilGroup(TyperGroup):
    """The one handler for user-facing errors: an `InrilError` that any command (of any sub-group) raises ends as
    `error: <message>` on stderr and exit code 2, like `fail`. Other exceptions keep their traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except InrilError as e:
            fail(str(e))


def status_line(text: str) -> Any:
    """A spinner on a terminal; a start and a done line in a log file (stderr)."""
    return _status_line(err, text)


def progress_columns(eta: bool = True) -> tuple[Any, ...]:
    """The columns of every long-running command's progress bar: what, bar, n/N, live status, elapsed (, ETA)."""
    columns: tuple[Any, ...] = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    return (*columns, TextColumn("ETA"), TimeRemainingColumn()) if eta else columns


def key_value_table(title: str) -> Table:
    """A two-column results table (name, value) without a header."""
    table = Table(title=title, show_header=False)
    table.add_column()
    table.add_column(overflow="fold")
    return table


ReportOnlyOpt = Annotated[
    bool,
    typer.Option(
        "--report-only", help="Only report: exit 0 even when a target or check is missed (default: exit 1 on a miss)."
    ),
]


def finish_targets(targets: list[Any], report_only: bool) -> None:
    """Mark each `targets.Target` met or MISSED on stderr; exit 1 if one was missed (unless --report-only)."""
    for t in targets:
        mark = "[green]met[/]   " if t.met else "[bold red]MISSED[/]"
        err.print(f"{mark} {escape(t.text())}", highlight=False, soft_wrap=True)
    missed = [t for t in targets if not t.met]
    if missed and not report_only:
        err.print(f"{len(missed)} of {len(targets)} targets missed (exit 1; --report-only to only report)")
        raise typer.Exit(1)


def emit_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()


def resolve(
    robot: str | None,
    task: str | None,
    cameras: str | None,
    config: Path | None,
    sets: list[str] | None,
    seed: int | None = None,
    algo: str | None = None,
) -> RunConfig:
    overrides = list(sets or [])
    if seed is not None:
        overrides.insert(0, f"seed={seed}")
    try:
        return load_config(robot=robot, cameras=cameras, task=task, config_file=config, overrides=overrides, algo=algo)
    except ConfigError as e:
        fail(str(e))
        raise  # unreachable: fail() exits


def rate_text(rate: dict[str, Any]) -> str:
    return (
        f"{rate['rate']:.0%} [{rate['ci95_low']:.0%}, {rate['ci95_high']:.0%}] ({rate['successes']}/{rate['trials']})"
    )


DatasetArg = Annotated[Path, typer.Argument(help="Dataset directory.")]


def open_dataset(path: Path) -> Any:
    from inril_robot.data.store import Dataset

    return Dataset(path)


def acting_sets(sets: list[str] | None) -> tuple[dict[str, Any], list[str]]:
    """Split `--set` at eval: `policy.*` ones change how the checkpoint's policy acts (`checkpoint.set_acting`, e.g.
    policy.diffusion.eta=1), the rest override the run configuration (`eval_config`)."""
    from inril_robot.config import parse_override

    acting: dict[str, Any] = {}
    rest: list[str] = []
    for text in sets or []:
        path, value = parse_override(text)
        if path[0] == "policy" and len(path) > 1:
            acting[".".join(path[1:])] = value
        else:
            rest.append(text)
    return acting, rest


def eval_config(
    robot: str,
    stored: dict[str, Any],
    cameras: str | None,
    config: Path | None,
    sets: list[str] | None,
    seed: int | None,
) -> RunConfig:
    """presets(robot, task) <- the checkpoint's task settings, cell, reward and cameras (unless --cameras) <-
    --config <- --set. The cell (issue 19): a policy trained on a real-like cell is evaluated on one, with its success
    source (`reward`)."""
    from inril_robot.config import apply_override, deep_merge, parse_override, preset_path, read_yaml, validate_config

    data = read_yaml(preset_path("robots", robot))
    data = deep_merge(data, read_yaml(preset_path("tasks", stored["task"]["name"])))
    data = deep_merge(data, {"task": stored["task"]})
    for section in ("cell", "reward"):
        if section in stored:
            data[section] = stored[section]
    if cameras is not None:
        data = deep_merge(data, read_yaml(preset_path("cameras", cameras)))
    else:
        data["cameras"] = stored.get("cameras", [])
    if seed is not None:
        data["seed"] = seed
    if config is not None:
        data = deep_merge(data, read_yaml(config))
    for text in sets or []:
        path, value = parse_override(text)
        apply_override(data, path, value)
    return validate_config(data)


def il_every(value: str | None) -> str | None:
    if value is not None and value != "auto" and not (value.isdigit() and int(value) >= 0):
        raise typer.BadParameter(
            f"expected a number of RL steps per IL step (>= 0; 0 = RL only) or 'auto', got {value!r}"
        )
    return value


IlEveryOpt = Annotated[
    str | None,
    typer.Option(
        "--il-every",
        callback=il_every,
        help="m: RL steps per IL step; 0 = RL only; auto. Default: finetune.inril.il_every (5).",
    ),
]
SeparationOpt = Annotated[
    str | None,
    typer.Option(help="none, pcgrad, orthogonal or residual. Default: finetune.inril.separation (pcgrad)."),
]


def learner_overrides(algo: str | None, il_every: str | None, separation: str | None) -> list[str]:
    """`--algo/--il-every/--separation` as `--set` overrides: only the ones given, so `--set finetune.*` keeps its
    value when they are not."""
    given = {"finetune.algo": algo, "finetune.inril.il_every": il_every, "finetune.inril.separation": separation}
    return [f"{key}={value}" for key, value in given.items() if value]
