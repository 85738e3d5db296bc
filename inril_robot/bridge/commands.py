"""What the `serve` command and the bridge branch of `finetune` do, with their live displays (the CLI stays thin)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from inril_robot.bridge.security import SecurityError, check_bind, client_keys, server_keys
from inril_robot.bridge.server import PolicyServer, ServeOptions
from inril_robot.config import RunConfig
from inril_robot.data.store import Dataset


# ------------------------------------------------------------------------------------------------------ serve
def serve_command(
    cfg: RunConfig,
    checkpoint: Path,
    demos: Path | None,
    out: Path,
    *,
    bind: str,
    keys: Path | None,
    mode: str,
    resume: bool,
    robot_timeout_s: float,
    endpoint_file: Path | None,
    console: Console,
    live: bool,
    episode_deadline_s: float = 60.0,
) -> dict[str, Any]:
    from inril_robot.bridge.launch import serve_until_stopped

    keyset = server_keys(keys) if keys is not None else None
    check_bind(bind, keyset)  # before loading anything: the refusal is the first thing the user sees
    dataset = Dataset(demos) if demos is not None else None
    options = ServeOptions(
        bind=bind,
        keys=keyset,
        robot_timeout_s=robot_timeout_s,
        endpoint_file=endpoint_file,
        episode_deadline_s=episode_deadline_s,
    )
    status = console.status("starting") if live else contextlib.nullcontext()
    last = [0.0]

    def on_tick(server: PolicyServer) -> None:
        now = time.monotonic()
        if not live or now - last[0] < 0.5:
            return
        last[0] = now
        s = server.stats()
        status.update(  # type: ignore[union-attr]
            f"policy v{s['policy_version']} · robots [{escape(s['robots']) or '-'}] · episodes {s['episodes']} · "
            f"env steps {s['env_steps']} · inference p50 {s['infer_p50_ms']:.2f} / p99 {s['infer_p99_ms']:.2f} ms · "
            f"batch {s['mean_batch']:.1f} · rejected {s['rejected']}"
            + (" · updating" if s["parked"] else "")
            + (" · budget reached: run over, serving the final weights" if s["run_over"] else "")
            + (
                f" · {s['updates']} updates, {s['updates_per_s']:.1f}/s, update-to-data {s['utd']:.2f}"
                if "updates_per_s" in s
                else ""
            )
        )

    with status:
        server = serve_until_stopped(
            cfg,
            checkpoint,
            dataset,
            out,
            options,
            mode=mode,
            resume=resume,
            log=lambda text: console.print(f"[bold cyan]serve[/] {escape(text)}"),
            on_tick=on_tick,
        )
    return {**server.stats(), "out": str(out), "endpoint": server.endpoint}


# --------------------------------------------------------------------------------------------- finetune (agent)
@dataclass
class BridgeRun:
    checkpoint: Path
    out: Path
    demos: Path | None
    server: str | None  # None: start a local server process
    robot_id: str = "robot0"
    speed: float = 1.0
    episodes: int | None = None
    teleop: str | None = None
    execute: bool = False
    client_key: Path | None = None
    server_key: Path | None = None
    resume: bool = False
    server_args: list[str] = field(default_factory=list)


def finetune_through_bridge(cfg: RunConfig, run: BridgeRun, console: Console, json_out: bool) -> dict[str, Any]:
    """The robot agent against `run.server`, or against a local server subprocess it starts and stops."""
    from inril_robot.bridge.agent import AgentOptions, EmergencyStop, RobotAgent
    from inril_robot.bridge.launch import LocalServer
    from inril_robot.runtime.env import RobotEnv
    from inril_robot.runtime.registry import make_teleop

    if (run.client_key is None) != (run.server_key is None):
        raise SecurityError(
            "CurveZMQ needs both --client-key (this robot's .key_secret) and --server-key (the server's .key)"
        )
    keys = client_keys(run.client_key, run.server_key) if run.client_key and run.server_key else None
    if not run.resume and run.out.exists() and any(run.out.iterdir()):  # the server's folder and the store in it
        raise ValueError(f"{run.out} is not empty (an earlier run?): use --resume or a new --out")
    if cfg.robot.kind != "sim" and run.speed != 1.0:
        raise ValueError("--speed is for simulation: a real robot runs at its control_hz")
    teleop_kind = run.teleop or ("keyboard" if cfg.robot.kind != "sim" else None)
    if teleop_kind is not None:
        cfg = cfg.model_copy(update={"teleop": cfg.teleop.model_copy(update={"kind": teleop_kind})})
    if cfg.robot.kind != "sim" and not run.execute:
        console.print("[yellow]franka without --execute: shadow mode, the arm holds while the loop runs[/]")

    local: LocalServer | None = None
    endpoint = run.server
    if endpoint is None:
        console.print(f"starting a local policy server (log: {run.out / 'server.log'})")
        local = LocalServer(run.server_args, run.out / "server", run.out)
        endpoint = local.endpoint
    env = teleop = None
    try:
        env = RobotEnv(cfg, execute=run.execute)
        teleop = make_teleop(cfg, env) if teleop_kind is not None else None

        def prompt(text: str) -> None:
            console.print(f"[bold]{escape(text)}[/] (keep key{' or Enter' if teleop is None else ''})")
            if teleop is None:
                input()
                return
            while True:
                command = teleop.read()
                if command.estop:
                    env.robot.stop()
                    raise EmergencyStop("e-stop while waiting for the scene reset")
                if command.keep:
                    return
                time.sleep(0.05)

        display = AgentDisplay(run.robot_id)
        live = Live(display.table({}), console=console, refresh_per_second=4, transient=json_out)
        options = AgentOptions(
            server=endpoint,
            robot_id=run.robot_id,
            episodes=run.episodes,
            speed=run.speed,
            record=run.out / "episodes",
            log=run.out / "agent_log.csv",
            keys=keys,
        )
        agent = RobotAgent(
            cfg,
            env,
            options,
            teleop,
            prompt,
            on_status=lambda s: live.update(display.table(s)),
            say=lambda text: console.print(f"[bold cyan]agent[/] {escape(text)}"),
        )
        with live:
            result = agent.run()
    finally:
        if teleop is not None:
            teleop.close()
        if env is not None:
            env.close()
        if local is not None:
            local.stop()
    payload = {
        **result.to_dict(),
        "server": endpoint,
        "out": str(run.out),
        "episodes_store": str(run.out / "episodes"),
        "agent_log": str(run.out / "agent_log.csv"),
    }
    if local is not None:
        payload["checkpoint"] = str(run.out / "server" / "last.pt")
    if not json_out:
        console.print(summary_table(payload))
    return payload


class AgentDisplay:
    def __init__(self, robot: str) -> None:
        self.robot = robot

    def table(self, s: dict[str, Any]) -> Table:
        t = Table(title=f"robot agent · {self.robot}", show_header=False)
        t.add_column()
        t.add_column()
        if not s:
            t.add_row("state", "connecting")
            return t
        target = f" / {s['target_hz']:.1f} target" if s.get("target_hz") else " (unpaced)"
        t.add_row("episode · step", f"{s['episode']} · {s['step']} ({s['successes']}/{s['episodes']} succeeded)")
        t.add_row("rate", f"{s['hz']:.1f} Hz{target} · overruns {s['overruns']}")
        for stage, v in s.get("stages", {}).items():
            t.add_row(stage, f"p50 {v['p50_ms']:.2f} ms · p99 {v['p99_ms']:.2f} ms · max {v['max_ms']:.1f} ms")
        t.add_row(
            "watchdog",
            f"{'[bold red]HOLDING[/] · ' if s['holding'] else ''}holds {s['holds']} · reconnects {s['reconnects']}",
        )
        t.add_row("policy version", str(s["policy_version"]))
        return t


def summary_table(payload: dict[str, Any]) -> Table:
    t = Table(title=f"finetune through the bridge · {payload['robot']}", show_header=False)
    t.add_column()
    t.add_column(overflow="fold")
    t.add_row("server", payload["server"])
    t.add_row("episodes", f"{payload['episodes']} ({payload['successes']} successful), {payload['env_steps']} steps")
    t.add_row("achieved rate", f"{payload['hz']:.1f} Hz, {payload['overruns']} overruns")
    rt = payload["stages"].get("round_trip")
    if rt:
        t.add_row("observation -> action", f"p50 {rt['p50_ms']:.2f} ms, p99 {rt['p99_ms']:.2f} ms")
    t.add_row("watchdog", f"{payload['watchdog_holds']} holds, {payload['reconnects']} reconnects")
    t.add_row("interventions", str(payload["interventions"]))
    t.add_row("episode store", payload["episodes_store"])
    if payload.get("checkpoint"):
        t.add_row("checkpoint", payload["checkpoint"])
    if payload.get("run_over"):
        t.add_row("run over", escape(payload["run_over"]))
    if payload.get("stopped"):
        t.add_row("[red]stopped[/]", escape(payload["stopped"]))
    return t
