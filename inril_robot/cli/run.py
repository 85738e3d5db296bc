"""`inril-robot quickstart`, `sim run` and `eval`: running policies and measuring them."""

from __future__ import annotations

import contextlib
import json
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
    JsonOpt,
    SeedOpt,
    SetOpt,
    TaskOpt,
    acting_sets,
    emit_json,
    err,
    eval_config,
    fail,
    key_value_table,
    progress_columns,
    resolve,
)
from inril_robot.cli._common import rate_text as _rate_text
from inril_robot.core.errors import ConfigError
from inril_robot.reporting.progress import make_progress

# rich_markup_mode=None: help text is printed as written, so units such as "[mm]" and "[s]" are not eaten as markup


sim_app = typer.Typer(help="Run policies in the simulated Franka world.", no_args_is_help=True)


def rollout_with_progress(env: Any, policy: Any, episodes: int, *, label: str, transient: bool, **kwargs: Any) -> Any:
    """`runtime.rollout.run_policy` under a rich progress bar (episodes, success so far, env steps/s, ETA) on stderr."""
    from inril_robot.runtime.rollout import run_policy

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

        return run_policy(env, policy, episodes, on_step=on_step, **kwargs)


# --------------------------------------------------------------------------------------------------- quickstart
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
    from inril_robot.cli.quickstart import run_quickstart

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
    from inril_robot.runtime.env import RobotEnv
    from inril_robot.runtime.registry import DriverUnavailable
    from inril_robot.runtime.rollout import scripted_policy

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


# -------------------------------------------------------------------------------------------------------- eval


def eval_cmd(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A checkpoint written by pretrain (.pt).")],
    robot: Annotated[str, typer.Option(help="Robot preset: sim, or franka (a real arm: needs --execute).")] = "sim",
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
    execute: Annotated[
        bool, typer.Option("--execute", help="Real robot: let the arm move (eval on the arm is refused without it).")
    ] = False,
    teleop: Annotated[
        str, typer.Option(help="Real robot: the operator's device (success keys, e-stop, scene reset).")
    ] = "keyboard",
    detector: Annotated[
        str | None,
        typer.Option(
            help="A success detector (a `detector train` file, or module:factory): shorthand for --set "
            "reward.source=detector --set reward.detector=DETECTOR. On the arm the operator's keys override it."
        ),
    ] = None,
    cameras: CamerasOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate a checkpoint: success (Wilson 95% interval), mean return and length; refuses a mismatching contract.
    On a real arm (--robot franka --execute): the reset phase before each episode, success from the operator's keys
    (keep / discard) or the success detector (reward.source=detector), and a video per episode."""
    from inril_robot.core.contract import ContractMismatch
    from inril_robot.learning.policies.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, set_acting
    from inril_robot.learning.policies.runner import PolicyRunner
    from inril_robot.learning.pretrain import EVAL_SEED_BASE, pick_device
    from inril_robot.runtime.env import RobotEnv, build_contract
    from inril_robot.runtime.registry import DriverUnavailable

    real = robot != "sim"
    if real and not execute:
        fail(f"eval --robot {robot} moves the arm: add --execute (the operator's e-stop key stops it)")
    if detector is not None:
        set_ = [*(set_ or []), "reward.source=detector", f"reward.detector={detector}"]
    payload = read_checkpoint(checkpoint)
    stored_cfg = payload["run_config"]
    if task is not None and task != stored_cfg["task"]["name"]:
        fail(
            f"contract mismatch on task.name (checkpoint {checkpoint}): expected {stored_cfg['task']['name']!r}, "
            f"got {task!r}"
        )
    acting, set_ = acting_sets(set_)
    cfg = eval_config(robot, stored_cfg, cameras, config, set_, seed)
    out = out or checkpoint.parent / "eval" / checkpoint.stem
    env_cfg = cfg
    if real:
        videos, video_episodes = True, episodes  # every episode on the arm is kept on video
        cfg = cfg.model_copy(update={"teleop": cfg.teleop.model_copy(update={"kind": teleop})})
        env_cfg = cfg
    elif (video is not None or videos) and not cfg.cameras:  # a camera only for the video: not a policy input
        size = [f"cameras.front.{dim}={video_size}" for dim in ("width", "height")]
        env_cfg = cfg.model_copy(update={"cameras": resolve(None, None, "sim_front", None, size).cameras})
    try:
        env = RobotEnv(env_cfg, execute=execute)
        cell = robot_cell(cfg, env) if real else None
    except DriverUnavailable as e:
        fail(str(e))
        return
    with env, contextlib.closing(cell.teleop) if cell and cell.teleop else contextlib.nullcontext():
        expect = build_contract(cfg, env.task)
        device = pick_device("auto")
        loaded = load_checkpoint(
            checkpoint, expect_contract=expect, use_ema=not raw_weights, map_location=device, payload=payload
        )
        try:
            set_acting(loaded.policy, acting)
        except CheckpointError as e:
            fail(str(e))
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
                cell=cell,
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
    from inril_robot.core.atomic import atomic_open

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


def robot_cell(cfg: Any, env: Any) -> Any:
    """The operator's side of an evaluation on the arm: the teleop and prompts on stderr (a success detector, when
    configured, is the env's own: `reward.source=detector`)."""
    from inril_robot.runtime.registry import make_teleop
    from inril_robot.runtime.rollout import RobotCell

    return RobotCell(make_teleop(cfg, env), say=lambda text: err.print(f"[bold]{escape(text)}[/]"))
