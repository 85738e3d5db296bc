"""`inril-robot serve` and `keys generate`: the GPU-box policy server and its CurveZMQ keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from inril_robot.cli._common import (
    ConfigOpt,
    IlEveryOpt,
    JsonOpt,
    SeedOpt,
    SeparationOpt,
    SetOpt,
    emit_json,
    err,
    eval_config,
    fail,
    learner_overrides,
)

# rich_markup_mode=None: help text is printed as written, so units such as "[mm]" and "[s]" are not eaten as markup


keys_app = typer.Typer(help="CurveZMQ keys for a policy server reachable off this machine.", no_args_is_help=True)


# ------------------------------------------------------------------------------------------------- bridge
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
    algo: Annotated[
        str | None,
        typer.Option(
            help="ppo (Gaussian), dppo (diffusion), residual-ppo (any); sac (Gaussian), residual-sac (a residual "
            "on the BC policy) or idql (diffusion): "
            "off-policy, always learning asynchronously while robots act (replay log in --out/replay). "
            "Default: finetune.algo (ppo)."
        ),
    ] = None,
    il_every: IlEveryOpt = None,
    separation: SeparationOpt = None,
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
    from inril_robot.learning.policies.checkpoint import read_checkpoint

    stored_cfg = read_checkpoint(checkpoint)["run_config"]
    options = [
        *learner_overrides(algo, il_every, separation),
    ]
    cfg = eval_config("sim", stored_cfg, None, config, [*(set_ or []), *options], seed)
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
