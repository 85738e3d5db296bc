"""`inril-robot calibrate board|intrinsics|hand-eye` (registered in inril_robot/cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from inril_robot.cli._common import ConfigOpt, JsonOpt, SetOpt, emit_json, err, fail, resolve
from inril_robot.reporting.progress import make_progress

calibrate_app = typer.Typer(
    help="Print a ChArUco board; calibrate camera intrinsics and hand-eye extrinsics.", no_args_is_help=True
)

SquaresOpt = Annotated[str, typer.Option("--squares", help="Board squares, columns x rows (e.g. 5x4).")]
SquareMmOpt = Annotated[float, typer.Option("--square-mm", min=1.0, help="Chessboard square side [mm].")]
MarkerMmOpt = Annotated[float, typer.Option("--marker-mm", min=1.0, help="ArUco marker side [mm].")]
DictOpt = Annotated[str, typer.Option("--dictionary", help="ArUco dictionary, e.g. DICT_4X4_50.")]
RobotOpt = Annotated[str, typer.Option("--robot", help="Robot preset: sim or franka.")]
CameraOpt = Annotated[str, typer.Option("--camera", help="Name of the camera to calibrate.")]
CamerasOpt = Annotated[str | None, typer.Option("--cameras", help="Camera preset (default sim_front_wrist in sim).")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Calibration file (default calibrations/<camera>.yaml).")]
PosesOpt = Annotated[int, typer.Option("--poses", min=3, help="Robot poses to visit (10-20 recommended).")]
ExecuteOpt = Annotated[bool, typer.Option(help="Let a real robot move (required with --robot franka).")]


def board_spec(squares: str, square_mm: float, marker_mm: float, dictionary: str) -> Any:
    from inril_robot.vision.board import BoardError, BoardSpec

    try:
        sx, sy = (int(v) for v in squares.lower().split("x"))
        return BoardSpec(sx, sy, square_mm / 1000.0, marker_mm / 1000.0, dictionary)
    except ValueError as e:
        if isinstance(e, BoardError):
            fail(str(e))
        fail(f"--squares must look like 5x4 (columns x rows), got {squares!r}")


@calibrate_app.command("board")
def board_cmd(
    out: Annotated[Path, typer.Option("--out", help="Output file: .pdf (exact size) or .png (at --dpi).")] = Path(
        "board.pdf"
    ),
    squares: SquaresOpt = "5x4",
    square_mm: SquareMmOpt = 40.0,
    marker_mm: MarkerMmOpt = 30.0,
    dictionary: DictOpt = "DICT_4X4_50",
    page: Annotated[str, typer.Option(help="PDF page size: a4, letter, a3.")] = "a4",
    dpi: Annotated[
        int,
        typer.Option(
            min=72,
            help="PNG resolution; the default 254 dpi is 10 px per mm, so any "
            "whole-mm square is a whole number of pixels.",
        ),
    ] = 254,
    json_out: JsonOpt = False,
) -> None:
    """Write a printable ChArUco board at its exact physical size."""
    from inril_robot.vision.board import write_pdf, write_png

    spec = board_spec(squares, square_mm, marker_mm, dictionary)
    path = write_pdf(spec, out, page) if out.suffix.lower() == ".pdf" else write_png(spec, out, dpi)
    w, h = (v * 1000 for v in spec.size_m)
    if json_out:
        emit_json({"path": str(path), "board": spec.to_dict(), "size_mm": [w, h]})
        return
    err.print(
        f"wrote {path}: {spec.squares_x}x{spec.squares_y} squares, {w:g} x {h:g} mm. Print at 100% and "
        f"check one square measures {square_mm:g} mm."
    )


def _calibrate(
    kind: Literal["intrinsics", "hand-eye"],
    robot: str,
    camera: str,
    cameras: str | None,
    out: Path | None,
    poses: int,
    intrinsics: str,
    method: str,
    spec: Any,
    execute: bool,
    config: Path | None,
    set_: list[str] | None,
    json_out: bool,
) -> None:
    from inril_robot.calibration.run import run_calibration

    if robot != "sim" and not execute:
        fail("calibration moves the robot: pass --execute to let the real arm move (it holds otherwise)")
    cfg = resolve(robot, "reach", cameras or ("sim_front_wrist" if robot == "sim" else None), config, set_)
    out = out or Path("calibrations") / f"{camera}.yaml"
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with make_progress(*columns, console=err, transient=json_out) as progress:
        bar = progress.add_task(f"calibrate {kind} · {camera}", total=poses, status="")
        result = run_calibration(
            cfg,
            camera,
            kind,
            out,
            spec=spec,
            poses=poses,
            intrinsics=intrinsics,
            method=method,
            execute=execute,
            on_stage=lambda text: progress.console.print(f"[bold cyan]calibrate[/] {text}"),
            on_progress=lambda done, total, status: progress.update(bar, completed=done, status=status),
            confirm=lambda text: progress.console.input(f"[bold yellow]{text}[/] (Enter) "),
        )
    if json_out:
        emit_json(result.to_dict())
        return
    Console().print(residual_table(result))


def residual_table(result: Any) -> Table:
    calib = result.calibration
    k = calib.intrinsics
    table = Table(title=f"calibration · {calib.camera} ({calib.mount})", show_header=False)
    table.add_column()
    table.add_column(overflow="fold")
    table.add_row("file", result.path)
    table.add_row("views", f"{result.views} used" + (f", {len(result.skipped)} skipped" if result.skipped else ""))
    table.add_row(
        "intrinsics", f"{k.width}x{k.height} fx {k.fx:.2f} fy {k.fy:.2f} cx {k.cx:.2f} cy {k.cy:.2f} ({k.source})"
    )
    if calib.extrinsics is not None:
        e = calib.extrinsics
        table.add_row(
            f"camera in {e.parent_frame}",
            f"position {[round(v, 4) for v in e.position]} m, quaternion "
            f"xyzw {[round(v, 4) for v in e.quaternion_xyzw]} ({e.method})",
        )
        u = calib.uncertainty
        table.add_row("uncertainty (1 sigma)", f"{u.position_m * 1000:.2f} mm, {u.rotation_rad * 57.2958:.3f} deg")
        table.add_row("reprojection RMS", f"{calib.residuals.reprojection_rms_px:.3f} px")
        methods = calib.residuals.method_comparison
        table.add_row(
            "methods (linear RMS px)", ", ".join(f"{m} {v['reprojection_rms_px']:.3f}" for m, v in methods.items())
        )
        for r in calib.residuals.per_pose:
            flag = "  [bold red]OUTLIER[/]" if r.outlier else ""
            table.add_row(
                f"pose {r.index}",
                f"{r.reprojection_rms_px:.3f} px, board {r.translation_m * 1000:.2f} mm "
                f"/ {r.rotation_rad * 57.2958:.3f} deg from the mean, {r.corners} corners{flag}",
            )
    elif k.rms_px is not None:
        table.add_row("reprojection RMS", f"{k.rms_px:.3f} px")
    if result.truth_error:
        table.add_row("error vs sim truth", ", ".join(f"{n} {v:.4g}" for n, v in result.truth_error.items()))
    for why in result.skipped:
        table.add_row("skipped", why)
    return table


@calibrate_app.command("intrinsics")
def intrinsics_cmd(
    camera: CameraOpt,
    robot: RobotOpt = "sim",
    cameras: CamerasOpt = None,
    out: OutOpt = None,
    poses: PosesOpt = 12,
    squares: SquaresOpt = "5x4",
    square_mm: SquareMmOpt = 40.0,
    marker_mm: MarkerMmOpt = 30.0,
    dictionary: DictOpt = "DICT_4X4_50",
    execute: ExecuteOpt = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Camera intrinsics (focal lengths, principal point, distortion) from ChArUco views at safe robot poses."""
    _calibrate(
        "intrinsics",
        robot,
        camera,
        cameras,
        out,
        poses,
        "charuco",
        "auto",
        board_spec(squares, square_mm, marker_mm, dictionary),
        execute,
        config,
        set_,
        json_out,
    )


@calibrate_app.command("hand-eye")
def hand_eye_cmd(
    camera: CameraOpt,
    robot: RobotOpt = "sim",
    cameras: CamerasOpt = None,
    out: OutOpt = None,
    poses: PosesOpt = 12,
    intrinsics: Annotated[str, typer.Option(help="device (the camera's), charuco, or a calibration file.")] = "device",
    method: Annotated[str, typer.Option(help="auto (best reprojection), tsai, park, andreff, ...")] = "auto",
    squares: SquaresOpt = "5x4",
    square_mm: SquareMmOpt = 40.0,
    marker_mm: MarkerMmOpt = 30.0,
    dictionary: DictOpt = "DICT_4X4_50",
    execute: ExecuteOpt = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Camera extrinsics: eye-to-hand for a static camera (board on the hand), eye-in-hand for a wrist camera."""
    _calibrate(
        "hand-eye",
        robot,
        camera,
        cameras,
        out,
        poses,
        intrinsics,
        method,
        board_spec(squares, square_mm, marker_mm, dictionary),
        execute,
        config,
        set_,
        json_out,
    )
