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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from inril_robot.config import PRESET_KINDS, ConfigError, RunConfig, list_presets, load_config, to_yaml

app = typer.Typer(help="Deploy and fine-tune Franka policies with IN-RIL, in simulation and on the robot.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
sim_app = typer.Typer(help="Run policies in the simulated Franka world.", no_args_is_help=True)
bench_app = typer.Typer(help="Measured performance, with baselines measured in the same run.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect presets and resolved configurations.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")
app.add_typer(bench_app, name="bench")
app.add_typer(config_app, name="config")

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


def emit_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()


def resolve(robot: str | None, task: str | None, cameras: str | None, config: Path | None, sets: list[str] | None,
            seed: int | None = None) -> RunConfig:
    overrides = list(sets or [])
    if seed is not None:
        overrides.insert(0, f"seed={seed}")
    try:
        return load_config(robot=robot, cameras=cameras, task=task, config_file=config, overrides=overrides)
    except ConfigError as e:
        fail(str(e))
        raise  # unreachable: fail() exits


# ------------------------------------------------------------------------------------------------------ doctor
@app.command()
def doctor(
    json_out: JsonOpt = False,
    render_probe: Annotated[bool, typer.Option(help="Probe EGL/OSMesa rendering in subprocesses.")] = True,
) -> None:
    """Check this machine for each extra: MuJoCo and rendering, franky/libfranka and RT kernel, RealSense, HID, GPU."""
    from inril_robot.doctor import render_table, run_checks

    checks = run_checks(render_probe=render_probe)
    if json_out:
        emit_json({"checks": [c.to_dict() for c in checks],
                   "ok": all(c.status in ("ok", "warn") for c in checks if c.area in ("core", "sim"))})
    else:
        Console().print(render_table(checks))


# ------------------------------------------------------------------------------------------------------- sim run
@sim_app.command("run")
def sim_run(
    task: TaskOpt = "lift",
    policy: Annotated[str, typer.Option(help="Policy to run: scripted (the task's expert).")] = "scripted",
    episodes: Annotated[int, typer.Option(min=1, help="Number of episodes.")] = 20,
    render: Annotated[Path | None, typer.Option(help="Write an MP4 of the first episodes here.")] = None,
    video_episodes: Annotated[int, typer.Option(min=1, help="Episodes recorded into --render.")] = 3,
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
    from inril_robot.rollout import run_episodes, scripted_policy

    if policy != "scripted":
        fail(f"unknown policy {policy!r}; available: scripted (checkpoints arrive with `pretrain`)")
    if render is not None and cameras is None:
        cameras = "sim_front"
    cfg = resolve("sim", task, cameras, config, set_, seed)
    try:
        env = RobotEnv(cfg)
    except DriverUnavailable as e:
        fail(str(e))
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    successes = 0
    with env, Progress(*columns, console=err, transient=json_out) as progress:
        bar = progress.add_task(f"{cfg.task.name} · {policy}", total=episodes, status="")
        started = time.perf_counter()
        steps = 0

        def on_step(episode: int, step: int, done_success: bool | None) -> None:
            nonlocal successes, steps
            steps += 1
            if done_success is None:
                return
            successes += done_success
            rate = steps / max(time.perf_counter() - started, 1e-9)
            progress.update(bar, advance=1, status=f"success {successes}/{episode + 1} · {rate:.0f} steps/s")

        summary = run_episodes(env, scripted_policy, episodes, seed=cfg.seed, video=render,
                               video_episodes=video_episodes, on_step=on_step, policy_name=policy)
    result = summary.to_dict()
    if json_out:
        emit_json(result)
        return
    table = Table(title=f"sim run · {cfg.task.name} · {policy}", show_header=False)
    table.add_row("success", str(summary.success))
    table.add_row("mean episode length", f"{result['mean_length']:.1f} steps")
    table.add_row("mean return", f"{result['mean_return']:.3f}")
    table.add_row("env steps/s", f"{result['env_steps_per_s']:.0f} (incl. expert and rendering)")
    if render:
        table.add_row("video", str(render))
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
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err,
                  transient=True) as progress:
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
        table.add_row(r.task, str(r.substeps), f"{r.raw_physics_steps_per_s:,.0f}", f"{r.bound_env_steps_per_s:,.0f}",
                      f"{r.env_steps_per_s:,.0f}", f"{r.fraction_of_bound:.0%}")
    Console().print(table)


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
