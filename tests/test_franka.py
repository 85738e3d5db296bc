"""`FrankaRobot` against franky-sim: a real libfranka-protocol server (MuJoCo inside), driven by real franky.

The fixture starts `franky-sim -s mujoco` on a loopback address of its own (127.x.y.z, from this process id), so
parallel test sessions do not share a simulated arm, waits for the FCI port and kills the server on teardown.
Where franky-control or franky-sim is not installed, or the server does not start, the tests skip with the reason.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inril_robot.config import RunConfig, load_config
from inril_robot.core.safety import SafetyLimits
from inril_robot.core.state import RobotState

franky = pytest.importorskip("franky", reason="franky-control not installed: pip install 'inril-robot[franka]'")

from inril_robot.drivers.franka.robot import FrankaFault, FrankaRobot  # noqa: E402

# The simulated arm runs in real time next to the tests: on a loaded machine a hang in the protocol must fail the
# test, not stall the suite. The module takes ~20 s (a 1 kHz server process) and runs in the default suite, so CI
# exercises the driver against the real libfranka protocol; the end-to-end collect test is `-m slow`.
pytestmark = [pytest.mark.timeout(120, method="thread")]  # thread: fires even inside a C++ call

SERVER_START_TIMEOUT_S = 90.0
HOME_DYNAMICS = 0.4  # franky-sim has no people around it: home fast to keep the tests short
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)


def _loopback_address() -> str:
    pid = os.getpid()
    return f"127.{(pid >> 16) & 0xFF}.{(pid >> 8) & 0xFF}.{max(pid & 0xFF, 2)}"


def _die_with_parent() -> None:
    """In the franky-sim child: SIGKILL it when this test process dies, even when pytest-timeout or a signal ends the
    session without running the fixture's teardown (an orphaned simulator keeps a core busy for good)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@pytest.fixture(scope="module")
def franky_sim() -> Iterator[str]:
    """The host of a running franky-sim server (MuJoCo), unique to this test session."""
    exe = shutil.which("franky-sim")
    if exe is None:
        pytest.skip("franky-sim not installed: pip install 'inril-robot[dev]' (franky-sim==1.0.4)")
    host = _loopback_address()
    log = tempfile.NamedTemporaryFile(prefix="franky-sim-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [exe, "-s", "mujoco", "--hostname", host],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    try:
        # the FCI port opens before the simulation runs: the banner printed after start-up is the readiness signal
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while "Connect to the server using" not in Path(log.name).read_text():
            if proc.poll() is not None:
                pytest.skip(f"franky-sim exited with {proc.returncode}: {Path(log.name).read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.skip(
                    f"franky-sim did not start on {host} within {SERVER_START_TIMEOUT_S:.0f} s: "
                    f"{Path(log.name).read_text()[-2000:]}"
                )
            time.sleep(0.2)
        yield host
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        log.close()
        Path(log.name).unlink(missing_ok=True)


def franka_cfg(host: str, overrides: tuple[str, ...] = ()) -> RunConfig:
    return load_config(
        robot="franka",
        overrides=[
            f"robot.franka.host={host}",
            "robot.franka.realtime=ignore",
            f"robot.franka.home_dynamics_factor={HOME_DYNAMICS}",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def robot(franky_sim: str) -> Iterator[FrankaRobot]:
    cfg = franka_cfg(franky_sim)
    arm = FrankaRobot(cfg.robot, cfg.safety)
    arm.connect()
    yield arm
    arm.close()


@pytest.fixture
def homed(robot: FrankaRobot) -> FrankaRobot:
    if robot.fault is not None:
        robot.recover()
    robot.home()
    return robot


def rotation_angle(q1: np.ndarray, q2: np.ndarray) -> float:
    return float(2.0 * np.arccos(min(1.0, abs(float(np.dot(q1, q2))))))


def run_at_rate(robot: FrankaRobot, actions: np.ndarray, hz: float) -> tuple[list[RobotState], list[float]]:
    """Apply `actions` at `hz` on the robot's clock (a loaded machine slows franky-sim: pacing on the wall clock
    would send the steps faster than the simulated arm runs)."""
    states, apply_s = [], []
    start = robot_clock(robot)
    for i, action in enumerate(actions):
        t0 = time.perf_counter()
        robot.apply(action)
        apply_s.append(time.perf_counter() - t0)
        wait_robot_time(robot, start + (i + 1) / hz)
        states.append(robot.state())
    return states, apply_s


def robot_clock(arm: FrankaRobot) -> float:
    """franky-sim's own clock [s]: it runs slower than real time on a loaded machine, so pacing and timing on it
    keeps the tests about the arm, not about the machine's load."""
    t = arm.robot.state.time
    return t.to_sec() if hasattr(t, "to_sec") else float(t) / 1e3


def wait_robot_time(arm: FrankaRobot, until: float) -> None:
    while robot_clock(arm) < until:
        time.sleep(0.0005)


def test_state_matches_the_simulator_contract(homed: FrankaRobot, sim_cfg: Any) -> None:
    from inril_robot.drivers.sim.robot import SimRobot

    real = homed.state()
    for name, shape in (
        ("ee_pos", (3,)),
        ("ee_quat", (4,)),
        ("ee_vel", (6,)),
        ("joint_pos", (7,)),
        ("joint_vel", (7,)),
        ("ee_wrench", (6,)),
    ):
        value = getattr(real, name)
        assert value.shape == shape and value.dtype == np.float64 and np.all(np.isfinite(value)), name
    assert abs(np.linalg.norm(real.ee_quat) - 1.0) < 1e-6 and real.ee_quat[3] >= 0.0  # xyzw, w >= 0

    cfg = sim_cfg("reach")
    sim = SimRobot(cfg.robot, cfg.safety)
    sim.connect()
    sim.home()
    expected = sim.state()
    sim.close()
    # the same joint configuration puts the same TCP at the same place: frames, TCP offset and order agree
    np.testing.assert_allclose(real.joint_pos, expected.joint_pos, atol=0.01)
    np.testing.assert_allclose(real.ee_pos, expected.ee_pos, atol=0.003)
    assert rotation_angle(real.ee_quat, expected.ee_quat) < 0.01
    assert abs(real.gripper_width - expected.gripper_width) < 0.005  # open after home
    assert np.linalg.norm(real.ee_vel[:3]) < 0.01
    assert real.ee_wrench.shape == expected.ee_wrench.shape


def test_delta_pose_episode_at_10hz(homed: FrankaRobot) -> None:
    start = homed.state()
    steps = 20
    actions = np.zeros((steps, 7))
    actions[:, 0] = 0.008  # +x in the base frame
    actions[:, 1] = np.where(np.arange(steps) < 10, 0.004, -0.004)
    actions[:, 2] = -0.003
    actions[:, 5] = 0.02  # yaw about base +z
    states, apply_s = run_at_rate(homed, actions, hz=10.0)
    print(f"apply() median {np.median(apply_s) * 1e3:.2f} ms, max {max(apply_s) * 1e3:.2f} ms")
    assert np.median(apply_s) < 0.01, "apply() must not wait for the motion"
    assert any(s.ee_vel[0] > 0.02 for s in states), "base-frame +x velocity while moving +x"
    homed.hold()
    wait_robot_time(homed, robot_clock(homed) + 1.0)
    end = homed.state()
    commanded = homed.commanded_pose
    assert commanded is not None
    # settles on the reference hold() re-anchored: compliant tracking leaves a few mm of error against the simulator's
    # joint friction (1 N against the 1000 N/m spring is 1 mm)
    np.testing.assert_allclose(end.ee_pos, commanded[:3, 3], atol=0.006)
    moved = end.ee_pos - start.ee_pos
    # up to the full 16 cm; the compliant tracker lags (the reference stays within max_ref_gap of the arm)
    assert moved[0] > 0.05 and moved[2] < -0.01 and abs(moved[1]) < 0.02, moved  # y goes +4 cm and back
    assert np.all(moved[[0, 2]] <= np.abs(actions[:, [0, 2]].sum(axis=0)) + 0.003)
    assert 0.1 < rotation_angle(end.ee_quat, start.ee_quat) < 0.02 * steps + 0.02
    assert [s.time for s in states] == sorted(s.time for s in states)


def test_gripper_moves_without_blocking(homed: FrankaRobot) -> None:
    close = np.zeros(7)
    close[6] = 1.0
    t0 = time.perf_counter()
    homed.apply(close)
    assert time.perf_counter() - t0 < 0.05
    homed.apply(np.zeros(7))  # open, queued behind the grasp: still no waiting
    homed.apply(close)
    assert time.perf_counter() - t0 < 0.1
    assert homed.gripper_width_age < 1.0
    deadline = time.monotonic() + 5.0
    while homed.state().gripper_width > 0.005 and time.monotonic() < deadline:
        homed.hold()
        time.sleep(0.1)
    assert homed.state().gripper_width < 0.005  # nothing between the fingers: the grasp closes fully
    homed.apply(np.zeros(7))
    deadline = time.monotonic() + 5.0
    while homed.state().gripper_width < 0.075 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert homed.state().gripper_width > 0.075


def test_home_returns_to_the_home_joints(homed: FrankaRobot) -> None:
    run_at_rate(homed, np.tile([0.01, -0.01, -0.005, 0.0, 0.0, 0.05, 1.0], (8, 1)), hz=10.0)
    moved = homed.state()
    assert np.abs(moved.joint_pos - homed.cfg.home_joints).max() > 0.02
    homed.home()
    state = homed.state()
    np.testing.assert_allclose(state.joint_pos, homed.cfg.home_joints, atol=0.01)
    assert state.gripper_width > 0.075


def test_stop_refuses_motion_until_home(homed: FrankaRobot) -> None:
    homed.apply(np.array([0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    homed.stop()
    with pytest.raises(RuntimeError, match="call home"):
        homed.apply(np.zeros(7))
    homed.hold()  # holding is allowed while stopped
    homed.home()
    homed.apply(np.zeros(7))


def test_force_reaction_stops_the_arm(franky_sim: str, robot: FrankaRobot) -> None:
    # franky-sim reports no external force (exactly 0 N), so the threshold goes below zero: the real reaction in
    # franky's 1 kHz loop fires on its first cycle. model_construct bypasses validation (max_contact_force > 0).
    robot.close()
    cfg = franka_cfg(franky_sim)
    safety = SafetyLimits.model_construct(**{**cfg.safety.model_dump(), "max_contact_force": -1.0})
    arm = FrankaRobot(cfg.robot, safety)
    arm.connect()
    try:
        arm.home()
        before = arm.state().ee_pos
        arm.apply(np.array([0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
        time.sleep(0.5)
        with pytest.raises(RuntimeError, match="force reaction stopped the arm"):
            arm.apply(np.array([0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
        assert arm.contact_stops == 1
        assert np.linalg.norm(arm.state().ee_pos - before) < 0.005  # stopped before reaching the 1 cm target
        arm.home()
    finally:
        arm.close()
        robot.connect()


def test_errors_are_counted_and_need_an_explicit_recover(homed: FrankaRobot, monkeypatch: pytest.MonkeyPatch) -> None:
    # franky-sim simulates no reflexes, so the error franky would re-raise from its control thread is injected at
    # the one call that surfaces it (poll_motion); everything else is the real driver on the real server.
    def reflex() -> bool:
        raise franky.ControlException("libfranka: Move command aborted: motion aborted by reflex! [cartesian_reflex]")

    monkeypatch.setattr(homed, "robot", _PollRaises(homed.robot, reflex))
    with pytest.raises(FrankaFault, match="cartesian_reflex"):
        homed.apply(np.zeros(7))
    monkeypatch.undo()
    assert len(homed.errors) == 1
    for _ in range(2):  # stays faulted: never cleared by retrying
        with pytest.raises(FrankaFault, match="recover"):
            homed.apply(np.zeros(7))
    with pytest.raises(FrankaFault):
        homed.home()
    homed.recover()
    homed.home()
    homed.apply(np.zeros(7))
    assert len(homed.errors) == 1


class _FaultOnce:
    """The real franky Robot whose poll_motion raises `message` once, at the `after`-th call from now (franky-sim
    simulates no reflexes or user stops: this injects what franky would re-raise from its control thread)."""

    def __init__(self, inner: Any, message: str, after: int) -> None:
        self._inner, self._message, self._left = inner, message, after

    def poll_motion(self) -> None:
        self._left -= 1
        if self._left == 0:
            raise franky.ControlException(self._message)
        self._inner.poll_motion()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


REFLEX = "libfranka: Move command aborted: motion aborted by reflex! [cartesian_reflex]"
USER_STOP = "libfranka: Move command aborted: User Stop pressed!"


@pytest.mark.parametrize("fault", [REFLEX, pytest.param(USER_STOP, marks=pytest.mark.slow)])
def test_collect_survives_a_fault_and_drops_the_faulted_episode(
    franky_sim: str, robot: FrankaRobot, tmp_path: Path, fault: str
) -> None:
    """collect --execute over franky-sim: a reflex (or a user stop) in episode 0 -> pause with the reason, the
    scripted operator confirms, recover(), home, and the next episode is recorded; the faulted one is not stored."""
    from inril_robot.data.store import Dataset
    from inril_robot.hardware import Teleop, TeleopCommand
    from inril_robot.runtime.collect import collect
    from inril_robot.runtime.env import RobotEnv

    class Operator(Teleop):
        def __init__(self) -> None:
            self.reads = 0

        def read(self) -> TeleopCommand:
            self.reads += 1
            if self.reads % 6 == 0:
                return TeleopCommand(keep=True)
            return TeleopCommand(delta_pos=np.array([0.005, 0.0, -0.002]))

    robot.close()
    said: list[str] = []
    confirmations: list[str] = []
    try:
        cfg = franka_cfg(
            franky_sim, ("task.name=reach", "task.observation=image", "task.max_steps=30", "teleop.kind=keyboard")
        )
        env = RobotEnv(cfg, execute=True)
        arm = env.robot
        assert isinstance(arm, FrankaRobot)
        real = arm.robot
        arm.robot = _FaultOnce(real, fault, after=6)  # home() checks twice, then the 4th step of episode 0
        try:
            result = collect(cfg, tmp_path / "demos", 1, env, Operator(), say=said.append, confirm=confirmations.append)
            assert arm.fault is None and len(arm.errors) == 1 and fault.split(": ")[-1] in arm.errors[0].message
        finally:
            arm.robot = real
            env.close()
            del real  # a failing assertion's traceback must not keep the connection open (one client at a time)
        assert result.kept == 1 and len(result.faults) == 1 and fault.split(": ")[-1] in result.faults[0], result
        assert len(confirmations) == 1 and any("PAUSED" in s and fault.split(": ")[-1] in s for s in said), said
        dataset = Dataset(tmp_path / "demos")
        # only the episode after the recovery: the faulted one (3 steps recorded before the fault) was dropped
        assert len(dataset) == 1 and dataset.num_steps == result.steps == result.episodes[0]["length"] > 0
        assert not dataset.episodes[0].meta["shadow"]
    finally:
        robot.connect()


class _PollRaises:
    """The real franky Robot with poll_motion replaced (see the test above)."""

    def __init__(self, inner: Any, poll: Any) -> None:
        self._inner, self.poll_motion = inner, poll

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def yaw_tilt(arm_or_rot: Any, cfg: RunConfig) -> tuple[float, float]:
    from inril_robot.core.geometry import quat_to_matrix
    from inril_robot.core.safety import tilt_yaw

    tilt, yaw = tilt_yaw(arm_or_rot, quat_to_matrix(np.asarray(cfg.safety.nominal_quat)))
    return yaw, tilt


def hold_and_time_to_rest(
    arm: FrankaRobot, speed: float = 0.005, rot_speed: float = 0.02, window: float = 1.0
) -> tuple[float, float, float]:
    """hold() every control period (as the watchdog does), then (robot seconds from the first hold until the TCP
    stays below `speed` / `rot_speed`, the farthest the TCP got from where it was at the hold [m], the largest
    rotation from there [rad])."""
    from inril_robot.core.geometry import quat_to_matrix, rotation_error

    start = arm.state()
    arm.hold()
    t0 = robot_clock(arm)
    last_moving, travel, turn, holds = t0, 0.0, 0.0, 1
    while (now := robot_clock(arm)) < t0 + window:
        if now >= t0 + 0.1 * holds:
            arm.hold()
            holds += 1
        s = arm.state()
        if np.linalg.norm(s.ee_vel[:3]) > speed or np.linalg.norm(s.ee_vel[3:]) > rot_speed:
            last_moving = now
        travel = max(travel, float(np.linalg.norm(s.ee_pos - start.ee_pos)))
        rot_error = rotation_error(quat_to_matrix(s.ee_quat), quat_to_matrix(start.ee_quat))
        turn = max(turn, float(np.linalg.norm(rot_error)))
        time.sleep(0.001)
    return last_moving - t0, travel, turn


@pytest.mark.parametrize("max_yaw", [None, 0.5])
def test_wind_up_probe_ends_inside_and_hold_stops_within_two_periods(
    franky_sim: str, robot: FrankaRobot, max_yaw: float | None
) -> None:
    """The issue's probe: 30 steps of the largest yaw step (proposed 0.06 rad, above the cap) through RobotEnv,
    paced on the robot clock, then hold(): with the preset (the arm turning at full speed when hold() comes) and with
    max_yaw tightened to 0.5 rad (the limit is reached)."""
    from inril_robot.core.geometry import quat_to_matrix
    from inril_robot.core.safety import reference_violations
    from inril_robot.runtime.env import RobotEnv

    robot.close()
    try:
        cfg = franka_cfg(
            franky_sim,
            (
                "task.name=reach",
                "task.observation=image",
                "task.max_steps=40",
                *([f"safety.max_yaw={max_yaw}"] if max_yaw else []),
            ),
        )
        env = RobotEnv(cfg, execute=True)
        try:
            arm = env.robot
            assert isinstance(arm, FrankaRobot)
            env.reset()
            t0 = robot_clock(arm)
            limit_hits = 0
            for i in range(30):
                wait_robot_time(arm, t0 + 0.1 * (i + 1))
                _, _, _, _, info = env.step(np.array([0, 0, 0, 0, 0, 0.06, 0.0]))
                ref = arm.commanded_pose
                assert ref is not None
                measured = np.eye(4)
                measured[:3, :3], measured[:3, 3] = quat_to_matrix(info["state"].ee_quat), info["state"].ee_pos
                assert reference_violations(ref, measured, cfg.safety) == [], i
                assert abs(yaw_tilt(ref[:3, :3], cfg)[0]) <= cfg.safety.max_yaw + 1e-9
                assert abs(yaw_tilt(measured[:3, :3], cfg)[0]) <= cfg.safety.max_yaw + 0.01, i
                limit_hits += any(e.limit in ("orientation", "reference_orientation") for e in info["safety_events"])
            assert limit_hits > 0 or max_yaw is None, "the probe must reach the yaw limit"
            rest_s, travel, turn = hold_and_time_to_rest(arm)
            print(
                f"wind-up probe: at rest {rest_s * 1e3:.0f} ms (robot time) after hold, moved {travel * 1e3:.1f} mm "
                f"/ {turn:.3f} rad after it"
            )
            assert rest_s <= 2 * 0.1, rest_s
            yaw = yaw_tilt(quat_to_matrix(arm.state().ee_quat), cfg)[0]
            assert abs(yaw) <= cfg.safety.max_yaw + 0.01, yaw
        finally:
            env.close()
    finally:
        robot.connect()


def test_hold_stops_a_fast_translation(homed: FrankaRobot) -> None:
    t0 = robot_clock(homed)
    for i in range(10):
        wait_robot_time(homed, t0 + 0.1 * i)
        homed.apply(np.array([0.01, 0.0, -0.005, 0.0, 0.0, 0.0, 0.0]))
    wait_robot_time(homed, t0 + 1.0)
    assert np.linalg.norm(homed.state().ee_vel[:3]) > 0.05, "moving when hold() comes"
    rest_s, travel, _ = hold_and_time_to_rest(homed)
    print(f"hold from ~0.1 m/s: at rest after {rest_s * 1e3:.0f} ms (robot time), {travel * 1e3:.1f} mm travelled")
    assert rest_s <= 2 * 0.1 and travel < 0.01


@pytest.mark.parametrize("sequences", [1, pytest.param(40, marks=[pytest.mark.slow, pytest.mark.timeout(900)])])
def test_random_action_sequences_keep_reference_and_pose_inside(
    franky_sim: str, robot: FrankaRobot, sequences: int
) -> None:
    """Random action sequences (wind-up pushes, noise, huge values) through RobotEnv on franky-sim: the commanded
    reference and the measured pose are checked at every tick. 1 sequence here, 40 with -m slow."""
    from inril_robot.core.geometry import quat_to_matrix
    from inril_robot.core.safety import reference_violations
    from inril_robot.runtime.env import RobotEnv

    robot.close()
    rng = np.random.default_rng(0)
    try:
        cfg = franka_cfg(
            franky_sim,
            (
                "task.name=reach",
                "task.observation=image",
                "task.max_steps=1000",
                "safety.max_yaw=0.5",
                "safety.max_tilt=0.3",
            ),
        )
        lo, hi = np.array(cfg.safety.workspace_min), np.array(cfg.safety.workspace_max)
        caps = np.array([cfg.safety.max_step] * 3 + [cfg.safety.max_rot_step] * 3)
        env = RobotEnv(cfg, execute=True)
        try:
            arm = env.robot
            assert isinstance(arm, FrankaRobot)
            env.reset()
            t0, tick = robot_clock(arm), 0
            for _ in range(sequences):
                direction = rng.normal(size=6)
                pushes = np.tile(direction / np.abs(direction).max() * caps * 3.0, (15, 1))
                noise = rng.normal(size=(15, 6)) * caps * 2.0
                for a in np.concatenate([pushes, noise]):
                    tick += 1
                    wait_robot_time(arm, t0 + 0.1 * tick)
                    _, _, _, _, info = env.step(np.concatenate([a, [rng.uniform()]]))
                    s = info["state"]
                    measured = np.eye(4)
                    measured[:3, :3], measured[:3, 3] = quat_to_matrix(s.ee_quat), s.ee_pos
                    assert reference_violations(arm.commanded_pose, measured, cfg.safety) == [], tick
                    yaw, tilt = yaw_tilt(measured[:3, :3], cfg)
                    # the measured pose: inside, up to the compliant tracker's error clip around the reference
                    clip, rclip = cfg.robot.franka.translational_error_clip, cfg.robot.franka.rotational_error_clip
                    assert np.all(s.ee_pos >= lo - clip) and np.all(s.ee_pos <= hi + clip), (tick, s.ee_pos)
                    assert abs(yaw) <= cfg.safety.max_yaw + rclip and tilt <= cfg.safety.max_tilt + rclip, tick
        finally:
            env.close()
    finally:
        robot.connect()


def test_doctor_shows_the_fault_state_and_robot_recover_clears_it(franky_sim: str, robot: FrankaRobot) -> None:
    """`doctor --robot franka` reports the arm's mode; `inril-robot robot recover` connects, recovers, reports the
    state before and after, and (without --home) never moves the arm."""
    import json

    from typer.testing import CliRunner

    from inril_robot.cli import app
    from inril_robot.doctor import _check_robot

    robot.close()  # one client at a time
    try:
        checks = {c.item: c for c in _check_robot(franky_sim)}
        assert checks["fault state"].status == "ok" and "no fault" in checks["fault state"].detail
        runner = CliRunner()
        out = runner.invoke(
            app, ["robot", "recover", "--host", franky_sim, "--set", "robot.franka.realtime=ignore", "--json"]
        )
        assert out.exit_code == 0, out.output
        payload = json.loads(out.stdout)
        assert payload["after"]["in_reflex"] is False and payload["after"]["driver_fault"] is None
        assert payload["homed"] is False
        refused = runner.invoke(app, ["robot", "recover", "--host", franky_sim, "--home"])
        assert refused.exit_code == 2 and "--execute" in refused.output
    finally:
        robot.connect()


def test_unreachable_host_names_the_fix() -> None:
    cfg = franka_cfg("127.0.0.1", ("robot.franka.connect_timeout_s=0.5",))
    cfg.robot.franka.host = "192.0.2.1"  # TEST-NET-1: never routed
    with pytest.raises(ConnectionError, match=r"192\.0\.2\.1:1337.*FCI is activated"):
        FrankaRobot(cfg.robot, cfg.safety).connect()


def test_registry_finds_the_driver_and_wraps_it_in_shadow_mode(franky_sim: str) -> None:
    from inril_robot.runtime.registry import make_robot
    from inril_robot.runtime.shadow import ShadowRobot

    cfg = franka_cfg(franky_sim)
    shadow = make_robot(cfg, [])
    assert isinstance(shadow, ShadowRobot) and isinstance(shadow.inner, FrankaRobot)
    assert isinstance(make_robot(cfg, [], execute=True), FrankaRobot)


def test_shadow_mode_never_commands_the_arm(franky_sim: str, robot: FrankaRobot) -> None:
    from inril_robot.runtime.shadow import ShadowRobot

    robot.home()
    assert robot.gripper is not None
    commands = robot.gripper.commands_done
    shadow = ShadowRobot(robot)
    for _ in range(3):
        shadow.apply(np.array([0.01, 0.0, 0.0, 0.0, 0.0, 0.05, 1.0]))
        time.sleep(0.05)
    assert not robot.robot.is_in_control  # no motion, no tracker: the robot's own idle hold
    assert robot.gripper.commands_done == commands and not shadow.inner.last_reference_events


class _CellOperator:
    """A scripted operator at the cell for `eval --robot franka`: follows the prompts it is shown (`say`), moves the
    arm during the scene reset, confirms the start, presses keep in episode 0, answers "failed" when asked after a
    time limit, and switches the success detector on for episode 2."""

    def __init__(self) -> None:
        self.phase, self.episode, self.reads = "idle", -1, 0
        self.detector_on = False
        self.said: list[str] = []

    def say(self, text: str) -> None:
        self.said.append(text)
        for key, phase in (("reset the scene", "operator"), ("confirm to start", "confirm"), ("success?", "decide")):
            if key in text:
                self.phase, self.reads = phase, 0

    def read(self) -> Any:
        from inril_robot.hardware import TeleopCommand

        self.reads += 1
        if self.phase == "operator":
            if self.reads == 1:
                return TeleopCommand(delta_pos=np.array([0.0, 0.005, 0.0]))  # the teleop moves the arm meanwhile
            self.phase = "between"
            return TeleopCommand(keep=True)
        if self.phase == "confirm":
            self.phase, self.reads, self.episode = "episode", 0, self.episode + 1
            self.detector_on = self.episode == 2
            return TeleopCommand(keep=True)
        if self.phase == "episode" and self.episode == 0 and self.reads == 4:
            return TeleopCommand(keep=True)
        if self.phase == "decide":
            self.phase = "between"
            return TeleopCommand(discard=True)
        return TeleopCommand()

    def close(self) -> None:
        pass


@pytest.mark.timeout(300, method="thread")
def test_eval_on_the_arm_decides_success_by_keys_or_detector_with_videos_and_resets(
    franky_sim: str, robot: FrankaRobot, tmp_path: Path
) -> None:
    """`eval --robot franka` over franky-sim: the reset phase before each episode (open, retreat, the operator's
    reset with the teleop, randomised start, confirm), success from the operator's keys or an injected detector,
    a Wilson interval, and a video per episode (state overlay: franky-sim has no cameras)."""
    import av

    from inril_robot.runtime.env import RobotEnv
    from inril_robot.runtime.rollout import RobotCell, run_policy

    robot.close()  # one client at a time on the simulated arm
    operator = _CellOperator()
    try:
        cfg = franka_cfg(
            franky_sim,
            (
                "task.name=reach",
                "task.observation=image",
                "task.max_steps=10",
                "teleop.kind=keyboard",
                "task.reset.start_xyz=[0.02,0.02,0.0]",
                "task.reset.retreat_height=0.03",
            ),
        )
        env = RobotEnv(cfg, execute=True)
        try:
            detector = lambda obs: True if operator.detector_on else None  # noqa: E731 - no opinion until episode 2
            cell = RobotCell(operator, detector=detector, say=operator.say)  # type: ignore[arg-type]
            push = np.array([0.004, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
            summary = run_policy(
                env, lambda e, o: push, 3, seed=5, video_dir=tmp_path / "videos", video_episodes=3, cell=cell
            )
        finally:
            env.close()
    finally:
        robot.connect()
    got = [(e.success, e.decided_by, e.length) for e in summary.episodes]
    assert got == [(True, "operator", 3), (False, "operator", 10), (True, "detector", 1)], got
    rate = summary.to_dict()["success"]
    assert rate["successes"] == 2 and rate["trials"] == 3 and 0 < rate["ci95_low"] < 2 / 3 < rate["ci95_high"] < 1
    stages = [[s["stage"] for s in log] for log in summary.extra["resets"]]
    assert stages[0] == ["operator", "home", "start", "confirm"]
    assert stages[1] == stages[2] == ["open", "retreat", "operator", "home", "start", "confirm"], stages
    retreat = summary.extra["resets"][1][1]
    assert retreat["z_to"] > retreat["z_from"] + 0.02  # rose before homing
    assert all(log[2]["moved_steps"] == 1 for log in summary.extra["resets"][1:])
    assert all(log[-2]["reached"] for log in summary.extra["resets"])  # the randomised start pose was reached
    videos = summary.extra["episode_videos"]
    assert len(videos) == 3
    for path in videos:
        with av.open(path) as container:
            assert sum(1 for _ in container.decode(video=0)) > 1


def _proprio_checkpoint(folder: Path) -> Path:
    """A Gaussian policy with random weights on proprioception only (what a cell without cameras can feed)."""
    from inril_robot.learning.policies import checkpoint as ckpt
    from inril_robot.learning.policies.factory import make_policy
    from inril_robot.learning.policies.normalizer import Normalizer
    from inril_robot.learning.pretrain import policy_obs_keys, run_contract

    cfg = load_config(robot="sim", task="reach", algo="bc_gaussian", overrides=["task.observation=image"])
    contract = run_contract(cfg)
    shapes = {k: tuple(contract.observations[k].shape) for k in policy_obs_keys(contract, "image")}
    stats = {k: {"mean": [0.0] * s[0], "std": [1.0] * s[0]} for k, s in shapes.items()}
    actions = Normalizer(stats, {"min": [-0.004] * 6 + [0.0], "max": [0.004] * 6 + [1.0]})
    policy = make_policy(cfg.policy, actions, shapes, contract.action_dim)
    return ckpt.save_checkpoint(folder / "last.pt", policy, contract=contract, run_cfg=cfg, step=1)


@pytest.mark.slow
@pytest.mark.timeout(400, method="thread")
def test_eval_command_on_the_arm_through_a_terminal(franky_sim: str, robot: FrankaRobot, tmp_path: Path) -> None:
    """`inril-robot eval --robot franka --execute` over franky-sim, typed at its terminal: reset the scene (keep),
    confirm the start (keep), then keep = success in episode 0 and "failed" at episode 1's time limit."""
    import json
    import sys

    pexpect = pytest.importorskip("pexpect")
    checkpoint = _proprio_checkpoint(tmp_path)
    robot.close()
    sets = [f"robot.franka.host={franky_sim}", "robot.franka.realtime=ignore", "task.max_steps=8"]
    sets += [f"robot.franka.home_dynamics_factor={HOME_DYNAMICS}", "task.reset.start_xyz=[0.02,0.0,0.0]"]
    args = ["-m", "inril_robot.cli", "eval", "--checkpoint", str(checkpoint), "--robot", "franka", "--execute"]
    args += ["--episodes", "2", "--out", str(tmp_path / "eval"), "--json"]
    for text in sets:
        args += ["--set", text]
    child = pexpect.spawn(sys.executable, args, encoding="utf-8", timeout=120, dimensions=(50, 200))
    try:
        for answers in (("k", "k", "k"), ("k", "k", "x")):  # scene reset, start, verdict
            child.expect("reset the scene")
            child.send(answers[0])
            child.expect("confirm to start")
            child.send(answers[1])
            if answers[2] == "k":
                time.sleep(0.5)  # a few steps, then the operator's keep: success
                child.send("k")
            else:
                child.expect(r"success\?")
                child.send("x")
        child.expect(pexpect.EOF, timeout=120)
    finally:
        child.close(force=True)
        robot.connect()
    assert child.exitstatus == 0, child.before
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert [e["success"] for e in result["per_episode"]] == [True, False]
    assert [e["decided_by"] for e in result["per_episode"]] == ["operator", "operator"]
    assert result["per_episode"][1]["length"] == 8 and len(result["episode_videos"]) == 2
    assert [s["stage"] for s in result["resets"][1]] == ["open", "retreat", "operator", "home", "start", "confirm"]


@pytest.mark.slow
def test_collect_records_an_episode_over_franky_sim(franky_sim: str, robot: FrankaRobot, tmp_path: Path) -> None:
    """`collect` over `RobotEnv` over the Franka driver (--execute) with a scripted operator, into the store."""
    from inril_robot.data.store import Dataset
    from inril_robot.hardware import Teleop, TeleopCommand
    from inril_robot.runtime.collect import collect
    from inril_robot.runtime.env import RobotEnv

    class ReplayOperator(Teleop):
        """An operator who keeps through the reset phase's prompts (scene reset, start), then pushes +x for `steps`
        reads, closes the gripper half-way through, then keeps."""

        def __init__(self, steps: int) -> None:
            self.steps, self.reads, self.started = steps, 0, False

        def say(self, text: str) -> None:
            self.started = self.started or "confirm to start" in text

        def read(self) -> TeleopCommand:
            if not self.started:
                return TeleopCommand(keep=True)
            self.reads += 1
            if self.reads > self.steps + 1:  # the first read after the start prompt confirms it
                return TeleopCommand(keep=True)
            if self.reads == 1:
                return TeleopCommand(keep=True)
            push = self.reads - 1
            return TeleopCommand(delta_pos=np.array([0.005, 0.0, -0.002]), gripper=float(push > self.steps // 2))

    robot.close()  # one client at a time on the simulated arm
    try:
        cfg = franka_cfg(
            franky_sim, ("task.name=reach", "task.observation=image", "task.max_steps=30", "teleop.kind=keyboard")
        )
        env = RobotEnv(cfg, execute=True)
        try:
            operator = ReplayOperator(steps=15)
            result = collect(cfg, tmp_path / "demos", 1, env, operator, say=operator.say)
        finally:
            env.close()
        assert result.kept == 1 and result.steps == 15, result
        print(f"collect over franky-sim: {result.steps} steps in {result.wall_s:.1f} s")
        dataset = Dataset(tmp_path / "demos")
        assert len(dataset) == 1 and dataset.num_steps == 15
    finally:
        robot.connect()


@pytest.mark.slow
@pytest.mark.timeout(600, method="thread")
@pytest.mark.parametrize("fault", [REFLEX, USER_STOP])
def test_finetune_agent_over_franky_sim_survives_a_fault(
    franky_sim: str, robot: FrankaRobot, tmp_path: Path, fault: str
) -> None:
    """The fine-tuning agent (`finetune --robot franka --execute` with a policy server) over franky-sim: a reflex or
    a user stop in episode 1 -> pause, the scripted operator confirms, recover, home, next episode; the faulted
    episode is neither in the agent's store nor among the learner's episodes."""
    from inril_robot.bridge.agent import AgentOptions, RobotAgent
    from inril_robot.bridge.learning import ServerLearner
    from inril_robot.core.seeds import train_seed
    from inril_robot.data.store import Dataset
    from inril_robot.learning.pretrain import pretrain
    from inril_robot.runtime.env import RobotEnv
    from tests.test_bridge import FT, served
    from tests.test_pretrain import reach_cfg, record_demos

    proprio = ["task.observation=image"]  # no cameras: proprioception only, what franky-sim can observe
    demos = record_demos(tmp_path / "demos", "reach", 3, proprio)
    checkpoint = pretrain(
        reach_cfg(overrides=[*proprio, "train.steps=20", "train.eval_every=0"]), demos, tmp_path / "pre", resume=False
    ).last_checkpoint
    cfg = franka_cfg(
        franky_sim, ("task.name=reach", *proprio, "task.max_steps=6", *FT, "finetune.episodes_per_iteration=100")
    )
    learner = ServerLearner(cfg, Path(checkpoint), demos, tmp_path / "srv", mode="sync")
    confirmations: list[str] = []
    said: list[str] = []
    robot.close()
    try:
        with served(learner) as server:
            env = RobotEnv(cfg, execute=True)
            arm = env.robot
            assert isinstance(arm, FrankaRobot)
            real = arm.robot
            try:
                options = AgentOptions(server=server.endpoint, episodes=3, record=tmp_path / "store")
                agent = RobotAgent(cfg, env, options, prompt=confirmations.append, say=said.append)
                episode_step, box = agent.loop.step, [real]  # the box is emptied below: nothing keeps `real` open

                def step(*args: Any, **kwargs: Any) -> Any:  # the fault comes after 3 steps of episode 1
                    out = episode_step(*args, **kwargs)
                    episode = agent.result.episodes + agent.result.faulted_episodes
                    if episode == 1 and not kwargs.get("motion") and out.index == 2 and arm.robot is box[0]:
                        arm.robot = _FaultOnce(box[0], fault, after=1)
                    return out

                agent.loop.step = step  # type: ignore[method-assign]
                try:
                    result = agent.run()
                finally:
                    box.clear()
                pending = [t.seed for t in learner.pending]
            finally:
                arm.robot = real
                env.close()
                del real
    finally:
        robot.connect()
    assert result.stopped is None and result.faulted_episodes == 1 and result.episodes == 3, result
    # 4 reset phases (scene reset + start confirmed each: no teleop, the prompt) + 1 recovery
    assert sum("recover" in c for c in confirmations) == 1 and len(confirmations) == 9, confirmations
    assert any("PAUSED" in s and fault.split(": ")[-1] in s for s in said), said
    assert 1 not in pending and sorted(pending) == [0, 2, 3]
    store = Dataset(tmp_path / "store")
    assert sorted(e.meta["seed"] for e in store.episodes) == sorted(train_seed(cfg.seed, i) for i in (0, 2, 3))
