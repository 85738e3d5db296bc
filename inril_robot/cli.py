"""The `inril-robot` command line. Thin: parse, load and validate configuration, call into the modules.

Conventions for every command: `--config FILE` and repeated `--set dotted.key=value` overrides on top of the presets
chosen by `--robot/--task/--cameras`; configuration is validated before anything starts; `--json` prints the results
as one JSON object on stdout (progress and tables go to stderr); exit code 2 means bad input.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
from rich.table import Table

from calibration.cli import calibrate_app
from inril_robot.cli_common import (
    CamerasOpt,
    ConfigOpt,
    InrilGroup,
    JsonOpt,
    ReportOnlyOpt,
    SeedOpt,
    SetOpt,
    TaskOpt,
    emit_json,
    err,
    fail,
    finish_targets,
    key_value_table,
    progress_columns,
    resolve,
    status_line,
)
from inril_robot.cli_common import rate_text as _rate_text
from inril_robot.config import PRESET_KINDS, ConfigError, RunConfig, list_presets, to_yaml
from inril_robot.progress import make_progress
from sim2real.cli import bench_sim2sim_cmd, sim_pretrain_cmd

# rich_markup_mode=None: help text is printed as written, so units such as "[mm]" and "[s]" are not eaten as markup
app = typer.Typer(
    help="Deploy and fine-tune Franka policies with IN-RIL, in simulation and on the robot.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    cls=InrilGroup,
)  # InrilGroup: one handler turns any InrilError into a one-line error, exit 2
sim_app = typer.Typer(help="Run policies in the simulated Franka world.", no_args_is_help=True)
bench_app = typer.Typer(help="Measured performance, with baselines measured in the same run.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect presets and resolved configurations.", no_args_is_help=True)
dataset_app = typer.Typer(help="Inspect, visualise and convert demonstration datasets.", no_args_is_help=True)
keys_app = typer.Typer(help="CurveZMQ keys for a policy server reachable off this machine.", no_args_is_help=True)
robot_app = typer.Typer(help="The real arm: its fault state, and recovery from a fault.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")
app.add_typer(dataset_app, name="dataset")
app.add_typer(bench_app, name="bench")
app.add_typer(config_app, name="config")
app.add_typer(keys_app, name="keys")
app.add_typer(robot_app, name="robot")
app.add_typer(calibrate_app, name="calibrate")  # issue 10: calibration/cli.py
app.command("sim-pretrain")(sim_pretrain_cmd)  # issue 10: sim2real/cli.py
bench_app.command("sim2sim")(bench_sim2sim_cmd)  # issue 10: sim2real/cli.py


# ------------------------------------------------------------------------------------------------------ doctor
@app.command()
def doctor(
    json_out: JsonOpt = False,
    render_probe: Annotated[bool, typer.Option(help="Probe EGL/OSMesa rendering in subprocesses.")] = True,
    robot: Annotated[str | None, typer.Option(help="'franka': also check the real robot (FCI, versions).")] = None,
    host: Annotated[str | None, typer.Option(help="Robot (FCI) address; default robot.franka.host.")] = None,
    server: Annotated[str | None, typer.Option(help="Policy server endpoint (tcp://HOST:PORT) to time.")] = None,
    report_only: ReportOnlyOpt = False,
) -> None:
    """Check this machine for each extra: MuJoCo and rendering, franky/libfranka and RT kernel, RealSense, HID, GPU.

    A check is missed when it is an error anywhere, or a missing package in an area this run needs (core, sim, and
    franka with --robot franka, network with --server); then the exit code is 1 (unless --report-only)."""
    from inril_robot.config import FrankaConfig
    from inril_robot.doctor import check_met, render_table, run_checks

    if robot not in (None, "sim", "franka"):
        raise typer.BadParameter(f"--robot must be sim or franka, got {robot!r}")
    if robot == "franka" and host is None:
        host = FrankaConfig().host
    required = {"core", "sim", *(["franka"] if robot == "franka" else []), *(["network"] if server else [])}
    with status_line("doctor: checking this machine"):
        checks = run_checks(render_probe=render_probe, host=host, server=server)
    met = [check_met(c, required) for c in checks]
    missed = [c for c, m in zip(checks, met, strict=True) if not m]
    if json_out:
        emit_json(
            {
                "checks": [{**c.to_dict(), "met": m} for c, m in zip(checks, met, strict=True)],
                "required_areas": sorted(required),
                "ok": not missed,
            }
        )
    else:
        Console().print(render_table(checks, met))
    if missed:
        err.print(
            f"[bold red]{len(missed)} check(s) missed:[/] "
            + escape("; ".join(f"{c.area}/{c.item}: {c.status}" for c in missed)),
            highlight=False,
        )
        if not report_only:
            raise typer.Exit(1)
    else:
        err.print(f"[green]all {len(checks)} checks met[/] (warnings and missing optional extras do not count)")


def rollout_with_progress(env: Any, policy: Any, episodes: int, *, label: str, transient: bool, **kwargs: Any) -> Any:
    """`rollout.run_episodes` under a rich progress bar (episodes, success so far, env steps/s, ETA) on stderr."""
    from inril_robot.rollout import run_episodes

    columns = progress_columns()
    successes = steps = 0
    started = time.perf_counter()
    with make_progress(*columns, console=err, transient=transient) as progress:
        bar = progress.add_task(label, total=episodes, status="")

        def on_step(episode: int, step: int, done_success: bool | None) -> None:
            nonlocal successes, steps
            steps += 1
            if done_success is None:
                return
            successes += done_success
            rate = steps / max(time.perf_counter() - started, 1e-9)
            progress.update(bar, advance=1, status=f"success {successes}/{episode + 1} · {rate:.0f} steps/s")

        return run_episodes(env, policy, episodes, on_step=on_step, **kwargs)


# --------------------------------------------------------------------------------------------------- quickstart
@app.command()
def quickstart(
    out: Annotated[Path, typer.Option("--out", help="Folder for demos, runs and results.")] = Path("runs/quickstart"),
    task: TaskOpt = "lift",
    demos: Annotated[int, typer.Option(min=1, help="Scripted demonstrations to record.")] = 50,
    demo_noise: Annotated[float, typer.Option(min=0.0, max=1.0, help="Expert noise of the demos.")] = 0.5,
    steps: Annotated[int, typer.Option(min=1, help="Pre-training gradient steps.")] = 2000,
    env_steps: Annotated[int, typer.Option(min=1, help="Fine-tuning budget per run [env steps].")] = 12_000,
    episodes: Annotated[int, typer.Option(min=1, help="In-run evaluation episodes.")] = 50,
    heldout_episodes: Annotated[int, typer.Option(min=1, help="Final held-out evaluation episodes.")] = 100,
    seed: Annotated[int, typer.Option(min=0, help="Fine-tuning seed (demos and pre-training are shared).")] = 0,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The whole path in simulation on CPU: scripted demos -> pre-training -> RL-only and IN-RIL fine-tuning ->
    held-out evaluation of where each arm started and ended."""
    import drivers.sim  # noqa: F401 - selects the GL backend before mujoco loads
    from inril_robot.quickstart import run_quickstart

    columns = progress_columns()
    with make_progress(*columns, console=err, transient=json_out) as progress:
        bars: dict[str, Any] = {}

        def on_progress(arm: str, event: dict[str, Any]) -> None:
            if arm not in bars:
                bars[arm] = progress.add_task(f"finetune · {arm}", total=env_steps, status="")
            if event["event"] == "steps":
                progress.update(bars[arm], advance=event["steps"])
            elif event.get("eval_success") is not None:
                progress.update(bars[arm], completed=event["env_steps"], status=f"eval {event['eval_success']:.0%}")

        try:
            result = run_quickstart(
                out,
                task=task,
                demos=demos,
                demo_noise=demo_noise,
                steps=steps,
                env_steps=env_steps,
                eval_episodes=episodes,
                heldout_episodes=heldout_episodes,
                seed=seed,
                overrides=list(set_ or []),
                on_stage=lambda text: err.print(f"[bold cyan]quickstart[/] {escape(text)}"),
                on_progress=on_progress,
            )
        except ConfigError as e:
            fail(str(e))
            return
    payload = result.to_dict()
    if json_out:
        emit_json(payload)
        return
    table = Table(
        title=f"quickstart · {task} · {result.demos} noisy demos · {env_steps:,} fine-tuning env steps · seed {seed}"
    )
    for column in (
        "run",
        f"pre-trained (held-out, {heldout_episodes})",
        f"after (held-out, {heldout_episodes})",
        "moved",
        "in-run start -> end",
        "wall",
    ):
        table.add_column(column)
    for arm, row in result.results.items():
        moved = f"{row['moved'] * 100:+.0f} points"
        if row["below_start"]:
            moved = f"[bold red]{moved} BELOW ITS START[/]"
        table.add_row(
            arm,
            _rate_text(row["heldout_pretrained"]),
            _rate_text(row["heldout_final"]),
            moved,
            f"{_rate_text(row['pretrained'])} -> {_rate_text(row['final'])}",
            f"{row['wall_s']:.0f} s",
        )
    Console().print(table)
    below = [arm for arm, row in result.results.items() if row["below_start"]]
    if below:
        err.print(
            f"[bold red]warning[/]: {', '.join(below)} ended below the pre-trained policy on the held-out "
            "episodes: fine-tuning made it worse."
        )
    files = Table(show_header=False, title="files")
    files.add_column()
    files.add_column(overflow="fold")
    for name, path in result.files.items():
        files.add_row(name, path)
    files.add_row("time", ", ".join(f"{k} {v:.0f} s" for k, v in result.stage_seconds.items()))
    Console().print(files)
    err.print(
        "next: open learning_curves.png; `inril-robot eval --checkpoint <checkpoint> --video eval.mp4` to watch "
        "a policy; `inril-robot bench sample-efficiency` for the seeded comparison of every IN-RIL variant."
    )


@sim_app.command("run")
def sim_run(
    task: TaskOpt = "lift",
    policy: Annotated[str, typer.Option(help="Policy to run: scripted (the task's expert).")] = "scripted",
    episodes: Annotated[int, typer.Option(min=1, help="Number of episodes.")] = 20,
    render: Annotated[Path | None, typer.Option(help="Write an MP4 of the first episodes here.")] = None,
    video_episodes: Annotated[int, typer.Option(min=1, help="Episodes recorded into --render.")] = 3,
    video_size: Annotated[
        int,
        typer.Option(
            min=32,
            max=2160,
            help="--render frame height [px]; without --cameras the video camera renders at this size.",
        ),
    ] = 256,
    cameras: CamerasOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run a policy in simulation; report success rate (Wilson 95% interval), episode length and env steps/s."""
    import drivers.sim  # noqa: F401 - selects the GL backend before mujoco loads
    from inril_robot.env import RobotEnv
    from inril_robot.registry import DriverUnavailable
    from inril_robot.rollout import scripted_policy

    if policy != "scripted":
        fail(f"unknown policy {policy!r}; available: scripted (run a checkpoint with `inril-robot eval --checkpoint`)")
    sets = list(set_ or [])
    if render is not None and cameras is None:
        cameras = "sim_front"
        sets = [f"cameras.front.{dim}={video_size}" for dim in ("width", "height")] + sets
    cfg = resolve("sim", task, cameras, config, sets, seed)
    try:
        env = RobotEnv(cfg)
    except DriverUnavailable as e:
        fail(str(e))
        return
    with env:
        summary = rollout_with_progress(
            env,
            scripted_policy,
            episodes,
            seed=cfg.seed,
            video=render,
            video_episodes=video_episodes,
            label=f"{cfg.task.name} · {policy}",
            transient=json_out,
            policy_name=policy,
            video_height=video_size,
        )
    result = summary.to_dict()
    if json_out:
        emit_json(result)
        return
    table = Table(title=f"sim run · {cfg.task.name} · {policy}", show_header=False)
    table.add_row("success", str(summary.success))
    table.add_row("mean episode length", f"{result['mean_length']:.1f} steps")
    table.add_row("mean return", f"{result['mean_return']:.3f}")
    table.add_row("env steps/s", f"{result['env_steps_per_s']:.0f} (incl. expert and rendering)")
    table.add_row("safety events", f"{result['safety_events']} (every action passes the envelope)")
    if render:
        table.add_row("video", str(render))
    Console().print(table)


# ------------------------------------------------------------------------------------------------------ collect
@app.command()
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

    from inril_robot.collect import CollectStatus
    from inril_robot.collect import collect as run_collect
    from inril_robot.contract import ContractMismatch
    from inril_robot.data.store import DatasetError
    from inril_robot.env import RobotEnv
    from inril_robot.hardware import RobotFault
    from inril_robot.registry import make_teleop

    if robot == "sim":
        import drivers.sim  # noqa: F401 - selects the GL backend before mujoco loads
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
        from drivers.keyboard import help_text

        err.print(help_text(), markup=False, highlight=False)
    operator_view = None
    if view if view is not None else teleop != "scripted":
        from inril_robot.teleop_view import OperatorView

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

        from inril_robot.progress import log_period

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


@robot_app.command("recover")
def robot_recover(
    robot: Annotated[str, typer.Option(help="Robot preset: franka.")] = "franka",
    host: Annotated[str | None, typer.Option(help="Robot (FCI) address; default robot.franka.host.")] = None,
    home: Annotated[bool, typer.Option(help="Also move the arm home afterwards (needs --execute).")] = False,
    execute: Annotated[bool, typer.Option(help="Let the arm move (for --home).")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Clear the arm's fault (reflex, user stop, control error) after checking the cell; the fault state before and
    after. Never moves the arm unless --home --execute."""
    from inril_robot.hardware import RobotFault
    from inril_robot.registry import DriverUnavailable, make_robot

    if robot == "sim":
        fail("the simulated arm never faults: nothing to recover")
    if home and not execute:
        fail("--home moves the arm: add --execute")
    cfg = resolve(robot, None, None, config, [*([f"robot.franka.host={host}"] if host else []), *(set_ or [])], None)
    try:
        arm: Any = make_robot(cfg, [], execute=True)
        arm.connect()
    except (DriverUnavailable, ConnectionError) as e:
        fail(str(e))
        return
    try:
        before = arm.fault_state()
        try:
            arm.recover()
            if home:
                arm.home()
        except RobotFault as e:
            fail(f"recovery failed: {e}", code=1)
        after = arm.fault_state()
    finally:
        arm.close()
    payload = {"host": cfg.robot.franka.host, "before": before, "after": after, "homed": home}
    if json_out:
        emit_json(payload)
        return
    table = key_value_table(f"robot recover · {cfg.robot.franka.host}")
    table.add_row("before", f"{before['robot_mode']}; {before['last_motion_errors']}")
    table.add_row("after", f"{after['robot_mode']}; {after['last_motion_errors']}")
    table.add_row("homed", "yes" if home else "no (the arm stays where it is)")
    Console().print(table)


# ------------------------------------------------------------------------------------------------------ dataset
DatasetArg = Annotated[Path, typer.Argument(help="Dataset directory.")]


def _open_dataset(path: Path) -> Any:
    from inril_robot.data.store import Dataset

    return Dataset(path)


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
    ds = _open_dataset(path)
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
    ds = _open_dataset(path)
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

    ds = _open_dataset(path)
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
    from inril_robot.data.stats import compute_stats, write_stats

    ds = _open_dataset(path)
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
    from inril_robot.contract import ContractMismatch
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
    ds = _open_dataset(path)
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
    from inril_robot.contract import ContractMismatch
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
@app.command("safety-check")
def safety_check_cmd(
    path: DatasetArg,
    episode: Annotated[int | None, typer.Option(help="Only this episode index.")] = None,
    robot: Annotated[str | None, typer.Option(help="Robot preset whose limits apply (default: the dataset's).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Replay recorded proposed actions through the current envelope; exit 1 if an executed action broke it."""
    from inril_robot.safety_check import safety_check

    ds = _open_dataset(path)
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


# ----------------------------------------------------------------------------------------------------- pretrain
@app.command()
def pretrain(
    dataset: Annotated[Path, typer.Option("--dataset", help="Demonstration dataset directory.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder (checkpoints, metrics.csv, curves.png, TB events).")],
    policy: Annotated[str, typer.Option(help="gaussian or diffusion (algo preset bc_<policy>).")] = "gaussian",
    task: Annotated[str | None, typer.Option(help="Task preset; default the dataset's task (must match it).")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Gradient steps (train.steps).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    cameras: CamerasOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Pre-train a policy on demonstrations (behaviour cloning), evaluating it in simulation as it trains."""
    import drivers.sim  # noqa: F401 - selects the GL backend before mujoco loads
    from inril_robot.contract import ContractMismatch
    from inril_robot.data.store import DatasetError
    from inril_robot.policies.checkpoint import CheckpointError
    from inril_robot.pretrain import PretrainError
    from inril_robot.pretrain import pretrain as run_pretrain
    from inril_robot.registry import DriverUnavailable

    if policy not in ("gaussian", "diffusion"):
        fail(f"unknown policy {policy!r}; available: gaussian, diffusion")
    ds = _open_dataset(dataset)
    stored_task = ds.info.get("task")
    if task is not None and task != stored_task:
        fail(f"dataset {dataset} holds task {stored_task!r}, not --task {task!r}")
    task = task or stored_task
    if task not in list_presets("tasks"):
        fail(f"dataset {dataset} holds task {stored_task!r}, which has no task preset; pass --task")
    sets = [*(set_ or []), *([f"train.steps={steps}"] if steps is not None else [])]
    cfg = resolve("sim", task, cameras, config, sets, seed, algo=f"bc_{policy}")
    columns = progress_columns()
    last_eval = ""
    with make_progress(*columns, console=err, transient=json_out) as progress:
        bar = progress.add_task(f"pretrain {policy} · {task}", total=cfg.train.steps, status="")
        first = True

        def on_progress(step: int, loss: float, samples_per_s: float, evaluation: dict[str, Any] | None) -> None:
            nonlocal first, last_eval
            if evaluation is not None:
                rate = evaluation["success"]
                last_eval = f" · eval {rate['successes']}/{rate['trials']}"
            status = f"loss {loss:.4g} · {samples_per_s:,.0f} samples/s{last_eval}"
            if first:  # a resumed run starts part-way: restart the rate estimate there
                progress.reset(bar, total=cfg.train.steps, completed=step, status=status)
                first = False
            else:
                progress.update(bar, completed=step, status=status)

        try:
            result = run_pretrain(cfg, ds, out, resume=resume, on_progress=on_progress)
        except ContractMismatch as e:
            hint = ""
            if e.field.endswith("_rgb") or e.field.startswith("cameras"):
                cams = ", ".join(f"{n} {w}x{h}" for n, (h, w) in ds.contract.cameras.items()) or "none"
                hint = f" (the dataset's cameras: {cams}; pass a matching --cameras / --set cameras...)"
            fail(f"{e}{hint}")
            return
        except (PretrainError, DatasetError, CheckpointError, DriverUnavailable) as e:
            fail(str(e))
            return
        except KeyboardInterrupt:
            err.print(f"interrupted: continue from the last checkpoint with the same command and --resume ({out})")
            raise typer.Exit(130) from None
    payload = result.to_dict()
    if json_out:
        emit_json(payload)
        return
    table = key_value_table(f"pretrain · {policy} · {task}")
    table.add_row("run folder", str(out))
    table.add_row("steps", f"{result.start_step} -> {result.step}")
    table.add_row("final loss", f"{result.final_loss:.4g}" if result.final_loss is not None else "-")
    table.add_row("samples/s", f"{result.samples_per_s:,.0f}")
    if result.evals:
        final = result.evals[-1]
        table.add_row("eval (final)", f"{_rate_text(final['success'])} · mean length {final['mean_length']:.1f}")
    if result.best:
        table.add_row(
            "best", f"{_rate_text(result.best['success'])} at step {result.best['step']} ({result.best_checkpoint})"
        )
    table.add_row("checkpoint", f"{result.last_checkpoint} ({result.weights} weights for eval)")
    table.add_row("wall time", f"{result.wall_s:.1f} s")
    for warning in result.warnings:
        table.add_row("warning", warning)
    Console().print(table)


# ---------------------------------------------------------------------------------------------------- finetune
def _il_every(value: str) -> str:
    if value != "auto" and not (value.isdigit() and int(value) >= 0):
        raise typer.BadParameter(
            f"expected a number of RL steps per IL step (>= 0; 0 = RL only) or 'auto', got {value!r}"
        )
    return value


@app.command()
def finetune(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="The pre-trained checkpoint (.pt) to fine-tune.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder (checkpoints, metrics.csv, curves.png, TB events).")],
    demos: Annotated[Path | None, typer.Option("--demos", help="Demonstrations for the IL steps.")] = None,
    robot: Annotated[str, typer.Option(help="sim (in-process); franka goes through the policy server.")] = "sim",
    task: Annotated[str | None, typer.Option(help="Task (default and only allowed: the checkpoint's).")] = None,
    algo: Annotated[str, typer.Option(help="ppo (Gaussian), dppo (diffusion) or residual-ppo (any).")] = "ppo",
    il_every: Annotated[
        str, typer.Option("--il-every", callback=_il_every, help="m: RL steps per IL step; 0 = RL only; auto.")
    ] = "5",
    separation: Annotated[str, typer.Option(help="none, pcgrad, orthogonal or residual.")] = "pcgrad",
    env_steps: Annotated[int | None, typer.Option(min=1, help="Budget of executed control steps.")] = None,
    num_envs: Annotated[int | None, typer.Option(min=1, help="Parallel simulated envs (processes).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    server: Annotated[
        str | None,
        typer.Option(
            "--server", help="Fine-tune through the policy server at tcp://HOST:PORT (this process is the robot agent)."
        ),
    ] = None,
    bridge: Annotated[
        bool,
        typer.Option(
            "--bridge",
            help="--robot sim: start a local policy server and run the "
            "agent against it (franka always goes through a server).",
        ),
    ] = False,
    robot_id: Annotated[str, typer.Option("--robot-id", help="This robot's name on the server.")] = "robot0",
    speed: Annotated[
        float,
        typer.Option(min=0.0, help="Bridge: control-rate multiplier; 0 = as fast as the simulation runs (sim only)."),
    ] = 1.0,
    episodes: Annotated[int | None, typer.Option(min=1, help="Bridge: stop after this many episodes.")] = None,
    teleop: Annotated[
        str | None,
        typer.Option(
            help="Bridge: operator device for interventions, reset prompts "
            "and success keys (keyboard, spacemouse; franka default keyboard)."
        ),
    ] = None,
    execute: Annotated[bool, typer.Option(help="franka: let the arm move (otherwise shadow mode: it holds).")] = False,
    client_key: Annotated[
        Path | None, typer.Option("--client-key", help="This robot's CURVE secret key (keys DIR/NAME.key_secret).")
    ] = None,
    server_key: Annotated[
        Path | None, typer.Option("--server-key", help="The server's CURVE public key (keys DIR/server.key).")
    ] = None,
    cameras: CamerasOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Fine-tune a pre-trained policy with IN-RIL (RL with interleaved IL steps and gradient separation).

    --robot sim runs in this process by default; --server URL (or --bridge, or --robot franka) runs the robot agent
    against a policy server instead (docs/protocol.md)."""
    import drivers.sim  # noqa: F401 - selects the GL backend before mujoco loads
    from inril_robot.contract import ContractMismatch
    from inril_robot.data.store import DatasetError
    from inril_robot.inril.finetune import FinetuneError
    from inril_robot.inril.finetune import finetune as run_finetune
    from inril_robot.policies.checkpoint import CheckpointError, read_checkpoint
    from inril_robot.registry import DriverUnavailable

    stored_cfg = read_checkpoint(checkpoint)["run_config"]
    if task is not None and task != stored_cfg["task"]["name"]:
        fail(
            f"contract mismatch on task.name (checkpoint {checkpoint}): expected {stored_cfg['task']['name']!r}, "
            f"got {task!r}"
        )
    options = [
        f"finetune.algo={algo}",
        f"finetune.inril.il_every={il_every}",
        f"finetune.inril.separation={separation}",
        *([f"finetune.env_steps={env_steps}"] if env_steps else []),
        *([f"finetune.num_envs={num_envs}"] if num_envs else []),
    ]
    if robot not in ("sim", "franka"):
        fail(f"--robot {robot!r}: expected sim or franka")
    cfg = _eval_config(robot, stored_cfg, cameras, config, [*(set_ or []), *options], seed)
    if server is not None or bridge or robot != "sim":
        from inril_robot.bridge.commands import BridgeRun, finetune_through_bridge

        run = BridgeRun(
            checkpoint=checkpoint,
            out=out,
            demos=demos,
            server=server,
            robot_id=robot_id,
            speed=speed,
            episodes=episodes,
            teleop=teleop,
            execute=execute,
            client_key=client_key,
            server_key=server_key,
            resume=resume,
            server_args=[
                "--checkpoint",
                str(checkpoint),
                *(["--demos", str(demos)] if demos else []),
                *(["--resume"] if resume else []),
                *(["--config", str(config)] if config else []),
                *(["--seed", str(seed)] if seed is not None else []),
                *[a for o in [*(set_ or []), *options] for a in ("--set", o)],
            ],
        )
        try:
            payload = finetune_through_bridge(cfg, run, err, json_out)
        except (ValueError, RuntimeError, OSError) as e:
            fail(str(e))
            return
        if json_out:
            emit_json(payload)
        if payload.get("stopped"):
            raise typer.Exit(1)
        return
    ds = _open_dataset(demos) if demos is not None else None
    f = cfg.finetune
    columns = progress_columns()
    mode = "RL only" if f.inril.il_every == 0 else f"IN-RIL m={f.inril.il_every} {f.inril.separation}"
    with make_progress(*columns, console=err, transient=json_out) as progress:
        bar = progress.add_task(f"finetune {f.algo} · {cfg.task.name} · {mode}", total=f.env_steps, status="")
        last = {"eval": "", "status": ""}

        def on_progress(event: dict[str, Any]) -> None:
            if event["event"] == "steps":
                progress.update(bar, advance=event["steps"])
                return
            if event.get("eval_success") is not None:
                last["eval"] = f"eval {event['eval_success']:.0%}"
            if event["event"] == "iteration":
                guard = event.get("guard") or {}
                alpha = f" · guard α={guard['alpha']:.2f}" if guard and guard.get("alpha", 1.0) < 1.0 else ""
                cos = f" · cos {event['rl_cos_ref']:+.2f}" if event.get("rl_cos_ref") is not None else ""
                last["status"] = (
                    f"it {event['step']} · train {event['train_success']:.0%} · m {event.get('m')}"
                    f"{cos} · {event['env_steps_per_s']:.0f} steps/s{alpha} · "
                )
                progress.update(bar, completed=event["env_steps"])
            progress.update(bar, status=last["status"] + last["eval"])

        try:
            result = run_finetune(cfg, checkpoint, ds, out, resume=resume, on_progress=on_progress)
        except (FinetuneError, ContractMismatch, CheckpointError, DatasetError, DriverUnavailable) as e:
            fail(str(e))
            return
        except KeyboardInterrupt:
            err.print(f"interrupted: continue from the last checkpoint with the same command and --resume ({out})")
            raise typer.Exit(130) from None
    payload = result.to_dict()
    if json_out:
        emit_json(payload)
        return
    table = key_value_table(f"finetune · {f.algo} · {cfg.task.name} · {mode}")
    table.add_row("run folder", str(out))
    table.add_row("env steps", f"{result.env_steps:,} ({result.iterations} iterations)")
    if result.pretrained:
        table.add_row("pre-trained success", _rate_text(result.pretrained["success"]))
    if result.final:
        table.add_row("final success", _rate_text(result.final["success"]))
    if result.best:
        table.add_row("best", f"{_rate_text(result.best['success'])} at {result.best['env_steps']:,} env steps")
    table.add_row("checkpoint", result.last_checkpoint)
    table.add_row("curves", result.files["curves"])
    table.add_row("wall time", f"{result.wall_s:.0f} s")
    Console().print(table)


# ------------------------------------------------------------------------------------------------- bridge
@app.command()
def serve(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="The pre-trained checkpoint (.pt) to serve.")],
    demos: Annotated[Path | None, typer.Option("--demos", help="Demonstrations for the IL steps.")] = None,
    bind: Annotated[
        str, typer.Option(help="ZMQ endpoint; anything but loopback/ipc needs --keys.")
    ] = "tcp://127.0.0.1:5555",
    out: Annotated[Path, typer.Option("--out", help="Run folder (last.pt, last.train.pt, metrics.csv).")] = Path(
        "runs/serve"
    ),
    resume: Annotated[bool, typer.Option(help="Continue the learner state in --out.")] = False,
    async_learner: Annotated[
        bool,
        typer.Option(
            "--async-learner",
            help="Learn in a separate process, swapping versioned weights in (default: between episodes).",
        ),
    ] = False,
    no_learn: Annotated[bool, typer.Option("--no-learn", help="Inference only, deterministic actions.")] = False,
    keys: Annotated[
        Path | None, typer.Option("--keys", help="CurveZMQ key folder (`inril-robot keys generate`).")
    ] = None,
    algo: Annotated[str, typer.Option(help="ppo (Gaussian), dppo (diffusion) or residual-ppo (any).")] = "ppo",
    il_every: Annotated[
        str, typer.Option("--il-every", callback=_il_every, help="m: RL steps per IL step; 0 = RL only; auto.")
    ] = "5",
    separation: Annotated[str, typer.Option(help="none, pcgrad, orthogonal or residual.")] = "pcgrad",
    robot_timeout: Annotated[float, typer.Option(min=0.1, help="Drop a robot silent this long [s].")] = 5.0,
    episode_deadline: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Sync learner: seconds to wait for robots "
            "mid-episode once an update is due, then leave their episodes "
            "out.",
        ),
    ] = 60.0,
    endpoint_file: Annotated[Path | None, typer.Option(hidden=True)] = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The policy server: batched inference for many robots over ZMQ, IN-RIL updates on the episodes they send."""
    from inril_robot.bridge.commands import serve_command
    from inril_robot.policies.checkpoint import read_checkpoint

    stored_cfg = read_checkpoint(checkpoint)["run_config"]
    options = [
        f"finetune.algo={algo}",
        f"finetune.inril.il_every={il_every}",
        f"finetune.inril.separation={separation}",
    ]
    cfg = _eval_config("sim", stored_cfg, None, config, [*(set_ or []), *options], seed)
    mode = "off" if no_learn else ("async" if async_learner else "sync")
    try:
        payload = serve_command(
            cfg,
            checkpoint,
            demos,
            out,
            bind=bind,
            keys=keys,
            mode=mode,
            resume=resume,
            robot_timeout_s=robot_timeout,
            endpoint_file=endpoint_file,
            console=err,
            live=not json_out,
            episode_deadline_s=episode_deadline,
        )
    except (ValueError, RuntimeError, OSError) as e:
        fail(str(e))
        return
    if json_out:
        emit_json(payload)


@keys_app.command("generate")
def keys_generate(
    folder: Annotated[Path, typer.Argument(help="Key folder (created).")] = Path("keys"),
    robots: Annotated[
        list[str] | None, typer.Option("--robot", help="Robot name to create and allow-list (repeat).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """CurveZMQ keys: the server's pair (once) and one allow-listed pair per robot."""
    from inril_robot.bridge.security import generate

    written = generate(folder, list(robots or []))
    if json_out:
        emit_json({"folder": str(folder), "written": [str(p) for p in written]})
        return
    for path in written:
        err.print(str(path))
    err.print(
        f"server: `inril-robot serve --keys {folder} --bind tcp://0.0.0.0:5555 ...`; each robot: "
        f"`finetune --server tcp://GPU-BOX:5555 --server-key {folder}/server.key --client-key "
        f"{folder}/NAME.key_secret` (copy only those two files to the robot PC)"
    )


@bench_app.command("latency")
def bench_latency_cmd(
    repeats: Annotated[int, typer.Option(min=50, help="Timed round trips per measurement.")] = 2000,
    learner_seconds: Annotated[
        float, typer.Option(min=1.0, help="Seconds of inference timed with the learner idle and again while it trains.")
    ] = 8.0,
    target_p50_ratio: Annotated[
        float, typer.Option(min=0.0, help="Target: bridge p50 / raw echo p50 at most this.")
    ] = 1.5,
    target_p99_ratio: Annotated[
        float, typer.Option(min=0.0, help="Target: inference p99 with the learner training / idle at most this.")
    ] = 1.2,
    report_only: ReportOnlyOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Observation->action round trip through the bridge vs a raw ZMQ echo of the same bytes; inference p99 while
    the learner trains vs idle."""
    from inril_robot.bridge.bench import bench_latency, latency_targets, render_latency
    from inril_robot.targets import targets_payload

    with status_line("bench latency: raw echo, bridge round trip, inference with the learner idle / training"):
        payload = bench_latency(repeats=repeats, learner_seconds=learner_seconds)
    payload["target_p50_ratio"] = target_p50_ratio
    payload["learner"]["target_p99_ratio"] = target_p99_ratio
    targets = latency_targets(payload)
    payload.update(targets_payload(targets))
    if json_out:
        emit_json(payload)
    else:
        Console().print(render_latency(payload))
    finish_targets(targets, report_only)


# -------------------------------------------------------------------------------------------------------- eval
def _eval_config(
    robot: str,
    stored: dict[str, Any],
    cameras: str | None,
    config: Path | None,
    sets: list[str] | None,
    seed: int | None,
) -> RunConfig:
    """presets(robot, task) <- the checkpoint's task settings and cameras (unless --cameras) <- --config <- --set."""
    from inril_robot.config import apply_override, deep_merge, parse_override, preset_path, read_yaml, validate_config

    data = read_yaml(preset_path("robots", robot))
    data = deep_merge(data, read_yaml(preset_path("tasks", stored["task"]["name"])))
    data = deep_merge(data, {"task": stored["task"]})
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


@app.command("eval")
def eval_cmd(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A checkpoint written by pretrain (.pt).")],
    robot: Annotated[str, typer.Option(help="Robot preset: sim.")] = "sim",
    task: Annotated[str | None, typer.Option(help="Task (default and only allowed: the checkpoint's).")] = None,
    episodes: Annotated[int, typer.Option(min=1, help="Number of episodes.")] = 20,
    video: Annotated[
        Path | None, typer.Option("--video", help="Write an MP4 (H.264) of the first episodes here, back to back.")
    ] = None,
    videos: Annotated[
        bool,
        typer.Option("--videos", help="Write one MP4 per episode (the first --video-episodes) into the eval folder."),
    ] = False,
    video_episodes: Annotated[int, typer.Option(min=1, help="Episodes recorded into --video / --videos.")] = 3,
    video_size: Annotated[
        int,
        typer.Option(
            min=32, max=2160, help="Video frame height [px] (a camera that is only for the video renders at this size)."
        ),
    ] = 256,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for eval.json and --videos (default: RUN/eval/<checkpoint name> next to the checkpoint).",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Episode i uses seed + i (default: pretrain's eval seeds).")] = None,
    raw_weights: Annotated[bool, typer.Option("--raw-weights", help="Evaluate the raw weights, not the EMA.")] = False,
    cameras: CamerasOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate a checkpoint: success (Wilson 95% interval), mean return and length; refuses a mismatching contract."""
    import drivers.sim  # noqa: F401 - selects the GL backend before mujoco loads
    from inril_robot.contract import ContractMismatch
    from inril_robot.env import RobotEnv, build_contract
    from inril_robot.policies.checkpoint import load_checkpoint, read_checkpoint
    from inril_robot.policies.runner import PolicyRunner
    from inril_robot.pretrain import EVAL_SEED_BASE, pick_device
    from inril_robot.registry import DriverUnavailable

    if robot != "sim":
        fail(f"eval runs in simulation (--robot sim); on the robot, use finetune/serve (got --robot {robot!r})")
    payload = read_checkpoint(checkpoint)
    stored_cfg = payload["run_config"]
    if task is not None and task != stored_cfg["task"]["name"]:
        fail(
            f"contract mismatch on task.name (checkpoint {checkpoint}): expected {stored_cfg['task']['name']!r}, "
            f"got {task!r}"
        )
    cfg = _eval_config(robot, stored_cfg, cameras, config, set_, seed)
    out = out or checkpoint.parent / "eval" / checkpoint.stem
    env_cfg = cfg
    if (video is not None or videos) and not cfg.cameras:  # a camera only for the video: not a policy input
        size = [f"cameras.front.{dim}={video_size}" for dim in ("width", "height")]
        env_cfg = cfg.model_copy(update={"cameras": resolve(None, None, "sim_front", None, size).cameras})
    try:
        env = RobotEnv(env_cfg)
    except DriverUnavailable as e:
        fail(str(e))
        return
    with env:
        expect = build_contract(cfg, env.task)
        device = pick_device("auto")
        loaded = load_checkpoint(
            checkpoint, expect_contract=expect, use_ema=not raw_weights, map_location=device, payload=payload
        )
        runner = PolicyRunner(loaded.policy, expect, device)
        base_seed = EVAL_SEED_BASE if seed is None else seed
        try:
            summary = rollout_with_progress(
                env,
                runner,
                episodes,
                seed=base_seed,
                video=video,
                video_episodes=video_episodes,
                transient=json_out,
                label=f"eval {loaded.policy.cfg.kind} · {cfg.task.name}",
                policy_name=loaded.policy.cfg.kind,
                on_reset=runner.reset,
                video_dir=out if videos else None,
                video_height=video_size,
            )
        except ContractMismatch as e:
            fail(str(e))
            return
    result = summary.to_dict()
    result.update(
        {
            "checkpoint": str(checkpoint),
            "step": loaded.step,
            "weights": loaded.weights,
            "weights_sha256": loaded.weights_sha256,
            "seed": base_seed,
            "policy": loaded.policy.cfg.kind,
            "eval_json": str(out / "eval.json"),
        }
    )
    from inril_robot.atomic import atomic_open

    out.mkdir(parents=True, exist_ok=True)
    with atomic_open(out / "eval.json") as f:
        f.write(json.dumps(result, indent=1, default=str) + "\n")
    if json_out:
        emit_json(result)
        return
    table = key_value_table(f"eval · {cfg.task.name} · {loaded.policy.cfg.kind}")
    table.add_row("success", str(summary.success))
    table.add_row("mean return", f"{result['mean_return']:.3f}")
    table.add_row("mean episode length", f"{result['mean_length']:.1f} steps")
    table.add_row("checkpoint", f"{checkpoint} (step {loaded.step}, {loaded.weights} weights)")
    table.add_row("weights sha256", loaded.weights_sha256)
    table.add_row("seeds", f"{base_seed} .. {base_seed + episodes - 1}")
    table.add_row("safety events", str(result["safety_events"]))
    if video:
        table.add_row("video", str(video))
    if videos:
        table.add_row("episode videos", f"{len(result['episode_videos'])} in {out}")
    table.add_row("results", str(out / "eval.json"))
    Console().print(table)


# ------------------------------------------------------------------------------------------------------- bench
@bench_app.command("sim")
def bench_sim(
    tasks: Annotated[list[str] | None, typer.Option("--task", help="Tasks to measure (repeat); default all.")] = None,
    seconds: Annotated[float, typer.Option(min=0.5, help="Measuring time per task [s].")] = 3.0,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """State-only env steps/s per task next to the raw physics bound (raw mj_step rate / substeps)."""
    import drivers.sim  # noqa: F401
    from inril_robot.bench import bench_task, summarize

    names = tasks or ["reach", "lift", "push", "peg"]
    results = []
    with make_progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err, transient=True
    ) as progress:
        bar = progress.add_task("bench sim", total=len(names))
        for name in names:
            progress.update(bar, description=f"bench sim · {name}")
            cfg = resolve("sim", name, "none", config, set_)
            results.append(bench_task(cfg, seconds))
            progress.advance(bar)
    summary = summarize(results)
    if json_out:
        emit_json(summary)
        return
    table = Table(title="bench sim (one core, state-only)")
    for col in ("task", "substeps", "raw mj_step/s", "bound env steps/s", "env steps/s", "of bound"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            r.task,
            str(r.substeps),
            f"{r.raw_physics_steps_per_s:,.0f}",
            f"{r.bound_env_steps_per_s:,.0f}",
            f"{r.env_steps_per_s:,.0f}",
            f"{r.fraction_of_bound:.0%}",
        )
    Console().print(table)


@bench_app.command("data")
def bench_data_cmd(
    episodes: Annotated[int, typer.Option(min=1, help="Episodes written.")] = 4,
    steps: Annotated[int, typer.Option(min=2, help="Steps per episode.")] = 100,
    size: Annotated[int, typer.Option(min=16, help="Square image size of each of the two cameras.")] = 224,
    horizon: Annotated[int, typer.Option(min=1, help="Training window length.")] = 16,
    report_only: ReportOnlyOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Episode-store write frames/s (two RGB cameras) vs real time, and training-read windows/s vs plain numpy."""
    from inril_robot.data.bench import bench_data
    from inril_robot.targets import Target, targets_payload

    with status_line("bench data: writing and reading episodes"):
        result = bench_data(episodes=episodes, steps=steps, size=size, horizon=horizon)
    targets = [
        Target("write speed / real time (2 cameras at 10 Hz)", result["write"]["times_realtime"], 1.0, ">=", "x")
    ]
    result.update(targets_payload(targets))
    if json_out:
        emit_json(result)
        finish_targets(targets, report_only)
        return
    w, r = result["write"], result["read"]
    table = Table(title="bench data", show_header=False)
    table.add_row(
        "write",
        f"{w['frames_per_s']:,.0f} frames/s ({size}x{size} RGB, 2 cameras) = "
        f"{w['times_realtime']:.0f}x real time at 10 Hz; compression {w['compression_ratio']:.2f}x "
        f"(synthetic frames with sensor noise, near the lossless limit; rendered frames: docs/data.md)",
    )
    table.add_row("read (cold)", f"{r['cold_windows_per_s']:,.0f} windows/s of {horizon} steps (decoding episodes)")
    table.add_row(
        "read (warm)",
        f"{r['warm_windows_per_s']:,.0f} windows/s = {r['warm_fraction_of_numpy']:.0%} "
        f"of in-memory numpy ({r['numpy_baseline_windows_per_s']:,.0f}/s)",
    )
    v = result["verify"]
    table.add_row(
        "verify (sha256)",
        f"reading every array {v['read_all_s']:.2f} s, reading and verifying "
        f"{v['read_and_verify_all_s']:.2f} s (+{v['sha256_overhead']:.0%}, {v['megabytes_per_s']:,.0f} MB/s "
        "of raw frames)",
    )
    Console().print(table)
    finish_targets(targets, report_only)


@bench_app.command("policy")
def bench_policy_cmd(
    cameras: CamerasOpt = "sim_front_wrist",
    repeats: Annotated[int, typer.Option(min=10, help="Timed predictions per policy.")] = 200,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    threads: Annotated[
        int,
        typer.Option(
            min=0,
            help="torch CPU threads (0: torch default, one per core). "
            "Default 1: batch-1 inference of these small networks is fastest on one "
            "thread and does not slow down when other processes load the cores.",
        ),
    ] = 1,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    report_only: ReportOnlyOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Batch-1 inference latency (median, p99) of each default policy, state-only and with the cameras, vs 10 Hz.

    Target: each policy's p99 within one control period."""
    import torch

    from inril_robot.policies.latency import bench_default_policies
    from inril_robot.targets import Target, targets_payload

    cfg = resolve("sim", "lift", cameras, config, set_)
    with status_line("bench policy: timing batch-1 inference"):
        rows = bench_default_policies(cfg, repeats=repeats, device=device, threads=threads)
    budget_ms = 1000.0 / cfg.robot.control_hz
    targets = [Target(f"{r['policy']} · {r['observations']} p99", r["p99_ms"], budget_ms, "<=", " ms") for r in rows]
    for r, t in zip(rows, targets, strict=True):
        r["met"] = t.met
    payload = {
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "control_period_ms": budget_ms,
        "policies": rows,
        **targets_payload(targets),
    }
    if json_out:
        emit_json(payload)
        finish_targets(targets, report_only)
        return
    table = Table(
        "policy",
        "observations",
        "median ms",
        "p99 ms",
        "of the 10 Hz period",
        "p99 <= period",
        title=f"bench policy (batch 1, {device}, {payload['torch_threads']} torch threads)",
    )
    for r in rows:
        table.add_row(
            r["policy"],
            r["observations"],
            f"{r['median_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['p99_ms'] / budget_ms:.1%}",
            "[green]met[/]" if r["met"] else "[bold red]MISSED[/]",
        )
    Console().print(table)
    if repeats < 100:
        err.print(f"note: with {repeats} repeats the p99 is close to the single slowest prediction")
    finish_targets(targets, report_only)


@bench_app.command("learner")
def bench_learner_cmd(
    task: TaskOpt = "lift",
    transitions: Annotated[int, typer.Option(min=64, help="Transitions per update (the PPO batch).")] = 4096,
    repeats: Annotated[int, typer.Option(min=1, help="Timed updates per variant (round-robin).")] = 7,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Learner cost per update of each IN-RIL variant against RL only, measured in the same run (one thread)."""
    from inril_robot.inril.learner_bench import bench_learner

    with status_line("bench learner: timing updates round-robin"):
        payload = bench_learner(task, transitions, repeats, list(set_ or []))
    if json_out:
        emit_json(payload)
        return
    table = Table(
        "variant",
        "update [ms]",
        "vs RL only",
        "actor steps",
        "ms / actor step",
        title=f"bench learner · {payload['transitions']} transitions x {payload['epochs']} epochs, "
        f"minibatch {payload['minibatch_size']} · 1 thread · median of {repeats}",
    )
    for r in payload["variants"]:
        table.add_row(
            r["variant"],
            f"{r['update_ms']:.0f}",
            f"{r['ratio_vs_rl_only']:.2f}x",
            str(r["actor_steps"]),
            f"{r['ms_per_actor_step']:.2f}",
        )
    Console().print(table)
    err.print(f"update guard (same for every variant): {payload['guard_ms']:.1f} ms per update")


@bench_app.command("sample-efficiency")
def bench_sample_efficiency_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder of the runs and reports (re-running resumes).")] = Path(
        "runs/bench_sample_efficiency"
    ),
    regime: Annotated[
        str,
        typer.Option(
            help="A: today's checkpoint, normal and aggressive RL; B: headroom (better "
            "demos, under-trained BC), lift and peg."
        ),
    ] = "A",
    tasks: Annotated[list[str] | None, typer.Option("--task", help="Tasks (repeat); default: the regime's.")] = None,
    arms: Annotated[list[str] | None, typer.Option("--arm", help="Arms (repeat); default: the regime's.")] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Paired seeds per arm.")] = 5,
    env_steps: Annotated[int, typer.Option(min=1, help="Budget per run [env steps].")] = 12_000,
    demos: Annotated[int | None, typer.Option(min=1, help="Scripted demos per task; default: the regime's.")] = None,
    demo_noise: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Expert noise of the demos.")] = None,
    pretrain_steps: Annotated[int | None, typer.Option(min=1, help="BC steps of the shared checkpoint.")] = None,
    eval_episodes: Annotated[int, typer.Option(min=50, help="In-run evaluation episodes.")] = 50,
    heldout_episodes: Annotated[int, typer.Option(min=100, help="Final held-out evaluation episodes.")] = 100,
    report_only: Annotated[bool, typer.Option("--report-only", help="Summarise finished runs; start none.")] = False,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """RL only vs IN-RIL variants and baselines from one pre-trained checkpoint per task, paired seeds: final held-out
    success, AUC, collapses, paired differences with 95% intervals, pre-registered decision rules (CSV, markdown,
    PNG)."""
    import drivers.sim  # noqa: F401 - selects the GL backend before mujoco loads
    from inril_robot.inril.sample_efficiency import ARMS, REGIMES, bench_sample_efficiency
    from inril_robot.quickstart import prepare_pretrained, quickstart_config

    if regime not in REGIMES:
        fail(f"unknown --regime {regime!r}; available: {', '.join(REGIMES)}")
    r = REGIMES[regime]
    chosen = list(arms or r.arms)
    unknown = [a for a in chosen if a not in ARMS]
    if unknown:
        fail(f"unknown --arm {unknown}; available: {', '.join(ARMS)}")
    task_list = list(tasks or r.tasks)
    bad = [t for t in task_list if t not in list_presets("tasks")]
    if bad:
        fail(f"unknown --task {bad}; available: {', '.join(list_presets('tasks'))}")
    n_demos = demos if demos is not None else r.demos
    noise = demo_noise if demo_noise is not None else r.demo_noise
    bc_steps = pretrain_steps if pretrain_steps is not None else r.pretrain_steps
    overrides = [f"finetune.eval_episodes={eval_episodes}", *(set_ or [])]
    err.print(
        f"[bold cyan]bench[/] regime {regime}: {escape(r.description)}; {n_demos} demos at noise {noise}, "
        f"{bc_steps} BC steps"
    )

    def prepare(task: str, folder: Path) -> Any:
        cfg = quickstart_config(task, noise, bc_steps, list(set_ or []))
        return prepare_pretrained(cfg, folder, n_demos, lambda text: err.print(f"  {escape(text)}"))

    columns = progress_columns(eta=False)
    with make_progress(*columns, console=err, transient=json_out) as progress:
        bar = progress.add_task("run", total=env_steps, status="")

        def say(text: str) -> None:
            err.print(f"[bold cyan]bench[/] {escape(text)}")
            progress.update(bar, description=text.split("] ")[-1], completed=0, status="")

        def on_progress(event: dict[str, Any]) -> None:
            if event["event"] == "steps":
                progress.update(bar, advance=event["steps"])
            elif event.get("eval_success") is not None:
                progress.update(bar, completed=event["env_steps"], status=f"eval {event['eval_success']:.0%}")

        try:
            payload = bench_sample_efficiency(
                out,
                task_list,
                chosen,
                seeds,
                env_steps,
                overrides,
                prepare,
                say,
                on_progress,
                heldout_episodes,
                report_only,
            )
        except (ConfigError, ValueError) as e:
            fail(str(e))
            return
    payload.update(regime=regime, demos=n_demos, demo_noise=noise, pretrain_steps=bc_steps)
    if json_out:
        emit_json(payload)
        return
    Console().print(Path(payload["files"]["summary_md"]).read_text())
    for name, path in payload["files"].items():
        err.print(f"{name}: {path}")
    if payload["missing"]:
        err.print(f"not run yet (--report-only): {', '.join(payload['missing'])}")


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
