"""`inril-robot collect`, `dataset ...` and `safety-check`: recording demonstrations and working with datasets."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from inril_robot.cli._common import (
    CamerasOpt,
    ConfigOpt,
    DatasetArg,
    JsonOpt,
    SeedOpt,
    SetOpt,
    TaskOpt,
    emit_json,
    err,
    fail,
    key_value_table,
    open_dataset,
    progress_columns,
    resolve,
    status_line,
)
from inril_robot.reporting.progress import make_progress

# rich_markup_mode=None: help text is printed as written, so units such as "[mm]" and "[s]" are not eaten as markup


dataset_app = typer.Typer(help="Inspect, visualise and convert demonstration datasets.", no_args_is_help=True)


# ------------------------------------------------------------------------------------------------------ collect
def collect(
    out: Annotated[Path, typer.Option("--out", help="Dataset directory (created, or appended to).")],
    robot: Annotated[str, typer.Option(help="Robot preset: sim or franka.")] = "sim",
    task: TaskOpt = "lift",
    teleop: Annotated[str, typer.Option(help="scripted (sim expert), keyboard or spacemouse.")] = "scripted",
    episodes: Annotated[int, typer.Option(min=1, help="Kept episodes the dataset should hold (resume-safe).")] = 20,
    cameras: CamerasOpt = None,
    notes: Annotated[str, typer.Option(help="Operator notes stored with every episode.")] = "",
    execute: Annotated[bool, typer.Option(help="Let a real robot move (default: shadow mode, the arm holds).")] = False,
    view: Annotated[
        bool | None,
        typer.Option(
            "--view/--no-view",
            help="Show the operator the scene, cameras, "
            "EE/object positions and the keep/discard prompt on a local web page "
            "(default: on for a human teleop).",
        ),
    ] = None,
    view_port: Annotated[
        int,
        typer.Option(
            min=0, max=65535, help="Port of the view page on 127.0.0.1 (0: any free one; forward it over SSH)."
        ),
    ] = 8765,
    view_png: Annotated[
        Path | None, typer.Option("--view-png", help="Also rewrite this PNG with the view every step.")
    ] = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Record teleoperated (or scripted, in sim) demonstrations; every action passes the safety envelope."""
    import signal

    from inril_robot.core.contract import ContractMismatch
    from inril_robot.data.store import DatasetError
    from inril_robot.hardware import RobotFault
    from inril_robot.runtime.collect import CollectStatus
    from inril_robot.runtime.collect import collect as run_collect
    from inril_robot.runtime.env import RobotEnv
    from inril_robot.runtime.registry import make_teleop

    cfg = resolve(robot, task, cameras, config, [f"teleop.kind={teleop}", *(set_ or [])], seed)
    if cfg.robot.kind != "sim" and not execute:
        err.print(
            "[yellow]without --execute: shadow mode, the arm holds; episodes are marked shadow and no learner "
            "uses them[/]"
        )
    if teleop == "scripted" and cfg.robot.kind != "sim":
        fail("the scripted expert needs the simulator's object poses: use --robot sim, or a human teleop")

    def on_sigterm(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    env = RobotEnv(cfg, execute=execute)
    source = make_teleop(cfg, env)
    if teleop == "keyboard":
        from inril_robot.drivers.keyboard import help_text

        err.print(help_text(), markup=False, highlight=False)
    operator_view = None
    if view if view is not None else teleop != "scripted":
        from inril_robot.runtime.teleop_view import OperatorView

        operator_view = OperatorView(port=view_port, png=view_png)
        if operator_view.server is not None:
            err.print(f"view: {operator_view.server.url} (scene, cameras, positions, keep/discard prompt)")
    live_table = CollectDisplay()

    def on_update(status: Any) -> None:
        if isinstance(status, CollectStatus):
            display.update(status)
            if operator_view is not None:
                operator_view.show(env, status)

    try:
        with env, live_table as display:
            result = run_collect(
                cfg,
                out,
                episodes,
                env,
                source,
                notes=notes,
                on_update=on_update,
                say=lambda text: err.print(f"[bold yellow]{escape(text)}[/]"),
            )
    except (DatasetError, ContractMismatch, RobotFault) as e:
        fail(str(e))
        return
    finally:
        source.close()
        if operator_view is not None:
            operator_view.close()
    payload = result.to_dict()
    if json_out:
        emit_json(payload)
    else:
        table = Table(title=f"collect · {cfg.task.name} · {teleop}", show_header=False)
        table.add_row("dataset", str(out))
        table.add_row("kept this run", f"{result.kept} (dataset now {result.kept_before + result.kept}/{episodes})")
        table.add_row("discarded", str(result.discarded))
        table.add_row("steps", str(result.steps))
        if result.interrupted:
            table.add_row("interrupted", "yes: committed episodes kept, the open one dropped")
        if result.stopped:
            table.add_row("e-stop", result.stopped)
        for fault in result.faults:
            table.add_row("arm fault", f"{fault} (episode dropped; recovered and homed)")
        Console().print(table)
    if result.interrupted:
        raise typer.Exit(130)
    if result.stopped:
        raise typer.Exit(3)


class CollectDisplay:
    """Rich live display of a collection: episode, step, achieved Hz, kept/discarded, safety events."""

    def __init__(self) -> None:
        from rich.live import Live

        from inril_robot.reporting.progress import log_period

        self._live = Live(console=err, refresh_per_second=8, transient=False)
        self._plain = not err.is_terminal  # a log file: one plain line per period and per episode
        self._period = log_period()
        self._printed: tuple[float, Any] = (float("-inf"), None)

    def __enter__(self) -> CollectDisplay:
        if not self._plain:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._plain:
            self._live.__exit__(*exc)  # type: ignore[arg-type]

    def update(self, status: Any) -> None:
        if self._plain:
            when, episode = self._printed
            if episode != status.episode_index or time.monotonic() - when >= self._period:
                self._printed = (time.monotonic(), status.episode_index)
                err.print(
                    f"{time.strftime('%H:%M:%S')} collect episode {status.episode_index} step {status.step} · "
                    f"{status.hz:.1f} Hz · kept {status.kept}/{status.target} · discarded {status.discarded} · "
                    f"safety events {status.safety_events} · {status.last}",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
            return
        table = Table(show_header=True, box=None)
        for col in ("episode", "step", "Hz", "kept", "discarded", "safety events", "last"):
            table.add_column(col)
        table.add_row(
            str(status.episode_index),
            str(status.step),
            f"{status.hz:.1f}",
            f"{status.kept}/{status.target}",
            str(status.discarded),
            str(status.safety_events),
            status.last,
        )
        self._live.update(table)


def _verify_with_progress(ds: Any, quiet: bool) -> dict[int, list[str]]:
    """Every episode of `ds` checked against its stored sha256s, under the progress bar; corrupt index -> problems."""
    with make_progress(*progress_columns(), console=err, transient=True, disable=quiet) as progress:
        bar = progress.add_task("verifying", total=len(ds), status="")
        return ds.verify(lambda done, total: progress.update(bar, completed=done))


@dataset_app.command("info")
def dataset_info(
    path: DatasetArg,
    verify: Annotated[bool, typer.Option(help="Check every episode against its stored sha256s first.")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Summary: episodes, successes, steps, cameras, contract (refused when an episode is corrupt)."""
    ds = open_dataset(path)
    if verify:
        corrupt = _verify_with_progress(ds, json_out)
        if corrupt:
            fail(
                f"{path}: corrupt episode{'s' if len(corrupt) > 1 else ''} "
                + "; ".join(f"{i}: {p[0]}" for i, p in corrupt.items())
                + " (`inril-robot dataset verify` lists every problem)"
            )
    summary = ds.summary()
    if json_out:
        emit_json({**summary, "verified": verify})
        return
    table = Table(title=f"dataset {path}", show_header=False)
    for key in ("task", "episodes", "successes", "steps", "control_hz", "created", "modified", "calibration"):
        table.add_row(key, str(summary[key]))
    table.add_row("cameras", ", ".join(f"{k} {v[1]}x{v[0]}" for k, v in summary["cameras"].items()) or "none")
    table.add_row("observations", ", ".join(summary["observation_keys"]))
    c = ds.contract
    action = f"{c.action_type} ({c.action_dim}-D, {c.rotation_repr}, quat {c.quat_order}, frame {c.frame})"
    table.add_row("action", action)
    table.add_row("integrity", "every episode matches its stored sha256s" if verify else "not checked (--no-verify)")
    Console().print(table)


@dataset_app.command("verify")
def dataset_verify(path: DatasetArg, json_out: JsonOpt = False) -> None:
    """Check every episode against the sha256s stored at commit; exit 1 naming each corrupt episode."""
    ds = open_dataset(path)
    started = time.perf_counter()
    corrupt = _verify_with_progress(ds, json_out)
    payload = {
        "path": str(path),
        "episodes": len(ds),
        "steps": ds.num_steps,
        "corrupt": len(corrupt),
        "problems": {str(i): p for i, p in corrupt.items()},
        "seconds": round(time.perf_counter() - started, 3),
    }
    if json_out:
        emit_json(payload)
    else:
        table = key_value_table(f"dataset verify {path}")
        table.add_row("episodes checked", f"{len(ds)} ({ds.num_steps} steps, {payload['seconds']:.2f} s)")
        table.add_row("corrupt", str(len(corrupt)))
        for i, problems in corrupt.items():
            table.add_row(f"[red]episode {i}[/]", escape("; ".join(problems)))
        Console().print(table)
    if corrupt:
        raise typer.Exit(1)


@dataset_app.command("view")
def dataset_view(
    path: DatasetArg,
    out: Annotated[Path, typer.Option("--out", help="Output file: .mp4 (video) or .png (contact sheet).")],
    episode: Annotated[int, typer.Option(help="Episode index.")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """Write an MP4, or a PNG contact sheet, of an episode with its actions plotted under the frames."""
    from inril_robot.data.store import DatasetError
    from inril_robot.data.view import render_episode

    ds = open_dataset(path)
    try:
        written = render_episode(ds, episode, out)
    except (DatasetError, ValueError) as e:
        fail(str(e))
        return
    if json_out:
        emit_json({"dataset": str(path), "episode": episode, "out": str(written)})
    else:
        err.print(f"wrote {written}")


@dataset_app.command("stats")
def dataset_stats(path: DatasetArg, json_out: JsonOpt = False) -> None:
    """Compute the normalisation statistics training uses; writes DIR/stats.json."""
    from inril_robot.data.normalization import compute_stats, write_stats

    ds = open_dataset(path)
    stats = compute_stats(ds)
    written = write_stats(ds, stats)
    if json_out:
        emit_json({"path": str(written), "keys": stats})
        return
    table = Table("key", "dim", "mean", "std", "min", "max", title=f"normalisation statistics ({written})")
    for key, s in stats.items():
        fmt = lambda v: " ".join(f"{x:+.3f}" for x in v[:7]) + (" …" if len(v) > 7 else "")  # noqa: E731
        table.add_row(key, str(len(s["mean"])), fmt(s["mean"]), fmt(s["std"]), fmt(s["min"]), fmt(s["max"]))
    Console().print(table)


@dataset_app.command("import-furniture-bench")
def dataset_import_furniture_bench(
    src: Annotated[Path, typer.Argument(help="A FurnitureBench .pkl episode or a directory of them.")],
    out: Annotated[Path, typer.Option("--out", help="Dataset directory to create or append to.")],
    task: Annotated[str, typer.Option(help="Task name stored in the dataset.")] = "furniture_bench",
    image_size: Annotated[int | None, typer.Option(help="Resize images to this square size.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Convert FurnitureBench per-episode pickles (8-D delta-quaternion actions) into the episode store."""
    from inril_robot.core.contract import ContractMismatch
    from inril_robot.data.furniture_bench import import_furniture_bench
    from inril_robot.data.store import DatasetError

    try:
        report = import_furniture_bench(src, out, task=task, image_size=image_size)
    except (DatasetError, ContractMismatch, ValueError, FileNotFoundError) as e:
        fail(str(e))
        return
    payload = report.to_dict() if hasattr(report, "to_dict") else dict(report.__dict__)
    if json_out:
        emit_json(payload)
    else:
        Console().print(payload)


@dataset_app.command("export")
def dataset_export(
    path: DatasetArg,
    out: Annotated[Path, typer.Option("--out", help="Folder of the exported dataset (new or empty).")],
    fmt: Annotated[str, typer.Option("--format", help="lerobot (LeRobotDataset v3.0: parquet + MP4).")] = "lerobot",
    images: Annotated[
        str, typer.Option(help="video (H.264 MP4, LeRobot's default) or png (lossless, in the parquet).")
    ] = "video",
    json_out: JsonOpt = False,
) -> None:
    """Export the episode store to another tool's format (docs/data.md)."""
    from inril_robot.data.lerobot import LeRobotFormatError, export_lerobot, require_pyarrow

    require_pyarrow(fail)

    if fmt != "lerobot":
        fail(f"unknown --format {fmt!r}; available: lerobot")
    ds = open_dataset(path)
    try:
        with status_line(f"dataset export: {path} -> {out} (LeRobot v3.0, images as {images})"):
            report = export_lerobot(ds, out, images=images)
    except (LeRobotFormatError, ValueError) as e:
        fail(str(e))
        return
    if json_out:
        emit_json(report.to_dict())
    else:
        err.print(
            f"wrote {out}: {report.episodes} episodes, {report.frames} frames, images {report.images}, "
            f"{report.bytes_written / 1e6:.1f} MB"
        )


@dataset_app.command("import")
def dataset_import(
    src: Annotated[Path, typer.Argument(help="A LeRobot v3.0 dataset folder (meta/info.json, data/, videos/).")],
    out: Annotated[Path, typer.Option("--out", help="Dataset directory to create or append to.")],
    fmt: Annotated[str, typer.Option("--format", help="lerobot.")] = "lerobot",
    task: Annotated[str | None, typer.Option(help="Task stored in the dataset (default: the export's).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Import another tool's dataset into the episode store, mapped onto the contract (refuses what cannot be)."""
    from inril_robot.core.contract import ContractMismatch
    from inril_robot.data.lerobot import LeRobotFormatError, import_lerobot, require_pyarrow
    from inril_robot.data.store import DatasetError

    require_pyarrow(fail)

    if fmt != "lerobot":
        fail(f"unknown --format {fmt!r}; available: lerobot")
    try:
        with status_line(f"dataset import: {src} -> {out}"):
            report = import_lerobot(src, out, task=task)
    except (LeRobotFormatError, DatasetError, ContractMismatch, OSError) as e:
        fail(str(e))
        return
    if json_out:
        emit_json(report.to_dict())
    else:
        err.print(f"imported {report.episodes} episodes ({report.frames} frames, images {report.images}) into {out}")


# ------------------------------------------------------------------------------------------------- safety-check
def safety_check_cmd(
    path: DatasetArg,
    episode: Annotated[int | None, typer.Option(help="Only this episode index.")] = None,
    robot: Annotated[str | None, typer.Option(help="Robot preset whose limits apply (default: the dataset's).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Replay recorded proposed actions through the current envelope; exit 1 if an executed action broke it."""
    from inril_robot.data.safety_check import safety_check

    ds = open_dataset(path)
    preset = robot or ds.info.get("robot", {}).get("kind", "sim")
    cfg = resolve(preset, None, None, config, set_)
    report = safety_check(ds, cfg.safety, episode)
    if json_out:
        emit_json(report.to_dict())
    else:
        table = Table("limit", "events", "largest excursion", "where", title=f"safety-check {path} ({preset} limits)")
        for limit, count in sorted(report.event_counts.items()):
            worst = report.largest_excursion.get(limit, {})
            table.add_row(
                limit,
                str(count),
                f"{worst.get('excess', float('nan')):.4g}",
                f"episode {worst.get('episode')} step {worst.get('step')}",
            )
        Console().print(table)
        Console().print(
            f"{report.episodes} episodes, {report.steps} steps replayed; "
            f"{len(report.violations)} executed actions outside the current limits"
        )
        for v in report.violations[:20]:
            Console().print(f"  [red]violation[/] episode {v['episode']} step {v['step']}: {escape(v['detail'])}")
    if not report.ok:
        raise typer.Exit(1)
