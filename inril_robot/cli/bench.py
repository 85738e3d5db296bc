"""`inril-robot bench ...`: measured performance, each figure against a baseline measured in the same run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
from rich.table import Table

from inril_robot.cli._common import (
    CamerasOpt,
    ConfigOpt,
    JsonOpt,
    ReportOnlyOpt,
    SetOpt,
    TaskOpt,
    emit_json,
    err,
    fail,
    finish_targets,
    progress_columns,
    resolve,
    status_line,
)
from inril_robot.config import list_presets
from inril_robot.core.errors import ConfigError
from inril_robot.reporting.progress import make_progress

# rich_markup_mode=None: help text is printed as written, so units such as "[mm]" and "[s]" are not eaten as markup


bench_app = typer.Typer(help="Measured performance, with baselines measured in the same run.", no_args_is_help=True)


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
    from inril_robot.bench.latency import bench_latency, latency_targets, render_latency
    from inril_robot.reporting.targets import targets_payload

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
    from inril_robot.bench.sim import bench_task, summarize

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
    replay_transitions: Annotated[
        int, typer.Option(min=0, help="Replay log: transitions of two rendered 128 px cameras written (0: skip).")
    ] = 600,
    report_only: ReportOnlyOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Episode-store write frames/s (two RGB cameras) vs real time, and training-read windows/s vs plain numpy; the
    replay log's disk and memory per 100k transitions (two 128 px cameras), append and resume-load rates."""
    from inril_robot.bench.data import bench_data, bench_replay
    from inril_robot.reporting.targets import Target, targets_payload

    with status_line("bench data: writing and reading episodes"):
        result = bench_data(episodes=episodes, steps=steps, size=size, horizon=horizon)
    if replay_transitions:
        with status_line("bench data: the replay log (rendering two 128 px cameras)"):
            result["replay"] = bench_replay(replay_transitions)
    targets = [
        Target("write speed / real time (2 cameras at 10 Hz)", result["write"]["times_realtime"], 1.0, ">=", "x")
    ]
    if replay_transitions:
        targets.append(
            Target("replay append / one robot at 10 Hz", result["replay"]["append_times_realtime_10hz"], 1.0, ">=", "x")
        )
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
    if "replay" in result:
        rp = result["replay"]
        table.add_row(
            "replay log (2 x 128 px)",
            f"per 100k transitions: {rp['disk_gb_per_100k']:.2f} GB on disk "
            f"(compressed {rp['compression_ratio']:.1f}x), "
            f"{rp['ram_gb_per_100k_shared_next_obs']:.1f} GB in memory decompressed with shared next observations, "
            f"{rp['ram_gb_per_100k_obs_and_next_obs']:.1f} GB as separate obs/next_obs; append "
            f"{rp['append_transitions_per_s']:,.0f} transitions/s with fsync "
            f"({rp['append_times_realtime_10hz']:.0f}x one robot at 10 Hz); resume reads "
            f"{rp['load_transitions_per_s']:,.0f}/s ({rp['resume_load_s_per_100k']:.0f} s per 100k)",
        )
        table.add_row(
            "learner's buffer (2 x 128 px)",
            f"per 100k transitions: {rp['buffer_gb_per_100k']:.1f} GB held "
            f"({rp['buffer_histories_per_transition']:.2f} stored histories per transition; "
            f"{rp['buffer_gb_per_100k_as_pairs']:.1f} GB as obs/next_obs pairs), resident memory added "
            f"{rp['buffer_rss_gb_per_100k']:.1f} GB; {rp['buffer_add_per_s']:,.0f} adds/s",
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

    from inril_robot.learning.policies.latency import bench_default_policies
    from inril_robot.reporting.targets import Target, targets_payload

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
    from inril_robot.bench.learner import bench_learner

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
    jobs: Annotated[int, typer.Option(min=1, help="Runs at once, one process each (a many-core machine).")] = 1,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """RL only vs IN-RIL variants and baselines from one pre-trained checkpoint per task, paired seeds: final held-out
    success, AUC, collapses, paired differences with 95% intervals, pre-registered decision rules (CSV, markdown,
    PNG)."""
    from inril_robot.bench.sample_efficiency import ARMS, REGIMES, bench_sample_efficiency
    from inril_robot.cli.quickstart import prepare_pretrained, quickstart_config

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
                jobs,
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
