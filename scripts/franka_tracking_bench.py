"""10 Hz tracking on franky-sim: the impedance tracker against per-step Cartesian motions, and hold() stopping.

For each control mode (``robot.franka.control``) and step size, `FrankaRobot.apply` gets constant +x deltas every
100 ms of *robot* time (franky-sim runs slower than real time on a loaded machine; pacing on its clock makes the
profile what a real-time arm would see), while a sampler thread records the measured TCP position and velocity
(Jacobian x measured joint velocities) at every 1 kHz state it sees. Reported per run, over the steady-state periods:

- ripple: mean over periods of (max - min) measured x velocity, divided by the target speed (step x 10 Hz);
- stop-and-go periods: periods whose minimum measured x velocity is below 10% of the target speed;
- lag: how far behind the ideal ramp (the deltas integrated continuously) the measured position is, in seconds
  (mean position error / target speed);
- after the last step, hold(): time until the TCP speed stays below 5 mm/s and the distance travelled after hold().

    python scripts/franka_tracking_bench.py [--host H] [--steps 0.002,0.005,0.01] [--json]

Without --host it starts franky-sim on a private loopback address (needs `pip install 'inril-robot[dev]'`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inril_robot.config import load_config
from inril_robot.drivers.franka.robot import FrankaRobot

PERIOD = 0.1
AT_REST = 0.005  # [m/s]


def start_sim() -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("franky-sim")
    if exe is None:
        raise SystemExit("franky-sim not installed: pip install 'inril-robot[dev]'")
    host = f"127.{random.randint(20, 220)}.{random.randint(20, 220)}.{random.randint(20, 220)}"
    log = tempfile.NamedTemporaryFile(prefix="franky-sim-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [exe, "-s", "mujoco", "--hostname", host], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 90
    while "Connect to the server using" not in Path(log.name).read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"franky-sim did not start: {Path(log.name).read_text()[-1000:]}")
        time.sleep(0.2)
    return proc, host


def robot_time(state: Any) -> float:
    return state.time.to_sec() if hasattr(state.time, "to_sec") else float(state.time) / 1e3


class Sampler(threading.Thread):
    def __init__(self, robot: Any) -> None:
        super().__init__(daemon=True)
        import franky

        self.robot, self.samples, self.stop = robot, [], threading.Event()
        self.frame = franky.Frame.EndEffector

    def run(self) -> None:
        last = None
        while not self.stop.is_set():
            s = self.robot.state
            t = robot_time(s)
            if t != last:
                jac = np.asarray(self.robot.model.zero_jacobian(self.frame, s))
                v = (jac @ np.asarray(s.dq))[:3]  # measured TCP velocity from the joint velocities
                self.samples.append((t, *np.asarray(s.O_T_EE.matrix)[:3, 3], *v))
                last = t
            time.sleep(0.0005)


def run_one(host: str, control: str, step: float, n: int, noise: float, seed: int) -> dict[str, Any]:
    cfg = load_config(
        robot="franka",
        overrides=[
            f"robot.franka.host={host}",
            "robot.franka.realtime=ignore",
            "robot.franka.home_dynamics_factor=0.4",
            f"robot.franka.control={control}",
        ],
    )
    arm = FrankaRobot(cfg.robot, cfg.safety)
    arm.connect()
    rng = np.random.default_rng(seed)
    try:
        arm.home()
        sampler = Sampler(arm.robot)
        sampler.start()
        t0 = robot_time(arm.robot.state) + 0.05
        ticks = []
        for i in range(n):
            while robot_time(arm.robot.state) < t0 + PERIOD * i:
                time.sleep(0.0005)
            ticks.append(robot_time(arm.robot.state))
            a = np.zeros(7)
            a[0] = step * (1.0 + noise * rng.standard_normal()) if noise else step
            arm.apply(a)
        while robot_time(arm.robot.state) < t0 + PERIOD * n:
            time.sleep(0.0005)
        hold_t = robot_time(arm.robot.state)
        arm.hold()
        while robot_time(arm.robot.state) < hold_t + 1.0:
            time.sleep(0.002)
        sampler.stop.set()
        sampler.join()
    finally:
        arm.close()
    s = np.array(sampler.samples)
    t, x, vx, speed = s[:, 0], s[:, 1], s[:, 4], np.linalg.norm(s[:, 4:7], axis=1)
    target = step / PERIOD
    per = []
    for i in range(5, n - 1):  # steady state: after the first half second
        m = (t >= ticks[i]) & (t < ticks[i + 1])
        if m.sum() > 5:
            per.append((vx[m].min(), vx[m].max(), vx[m].mean()))
    per_a = np.array(per)
    steady = (t >= ticks[5]) & (t < ticks[-1])
    x0 = x[t <= ticks[0]][-1] if np.any(t <= ticks[0]) else x[0]
    ideal = x0 + target * np.clip(t - ticks[0], 0.0, PERIOD * n)
    after = t >= hold_t
    moving = np.nonzero(after & (speed > AT_REST))[0]
    rest_at = t[moving[-1]] if len(moving) else hold_t
    x_hold = np.interp(hold_t, t, x)
    return {
        "control": control,
        "step_m": step,
        "noise": noise,
        "target_mps": round(target, 4),
        "mean_vx": round(float(per_a[:, 2].mean()), 4),
        "ripple": round(float((per_a[:, 1] - per_a[:, 0]).mean() / target), 3),
        "stop_and_go_periods": int((per_a[:, 0] < 0.1 * target).sum()),
        "periods": len(per_a),
        "lag_s": round(float(np.mean(ideal[steady] - x[steady]) / target), 3),
        "hold_speed_mps": round(float(np.interp(hold_t, t, speed)), 4),
        "hold_to_rest_s": round(float(rest_at - hold_t), 3),
        "hold_travel_m": round(float(np.max(np.abs(x[after] - x_hold))), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host")
    ap.add_argument("--steps", default="0.002,0.005,0.01")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--noisy", action="store_true", help="also 5 mm steps with noise of one step (exploration)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    proc, host = (None, args.host) if args.host else start_sim()
    rows = []
    try:
        cases = [(float(s), 0.0) for s in args.steps.split(",")] + ([(0.005, 1.0)] if args.noisy else [])
        for step, noise in cases:
            for control in ("motion", "impedance"):
                rows.append(run_one(host, control, step, args.n, noise, seed=0))
                if not args.json:
                    print(json.dumps(rows[-1]), flush=True)
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
