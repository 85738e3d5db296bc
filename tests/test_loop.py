"""The one control loop (`runtime.loop`) and the reset phase (`runtime.resets`), against the MuJoCo robot and
the real keyboard teleop on a pseudo-terminal (keys go through the terminal, the parser and the latched toggles)."""

from __future__ import annotations

import os
import pty
import time
from pathlib import Path

import numpy as np
import pytest

from inril_robot.config import TeleopConfig, load_config
from inril_robot.core.geometry import quat_to_matrix
from inril_robot.data.store import Dataset
from inril_robot.drivers.keyboard import KeyboardTeleop
from inril_robot.hardware import Teleop, TeleopCommand
from inril_robot.runtime.collect import collect
from inril_robot.runtime.env import RobotEnv
from inril_robot.runtime.loop import ControlLoop
from inril_robot.runtime.timing import Scheduler

KEYS = TeleopConfig(kind="keyboard", translation_step=0.01)


@pytest.mark.timeout(60)
def test_a_slow_step_is_counted_and_never_followed_by_catch_up_steps() -> None:
    """A step whose work before its action takes 3.5 periods (a slow operator read): the old rule (re-anchor on the
    late tick, go at once) ran the next action right after it; now every two actions are a period apart (less the
    jitter tolerance), the overrun is counted once and the rate continues."""
    period = 0.05
    clock = Scheduler(period)
    actions = []
    for i in range(12):
        clock.wait()
        if i == 4:
            time.sleep(3.5 * period)  # slow work inside the tick, before the action
        actions.append(time.monotonic())
        clock.acted()
    gaps = np.diff(actions)
    # a busy machine can only make gaps longer (more overruns), never shorter: the lower bounds are exact
    assert clock.overruns >= 1
    assert clock.late_max >= 2.4 * period  # the late tick's lateness is kept for the episode's log
    clock.reset_peak()
    assert clock.late_max == 0.0
    assert gaps[3] >= 3.5 * period
    assert all(g >= 0.8 * period for g in gaps), gaps.round(3)  # >= period - tolerance, less clock jitter
    assert np.median(np.delete(gaps, 3)) <= 1.6 * period, gaps.round(3)  # and the rate continues after it


class _SlowRead(Teleop):
    def __init__(self, slow_at: int, seconds: float) -> None:
        self.reads, self.slow_at, self.seconds = 0, slow_at, seconds

    def read(self) -> TeleopCommand:
        self.reads += 1
        if self.reads == self.slow_at:
            time.sleep(self.seconds)
        return TeleopCommand()


@pytest.mark.timeout(120)
def test_the_reset_phase_starts_a_new_schedule_and_counts_no_overrun() -> None:
    """The episode's end (sending, storing) and the unpaced motions of a reset (home, the scene reset) take longer
    than a period; the reset phase's first paced tick is not a late control tick (it counted as an overrun between
    every few episodes on the bridge, with no learner running), and it still keeps a period after the last action."""
    from inril_robot.runtime.resets import ResetPhase

    cfg = load_config(robot="sim", task="reach", overrides=["robot.control_hz=20"])
    with RobotEnv(cfg) as env:
        loop = ControlLoop(env, None, mode="policy")
        resets = ResetPhase(loop, operator=False)
        loop.begin(*resets.run(seed=0, index=0))
        for _ in range(3):
            loop.step(np.zeros(7))
        last_action = time.monotonic()
        time.sleep(0.3)  # the episode's end: six periods of bookkeeping
        loop.begin(*resets.run(seed=1, index=1))
        first = loop.step(np.zeros(7))
    assert loop.scheduler.overruns == 0, [s["stage"] for s in resets.log]
    assert first is not None and time.monotonic() - last_action >= 0.3


@pytest.mark.timeout(120)
def test_a_long_move_keeps_the_heartbeat() -> None:
    """A reset's move (the retreat after a time-limit episode, the start pose) takes seconds of paced ticks; without
    heartbeats in it the policy server dropped the robot as silent (5 s) between two episodes."""
    from inril_robot.runtime.loop import HEARTBEAT_S

    cfg = load_config(robot="sim", task="reach", overrides=["robot.control_hz=20"])  # ~30 ticks: 1.5 s
    beats: list[float] = []
    with RobotEnv(cfg) as env:
        loop = ControlLoop(env, None, mode="policy", heartbeat=lambda: beats.append(time.monotonic()))
        loop.begin(*env.reset(seed=0))
        start = time.monotonic()
        home, rot = loop.state.ee_pos.copy(), quat_to_matrix(loop.state.ee_quat)
        for i in range(8):  # up and down again: moves of paced ticks for well over a second in all
            loop.move_to(home + np.array([0.0, 0.0, 0.1 * ((i + 1) % 2)]), rot, max_steps=60)
        elapsed = time.monotonic() - start
    assert elapsed > 4 * HEARTBEAT_S
    gaps = np.diff([start, *beats, time.monotonic()])
    assert gaps.max() < 2 * HEARTBEAT_S + 0.1, gaps.round(2)


@pytest.mark.timeout(120)
def test_the_loop_keeps_a_period_between_actions_after_slow_inference_or_a_slow_read() -> None:
    cfg = load_config(robot="sim", task="reach", overrides=["robot.control_hz=20"])
    with RobotEnv(cfg) as env:
        loop = ControlLoop(env, _SlowRead(slow_at=7, seconds=0.15), mode="policy")
        loop.begin(*env.reset(seed=0))
        acted: list[float] = []
        for i in range(12):
            if i == 3:
                time.sleep(0.15)  # a slow inference before the tick: three periods
            loop.step(np.zeros(7), record=lambda step: acted.append(time.monotonic()))
    gaps = np.diff(acted)
    assert loop.scheduler.overruns >= 2 and all(g >= 0.8 * 0.05 for g in gaps), gaps.round(3)
    assert set(loop.times.summary()) >= {"step", "record"}


class _PtyKeyboard(Teleop):
    """The keyboard teleop on a pty whose keys a script types, one group per read, as a function of the phase the
    loop announced (`say`): the keys reach the teleop through the terminal, exactly as an operator's would."""

    def __init__(self, script: dict[str, list[bytes]]) -> None:
        self.master, slave = pty.openpty()
        self.keyboard = KeyboardTeleop(KEYS, fd=slave)
        self.slave = slave
        self.script = {k: list(v) for k, v in script.items()}
        self.phase = "idle"
        self.said: list[str] = []
        self.typed: list[tuple[str, bytes]] = []

    def say(self, text: str) -> None:
        self.said.append(text)
        if "reset the scene" in text:
            self.phase = "operator"
        elif "confirm to start" in text:
            self.phase = "confirm"

    def read(self) -> TeleopCommand:
        keys = self.script[self.phase].pop(0) if self.script.get(self.phase) else b""
        if keys:
            os.write(self.master, keys)
            time.sleep(0.01)
        self.typed.append((self.phase, keys))
        command = self.keyboard.read()
        if command.keep and self.phase in ("operator", "confirm"):
            self.phase = "episode" if self.phase == "confirm" else "between"
        elif (command.keep or command.discard) and self.phase == "episode":
            self.phase = "between"
        return command

    def close(self) -> None:
        self.keyboard.close()
        os.close(self.master)
        os.close(self.slave)


@pytest.mark.timeout(180)
def test_reset_phase_through_a_pty_opens_retreats_lets_the_operator_move_then_starts_randomised(
    tmp_path: Path,
) -> None:
    """collect, two episodes, an operator at a keyboard (a pty): between the episodes the gripper opens, the arm
    retreats upwards and homes, the operator moves it with the keys while resetting the scene, the arm goes to a
    randomised start pose, and the operator confirms. Idle keyboard steps are not marked as interventions."""
    cfg = load_config(
        robot="sim",
        task="lift",
        overrides=[
            "teleop.kind=keyboard",
            "teleop.translation_step=0.01",
            "task.max_steps=40",
            "task.reset.retreat_height=0.05",
            "task.reset.start_xyz=[0.03,0.03,0.0]",
            "task.reset.start_yaw=0.2",
        ],
    )
    episode_keys = [b"f", b"", b"f", b"", b" ", b"", b"", b"k"]  # down, idle, down, idle, close, idle, idle, keep
    operator = _PtyKeyboard(
        {
            "operator": [b"w", b"", b"a", b"k"],  # the operator moves the arm while resetting the scene, then done
            "confirm": [b"", b"k"],
            "episode": episode_keys,
        }
    )

    def refill(status: object) -> None:  # each episode gets the same keys
        if operator.phase == "between" and not operator.script["episode"]:
            operator.script.update(operator=[b"w", b"", b"a", b"k"], confirm=[b"", b"k"], episode=list(episode_keys))

    with RobotEnv(cfg) as env:
        try:
            result = collect(
                cfg,
                tmp_path / "demos",
                2,
                env,
                operator,
                say=operator.say,
                pace=False,
                operator_resets=True,
                on_update=refill,
            )
        finally:
            operator.close()
    assert result.kept == 2 and result.stopped is None, result
    dataset = Dataset(tmp_path / "demos")
    first, second = (e.meta for e in dataset.episodes)
    assert [s["stage"] for s in first["reset"]] == ["operator", "home", "start", "confirm"]
    stages = [s["stage"] for s in second["reset"]]
    assert stages == ["open", "retreat", "operator", "home", "start", "confirm"], stages
    log = {s["stage"]: s for s in second["reset"]}
    assert log["open"]["gripper_from"] == pytest.approx(1.0) and log["open"]["gripper_to"] == 0.0
    assert log["retreat"]["z_to"] > log["retreat"]["z_from"] + 0.015  # rose from the lowered grasp pose
    assert log["operator"]["moved_steps"] == 2  # the two movement keys moved the arm during the scene reset
    offset = np.asarray(log["start"]["offset"])
    assert log["start"]["reached"] and np.all(np.abs(offset) <= [0.03, 0.03, 0.0]) and np.abs(offset).max() > 1e-4
    assert abs(log["start"]["yaw"]) <= 0.2
    # the episode starts at the randomised pose: home + the offset
    first_pos = dataset.episodes[1].load("obs/ee_pos")[0]
    assert np.allclose(first_pos, np.asarray(log["home"]["pos"]) + offset, atol=0.004)
    # idle key reads are recorded as the operator's steps but never as interventions; the key presses are
    flags = dataset.episodes[1].load("intervention").astype(bool)
    executed = dataset.episodes[1].load("action/executed")
    moving = (np.abs(executed[:, :6]).max(axis=1) > 0) | (np.abs(np.diff(executed[:, 6], prepend=0.0)) > 0)
    assert len(flags) == 7 and flags.sum() == moving.sum() and (flags == moving).all(), (flags, executed)
    assert not flags[1] and not flags[3]  # the idle reads between the key presses
    assert any("confirm to start" in s for s in operator.said)


class _Scripted(Teleop):
    def __init__(self, commands: list[TeleopCommand]) -> None:
        self.commands = commands

    def read(self) -> TeleopCommand:
        return self.commands.pop(0) if self.commands else TeleopCommand()


@pytest.mark.timeout(60)
def test_latched_intervention_with_an_idle_teleop_leaves_the_policy_in_control() -> None:
    """The robot agent's mode: with the toggle on, only steps where the operator commands motion are the human's;
    the idle steps execute the policy's action and are not interventions (no zero-action demonstrations)."""
    cfg = load_config(robot="sim", task="reach")
    on = {"intervene": True}
    teleop = _Scripted(
        [
            TeleopCommand(delta_pos=np.array([0.01, 0, 0]), **on),
            TeleopCommand(**on),  # latched, idle
            TeleopCommand(**on),
            TeleopCommand(delta_pos=np.array([0, 0.01, 0]), **on),
            TeleopCommand(),  # toggle off
        ]
    )
    policy = np.array([0.0, 0.0, -0.005, 0, 0, 0, 0])
    with RobotEnv(cfg) as env:
        loop = ControlLoop(env, teleop, mode="takeover", period=0.0)
        loop.begin(*env.reset(seed=0))
        steps = [loop.step(policy) for _ in range(5)]
    assert [s.control for s in steps] == ["human", "policy", "policy", "human", "policy"]
    assert [s.intervention for s in steps] == [True, False, False, True, False] and loop.interventions == 2
    assert np.allclose(steps[1].executed[:3], policy[:3]) and np.allclose(steps[0].executed[:3], [0.01, 0, 0])
    events = [t.event for t in loop.authority.transitions]
    assert events == ["reset_done", "intervene", "release", "intervene", "release"]


@pytest.mark.timeout(90)
def test_reset_after_a_contact_stop_homes_the_stopped_arm_instead_of_commanding_it() -> None:
    """A contact-force stop ends the episode with the arm stopped: the next reset cannot open or retreat through
    motion commands (the arm refuses them); it recovers (homes) and the next episode starts from home."""
    from inril_robot.runtime.resets import ResetPhase

    # a tightened force limit (never loosened) makes the scripted lift grasp trip the stop within a few steps
    cfg = load_config(robot="sim", task="lift", overrides=["safety.max_contact_force=2.0"])
    with RobotEnv(cfg) as env:
        loop = ControlLoop(env, None, mode="policy", period=0.0)
        resets = ResetPhase(loop, operator=False)
        loop.begin(*resets.run(seed=0, index=0))
        for _ in range(cfg.task.max_steps):
            step = loop.step(env.expert_action())
            if step.done:
                break
        assert env.stopped is not None and "contact force" in env.stopped
        obs, info = resets.run(seed=1, index=1)
        assert [s["stage"] for s in resets.log][:3] == ["recover", "operator", "home"]
        assert env.stopped is None and info["state"].gripper_width > 0.07  # homed, gripper open
        loop.begin(obs, info)
        assert loop.step(env.expert_action()).executed is not None  # the arm takes commands again
