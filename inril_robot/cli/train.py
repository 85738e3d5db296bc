"""`inril-robot pretrain` and `finetune`: imitation pre-training and on-robot (or simulated) IN-RIL fine-tuning."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from inril_robot.cli._common import (
    CamerasOpt,
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
    key_value_table,
    learner_overrides,
    open_dataset,
    progress_columns,
    resolve,
)
from inril_robot.cli._common import rate_text as _rate_text
from inril_robot.config import list_presets
from inril_robot.reporting.progress import make_progress

# rich_markup_mode=None: help text is printed as written, so units such as "[mm]" and "[s]" are not eaten as markup


# ----------------------------------------------------------------------------------------------------- pretrain
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
    from inril_robot.core.contract import ContractMismatch
    from inril_robot.data.store import DatasetError
    from inril_robot.learning.policies.checkpoint import CheckpointError
    from inril_robot.learning.pretrain import PretrainError
    from inril_robot.learning.pretrain import pretrain as run_pretrain
    from inril_robot.runtime.registry import DriverUnavailable

    if policy not in ("gaussian", "diffusion"):
        fail(f"unknown policy {policy!r}; available: gaussian, diffusion")
    ds = open_dataset(dataset)
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


def finetune(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="The pre-trained checkpoint (.pt) to fine-tune.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder (checkpoints, metrics.csv, curves.png, TB events).")],
    demos: Annotated[Path | None, typer.Option("--demos", help="Demonstrations for the IL steps.")] = None,
    robot: Annotated[str, typer.Option(help="sim (in-process); franka goes through the policy server.")] = "sim",
    task: Annotated[str | None, typer.Option(help="Task (default and only allowed: the checkpoint's).")] = None,
    algo: Annotated[
        str | None,
        typer.Option(
            help="On-policy: ppo (Gaussian), dppo (diffusion), residual-ppo (any); off-policy: sac (Gaussian, RLPD "
            "recipe), residual-sac (RLPD as a bounded residual on the BC policy; IN-RIL: --separation residual), idql "
            "(diffusion). Default: finetune.algo (ppo)."
        ),
    ] = None,
    il_every: IlEveryOpt = None,
    separation: SeparationOpt = None,
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
    from inril_robot.core.contract import ContractMismatch
    from inril_robot.data.store import DatasetError
    from inril_robot.learning.inril.finetune import FinetuneError
    from inril_robot.learning.inril.finetune import finetune as run_finetune
    from inril_robot.learning.policies.checkpoint import CheckpointError, read_checkpoint
    from inril_robot.runtime.registry import DriverUnavailable

    stored_cfg = read_checkpoint(checkpoint)["run_config"]
    if task is not None and task != stored_cfg["task"]["name"]:
        fail(
            f"contract mismatch on task.name (checkpoint {checkpoint}): expected {stored_cfg['task']['name']!r}, "
            f"got {task!r}"
        )
    options = [
        *learner_overrides(algo, il_every, separation),
        *([f"finetune.env_steps={env_steps}"] if env_steps else []),
        *([f"finetune.num_envs={num_envs}"] if num_envs else []),
    ]
    if robot not in ("sim", "franka"):
        fail(f"--robot {robot!r}: expected sim or franka")
    cfg = eval_config(robot, stored_cfg, cameras, config, [*(set_ or []), *options], seed)
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
                # serve's own options are applied after its --set values: pass the resolved ones, or its defaults win
                *("--algo", cfg.finetune.algo, "--il-every", str(cfg.finetune.inril.il_every)),
                *("--separation", cfg.finetune.inril.separation),
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
    ds = open_dataset(demos) if demos is not None else None
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
