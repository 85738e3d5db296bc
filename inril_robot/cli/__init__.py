"""The `inril-robot` command line. Thin: parse, load and validate configuration, call into the modules.

Conventions for every command: `--config FILE` and repeated `--set dotted.key=value` overrides on top of the presets
chosen by `--robot/--task/--cameras`; configuration is validated before anything starts; `--json` prints the results
as one JSON object on stdout (progress and tables go to stderr); exit code 2 means bad input.

One module per command group; this file is the index: every command and group is registered here, in `--help` order.
"""

from __future__ import annotations

import typer

from inril_robot.cli import bench, bridge, calibrate, config, data, doctor, run, sim2real, train
from inril_robot.cli._common import InrilGroup

# rich_markup_mode=None: help text is printed as written, so units such as "[mm]" and "[s]" are not eaten as markup
app = typer.Typer(
    help="Deploy and fine-tune Franka policies with IN-RIL, in simulation and on the robot.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    cls=InrilGroup,
)  # InrilGroup: one handler turns any InrilError into a one-line error, exit 2

app.command()(doctor.doctor)
app.command()(run.quickstart)
app.command()(data.collect)
app.command("safety-check")(data.safety_check_cmd)
app.command()(train.pretrain)
app.command()(train.finetune)
app.command()(bridge.serve)
app.command("eval")(run.eval_cmd)
app.command("sim-pretrain")(sim2real.sim_pretrain_cmd)
bench.bench_app.command("sim2sim")(sim2real.bench_sim2sim_cmd)
app.add_typer(run.sim_app, name="sim")
app.add_typer(data.dataset_app, name="dataset")
app.add_typer(bench.bench_app, name="bench")
app.add_typer(config.config_app, name="config")
app.add_typer(bridge.keys_app, name="keys")
app.add_typer(doctor.robot_app, name="robot")
app.add_typer(calibrate.calibrate_app, name="calibrate")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
