"""`inril-robot sim-pretrain` and `inril-robot bench sim2sim` (registered in inril_robot/cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from inril_robot.cli._common import JsonOpt, SetOpt, TaskOpt, emit_json, err, fail
from inril_robot.cli._common import rate_text as _rate_text

RandOpt = Annotated[str, typer.Option("--randomization", help="Preset: none, light, medium, strong.")]


def sim_pretrain_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for demos, pre-training run and export.")],
    task: TaskOpt = "lift",
    cameras: Annotated[str | None, typer.Option("--cameras", help="Camera preset, e.g. sim_front_wrist.")] = None,
    randomization: RandOpt = "medium",
    demos: Annotated[int, typer.Option(min=1, help="Randomised scripted demonstrations.")] = 50,
    steps: Annotated[int, typer.Option(min=1, help="Pre-training gradient steps.")] = 2000,
    episodes: Annotated[int, typer.Option(min=1, help="Evaluation episodes (randomised).")] = 20,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Randomised sim demos -> pre-training under the real robot's limits -> a checkpoint exported for franka."""
    from inril_robot.core.errors import ConfigError
    from inril_robot.hardware.calibration_file import CalibrationFileError
    from inril_robot.sim2real.pretrain import sim_config, sim_pretrain

    try:
        cfg = sim_config(task, cameras, randomization, [f"train.steps={steps}", *(set_ or [])])
        result = sim_pretrain(
            cfg,
            out,
            demos=demos,
            eval_episodes=episodes,
            on_stage=lambda text: err.print(f"[bold cyan]sim-pretrain[/] {text}"),
        )
    except (ConfigError, CalibrationFileError, ValueError) as e:
        fail(str(e))
        return
    if json_out:
        emit_json(result.to_dict())
        return
    table = Table(title=f"sim-pretrain · {task} · randomisation {randomization}", show_header=False)
    table.add_column()
    table.add_column(overflow="fold")
    table.add_row("demonstrations", f"{result.demos} randomised, scripted ({out / 'demos'})")
    table.add_row("randomised success", _rate_text(result.eval["success"]))
    table.add_row("export (franka)", result.checkpoint)
    table.add_row("calibration", ", ".join(f"{k}: {v}" for k, v in result.calibration.items()) or "none")
    for issue in result.real_robot_issues:
        table.add_row("[yellow]not ready for franka[/]", issue)
    table.add_row("time", ", ".join(f"{k} {v:.0f} s" for k, v in result.stage_seconds.items()))
    Console().print(table)


def bench_sim2sim_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for runs, sim2sim.md and sim2sim.csv.")] = Path(
        "runs/sim2sim"
    ),
    task: TaskOpt = "lift",
    randomization: RandOpt = "medium",
    demos: Annotated[int, typer.Option(min=1, help="Demonstrations per training condition.")] = 20,
    steps: Annotated[int, typer.Option(min=1, help="BC steps per training condition.")] = 800,
    episodes: Annotated[int, typer.Option(min=1, help="Evaluation episodes per cell.")] = 20,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Sim-to-sim gap: train nominal and randomised, evaluate each in both; success with Wilson 95% intervals."""
    from inril_robot.core.errors import ConfigError
    from inril_robot.sim2real.pretrain import sim2sim_gap

    try:
        gap = sim2sim_gap(
            task,
            out,
            randomization=randomization,
            demos=demos,
            steps=steps,
            episodes=episodes,
            overrides=list(set_ or []),
            on_stage=lambda text: err.print(f"[bold cyan]sim2sim[/] {text}"),
        )
    except (ConfigError, ValueError) as e:
        fail(str(e))
        return
    if json_out:
        emit_json({**gap.to_dict(), "markdown": str(out / "sim2sim.md"), "csv": str(out / "sim2sim.csv")})
        return
    table = Table(title=f"sim-to-sim gap · {task} · {randomization} ({gap.wall_s:.0f} s)")
    for col in ("trained on", "evaluated on", "success", "95% CI", "n"):
        table.add_column(col)
    for c in gap.cells:
        table.add_row(
            c["trained_on"],
            c["evaluated_on"],
            f"{c['rate']:.0%}",
            f"[{c['ci95_low']:.0%}, {c['ci95_high']:.0%}]",
            f"{c['successes']}/{c['trials']}",
        )
    Console().print(table)
    err.print(f"wrote {out / 'sim2sim.md'} and {out / 'sim2sim.csv'}")
