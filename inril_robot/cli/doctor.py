"""`inril-robot doctor` and `inril-robot robot recover`: the setup, and the arm's fault state."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from inril_robot.cli._common import (
    ConfigOpt,
    JsonOpt,
    ReportOnlyOpt,
    SetOpt,
    emit_json,
    err,
    fail,
    key_value_table,
    resolve,
    status_line,
)

# rich_markup_mode=None: help text is printed as written, so units such as "[mm]" and "[s]" are not eaten as markup


robot_app = typer.Typer(help="The real arm: its fault state, and recovery from a fault.", no_args_is_help=True)


# ------------------------------------------------------------------------------------------------------ doctor
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
    from inril_robot.runtime.registry import DriverUnavailable, make_robot

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
