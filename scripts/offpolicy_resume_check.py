"""The off-policy bridge under a server crash, end to end, with the real CLI (issue 18's "must show"):

1. `inril-robot serve --algo sac` (asynchronous learner) and `inril-robot finetune --robot sim --server URL --algo sac`
   at the task's control rate (10 Hz), as separate processes;
2. once the replay log holds `--kill-after` episodes: `kill -9` of the server (mid-episode, mid-update); the replay
   log's count and checksum are read after its learner process let go of the log;
3. `inril-robot serve --resume` on the same folder: the agent (which held the arm and kept reconnecting) carries on;
4. at the end: the agent's achieved rate and overruns, the learner's updates/s and update-to-data ratio, and the log's
   first records compared with what was there before the crash.

    PYTHONPATH=. python3 scripts/offpolicy_resume_check.py --checkpoint PRE/best.pt --demos DEMOS --out /tmp/run \
        --episodes 12 --kill-after 4 [--set finetune.offpolicy.learning_starts=50 ...]

Prints one JSON object; exit status 1 when the log before the crash is not a bit-exact prefix of the log after it,
or the agent did not finish.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from inril_robot.data.replay import ReplayLog


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def wait_unlocked(folder: Path, timeout_s: float = 60.0) -> float:
    """Seconds until no process holds the replay log's writer lock."""
    started = time.monotonic()
    while True:
        with open(folder / ".lock", "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
                return time.monotonic() - started
            except BlockingIOError:
                if time.monotonic() - started > timeout_s:
                    raise RuntimeError(f"{folder} stayed locked for {timeout_s:.0f} s") from None
        time.sleep(0.1)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def per_episode(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The agent log's rows with overruns and watchdog holds per episode (the log's counts are running totals)."""
    out, overruns = [], 0
    for r in rows:
        total = int(r["overruns"])
        out.append(
            {
                "episode": int(r["episode"]),
                "steps": int(r["steps"]),
                "hz": float(r["hz"]),
                "overruns": total - overruns,
                "watchdog_holds": int(r["watchdog_holds"]),
                "reconnects": int(r["reconnects"]),
                "policy_version": int(r["policy_version"]),
                "step_p99_ms": float(r["step_p99_ms"] or "nan"),
                "round_trip_p99_ms": float(r["round_trip_p99_ms"] or "nan"),
                # this episode's worst tick lateness, round trip and control step (an overrun is a tick > 10 ms late)
                **{k: float(r[k] or "nan") for k in ("late_max_ms", "round_trip_max_ms", "step_max_ms") if k in r},
            }
        )
        overruns = total
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--demos", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--algo", default="sac")
    ap.add_argument("--episodes", type=int, default=12)
    ap.add_argument("--kill-after", type=int, default=4, help="episodes in the replay log before the kill -9")
    ap.add_argument("--speed", type=float, default=1.0, help="agent control-rate multiplier (1: the task's 10 Hz)")
    ap.add_argument("--baseline-episodes", type=int, default=0, help="first, episodes against serve --no-learn")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    server_out, agent_out, replay = a.out / "server", a.out / "agent", a.out / "server" / "replay"
    endpoint = free_endpoint()
    sets = [x for s in a.sets for x in ("--set", s)]
    cli = [sys.executable, "-m", "inril_robot.cli"]

    def serve(resume: bool, no_learn: bool = False) -> subprocess.Popen:
        name = "server_baseline" if no_learn else f"server{'_resumed' if resume else ''}"
        log = open(a.out / f"{name}.log", "wb")  # noqa: SIM115 - child's stdout
        args = ["serve", "--checkpoint", str(a.checkpoint), "--bind", endpoint, *(["--no-learn"] if no_learn else [])]
        args += ["--out", str(a.out / "baseline_server" if no_learn else server_out)]
        args += ["--algo", a.algo, *(["--demos", str(a.demos)] if a.demos else [])]
        args += ["--endpoint-file", str(a.out / "endpoint"), *(["--resume"] if resume else []), "--json", *sets]
        (a.out / "endpoint").unlink(missing_ok=True)
        proc = subprocess.Popen([*cli, *args], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not (a.out / "endpoint").is_file():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start (log: {log.name})")
            time.sleep(0.1)
        return proc

    baseline: list[dict[str, str]] = []
    if a.baseline_episodes:  # the same agent settings against a server that does not learn: what this machine gives
        server = serve(resume=False, no_learn=True)
        args = ["finetune", "--robot", "sim", "--server", endpoint, "--checkpoint", str(a.checkpoint), "--algo", a.algo]
        args += ["--out", str(a.out / "baseline"), "--episodes", str(a.baseline_episodes), "--speed", str(a.speed)]
        subprocess.run([*cli, *args, "--json", *sets], capture_output=True, check=True)
        server.send_signal(signal.SIGINT)
        server.wait(60)
        baseline = read_csv(a.out / "baseline" / "agent_log.csv")
    timeline: dict[str, Any] = {}
    started = time.monotonic()
    server = serve(resume=False)
    timeline["server_ready_s"] = round(time.monotonic() - started, 1)
    agent_args = ["finetune", "--robot", "sim", "--server", endpoint, "--checkpoint", str(a.checkpoint)]
    agent_args += ["--algo", a.algo, "--out", str(agent_out), "--episodes", str(a.episodes), "--speed", str(a.speed)]
    agent_log = open(a.out / "agent.log", "wb")  # noqa: SIM115 - the child's stderr
    agent = subprocess.Popen([*cli, *agent_args, "--json", *sets], stdout=subprocess.PIPE, stderr=agent_log)
    while not (replay / "seg_000000.log").is_file() or ReplayLog(replay).summary().episodes < a.kill_after:
        if agent.poll() is not None:
            raise RuntimeError(f"the agent exited before the kill (log: {a.out / 'agent.log'})")
        time.sleep(0.2)
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    timeline["killed_at_s"] = round(time.monotonic() - started, 1)
    timeline["learner_released_log_s"] = round(wait_unlocked(replay), 2)
    before = ReplayLog(replay).summary()
    metrics_before = read_csv(server_out / "metrics.csv")
    resumed = serve(resume=True)
    timeline["resumed_at_s"] = round(time.monotonic() - started, 1)
    stdout, _ = agent.communicate(timeout=3600)
    resumed.send_signal(signal.SIGINT)
    resumed.wait(120)
    wait_unlocked(replay)
    after = ReplayLog(replay).summary()
    prefix = ReplayLog(replay).checksum(records=before.records)
    agent_result = json.loads(stdout) if stdout.strip() else {}
    rows = read_csv(server_out / "metrics.csv")
    episodes = read_csv(agent_out / "agent_log.csv")
    resumed_log = (a.out / "server_resumed.log").read_text(errors="replace")
    report = {
        "agent": {
            k: agent_result.get(k)
            for k in ("episodes", "env_steps", "hz", "overruns", "watchdog_holds", "reconnects", "stopped")
        },
        "per_episode": per_episode(episodes),
        "baseline_no_learn": {"episodes": per_episode(baseline)} if baseline else None,
        "before_kill": before.to_dict(),
        "after_resume": after.to_dict(),
        "prefix_checksum_after": prefix,
        "prefix_intact": prefix == before.checksum and after.transitions >= before.transitions,
        "learner_before_kill": {k: metrics_before[-1].get(k) for k in ("step", "updates", "updates_per_s", "utd")}
        if metrics_before
        else None,
        "learner_final": {k: rows[-1].get(k) for k in ("step", "updates", "updates_per_s", "utd", "buffer")}
        if rows
        else None,
        "updates_per_s": [float(r["updates_per_s"]) for r in rows if r.get("updates_per_s")],
        "timeline": timeline,
        "resumed_server_log_tail": resumed_log[-1500:],
    }
    print(json.dumps(report, indent=2, default=str))
    ok = report["prefix_intact"] and agent_result.get("episodes") == a.episodes
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
