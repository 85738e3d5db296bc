"""THE control loop: every command that drives the arm steps it through here (collect, the robot agent, eval and
`sim run` through `rollout`, calibration capture, the reset phase between episodes).

One tick (`ControlLoop.step`):

1. pacing: wait for the scheduler's tick (`runtime.timing.Scheduler`: one rule everywhere; two actions are never
   closer than a period, a late tick is counted as an overrun and the schedule re-anchors: no catch-up steps);
2. the operator: read the teleop; an e-stop stops the arm and raises `EmergencyStop` from any tick or prompt; keep /
   discard is the operator's verdict, which ends the episode;
3. who acts (the `Authority` state machine): in ``human`` mode (collect) the teleop's command is the action; in
   ``takeover`` mode (agent, eval) the policy acts unless the operator *commands motion* with the intervention
   toggle on (a latched toggle with an idle teleop leaves the policy in control: idle keyboard steps are never
   recorded as zero-action demonstrations);
4. `RobotEnv.step` (the safety envelope, always) with per-stage timings;
5. the recording hook (`Recorder`: the episode store's step, or nothing).

Between ticks and during every prompt (`confirm`, `decide`), `heartbeat` is called at least every 0.25 s, so a
server never drops a robot that waits for its operator.

`move_to` steps the TCP to a pose at the envelope's caps, one tick per control period (calibration poses and the
randomised start pose of the reset phase).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from inril_robot.core.geometry import quat_to_matrix, rotation_error, rotvec_to_matrix
from inril_robot.core.state import RobotState
from inril_robot.hardware import EmergencyStop, Teleop, TeleopCommand
from inril_robot.hardware.teleop import command_to_action
from inril_robot.runtime.authority import Authority, Control
from inril_robot.runtime.env import GRIPPER_AT_HOME, RobotEnv
from inril_robot.runtime.timing import Scheduler, StageTimes

Mode = Literal["human", "takeover", "policy"]
HEARTBEAT_S = 0.25  # at most this long between heartbeats while the loop waits for the operator
POLL_S = 0.05  # how often a prompt reads the teleop
MOTION_EPS = 1e-9  # a teleop delta above this is a commanded motion
GRIPPER_EPS = 1e-3  # a gripper target this far from the executed command is a commanded gripper motion

#: a pose reached within these: calibration poses and the reset phase's start pose
POSITION_TOLERANCE = 0.002  # [m]
ROTATION_TOLERANCE = 0.01  # [rad]
INTEGRAL_GAIN = 0.2  # per step: move_to's integral of the measured error (reference-tracking drivers)
MAX_OFFSET, MAX_ROT_OFFSET = 0.01, 0.05  # [m], [rad] the most that integral may shift the reference


def commands_motion(command: TeleopCommand, gripper: float) -> bool:
    """Whether the operator moves the arm with this command: a translation or rotation, or a gripper target away from
    the executed gripper command (a latched target that was reached is not a motion)."""
    if (
        np.abs(command.delta_pos).max(initial=0.0) > MOTION_EPS
        or np.abs(command.delta_rot).max(initial=0.0) > MOTION_EPS
    ):
        return True
    return command.gripper is not None and abs(float(command.gripper) - gripper) > GRIPPER_EPS


@dataclass
class Step:
    """One executed control step (or, with `executed` None, a tick that ended on the operator's verdict)."""

    index: int  # control step of the episode
    obs: dict[str, np.ndarray]  # the observation the action was chosen on
    state: RobotState  # the robot state of `obs`
    captures: dict[str, float]  # capture times of the frames in `obs`
    command: TeleopCommand | None
    verdict: bool | None = None  # the operator's keep (True) / discard (False) on this tick
    proposed: np.ndarray | None = None
    executed: np.ndarray | None = None
    control: Control = "policy"
    intervention: bool = False  # the operator commanded this step's motion
    next_obs: dict[str, np.ndarray] = field(default_factory=dict)
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


class Recorder(Protocol):
    """The recording hook: what the loop calls after every executed step (an episode of the store, or nothing)."""

    def __call__(self, step: Step) -> None: ...


def store_recorder(episode: Any, shadow: bool = False) -> Recorder:
    """Record each step in an episode of the `DatasetWriter` (in shadow mode with control "none")."""

    def record(step: Step) -> None:
        episode.add_step(
            step.obs,
            step.proposed,
            step.executed,
            step.reward,
            step.done,
            "none" if shadow else step.control,
            intervention=step.intervention,
            wall_time=time.time(),
            state_time=step.state.time,
            capture_times=step.captures,
            robot_state=step.state,
        )

    return record


class ControlLoop:
    """One robot's control loop: pacing, stage timings, the operator's commands, authority, recording, e-stop.

    `mode`: ``human`` (the teleop's command is the action: collection; a scripted teleop's steps are stored as
    "scripted"), ``takeover`` (the policy acts; the operator takes over while commanding motion with the
    intervention toggle on, and keep/discard end the episode), ``policy`` (the teleop only stops the arm).
    `verdict_step`: a keep/discard executes one hold step that carries the verdict's reward (the agent sends it to the
    learner) instead of ending the episode without a step. `period` 0: unpaced (simulation as fast as it runs)."""

    def __init__(
        self,
        env: RobotEnv,
        teleop: Teleop | None = None,
        *,
        mode: Mode = "policy",
        period: float | None = None,
        label: str = "teleop",
        scripted: bool = False,
        verdict_step: bool = False,
        verdicts: bool | None = None,
        heartbeat: Callable[[], None] | None = None,
        prompt: Callable[[str], None] | None = None,
    ) -> None:
        self.env, self.teleop, self.mode, self.label = env, teleop, mode, label
        self.scripted = scripted
        self.verdict_step = verdict_step
        self.verdicts = (env.cfg.robot.kind != "sim" or mode == "human") if verdicts is None else verdicts
        self.heartbeat = heartbeat
        self.prompt = prompt  # the operator's confirmation without a teleop (default: Enter on stdin)
        self.period = 1.0 / env.cfg.robot.control_hz if period is None else period
        self.scheduler = Scheduler(self.period)
        self.times = StageTimes()
        self.ticks: deque[float] = deque(maxlen=200)
        self.authority = Authority(state="reset")
        self.interventions = 0  # steps whose motion the operator commanded, this episode
        self._last_beat = 0.0
        self._index = 0
        self._obs: dict[str, np.ndarray] = {}
        self._state: RobotState | None = None
        self._captures: dict[str, float] = {}
        self.gripper = GRIPPER_AT_HOME  # the last executed gripper command

    # ------------------------------------------------------------------------------------------- episodes
    def begin(self, obs: dict[str, np.ndarray], info: dict[str, Any], reason: str = "scene set") -> None:
        """Start an episode from the observation of a reset: a fresh authority record and schedule."""
        self.authority = Authority(state="reset")
        self.authority.reset_done(reason)
        if self.mode == "human":
            self.authority.intervene(f"{self.label} {'expert' if self.scripted else 'operator'} in control")
        self._index, self.interventions = 0, 0
        self._obs, self._state = obs, info["state"]
        self._captures = dict(self.env.last_capture_times)
        self.gripper = GRIPPER_AT_HOME
        self.scheduler.restart()

    def replace_obs(self, obs: dict[str, np.ndarray]) -> None:
        """A fresh observation between steps (after holding for stale frames or a reconnect)."""
        self._obs, self._state = obs, self.env.robot.state()
        self._captures = dict(self.env.last_capture_times)

    @property
    def obs(self) -> dict[str, np.ndarray]:
        return self._obs

    @property
    def state(self) -> RobotState:
        assert self._state is not None, "begin() the episode first"
        return self._state

    @property
    def hz(self) -> float:
        return self.scheduler.hz(self.ticks)

    # ---------------------------------------------------------------------------------------------- a tick
    def step(
        self,
        action: np.ndarray | None = None,
        record: Recorder | None = None,
        *,
        motion: bool = False,
        command: TeleopCommand | None = None,
    ) -> Step:
        """One paced tick: the operator, then `action` (the policy's; None in human mode) or the operator's, through
        the envelope; recorded by `record`. Raises `EmergencyStop` on the teleop's e-stop; `StaleFrameError` from
        the cameras propagates (the caller holds and re-reads). `motion`: a scripted motion (`move_to`, a hold)
        executes `action` whatever the mode; the teleop can only stop it. `command`: the teleop command of this tick
        when the caller has read it already (it is not read again)."""
        mode = "policy" if motion else self.mode
        self.scheduler.wait()
        self.ticks.append(time.monotonic())
        self.authority.step = self._index
        assert self._state is not None, "begin() the episode first"
        if command is None:
            command = self.read_operator(f"at step {self._index}")
        out = Step(self._index, self._obs, self._state, self._captures, command)
        if command is not None and self.verdicts and not motion and (command.keep or command.discard):
            out.verdict = bool(command.keep)
            if not self.verdict_step:
                return out
            action = np.array([0, 0, 0, 0, 0, 0, self.gripper], dtype=np.float64)  # a hold carries the verdict
            control: Control = "policy"
        elif mode == "human":
            if command is None:
                raise RuntimeError("a human-driven loop needs a teleop")
            action, control = command_to_action(command, self.gripper), "scripted" if self.scripted else "human"
            out.intervention = not self.scripted and commands_motion(command, self.gripper)
        else:
            if action is None:
                raise RuntimeError(f"a {mode} loop needs the policy's action at every step")
            control = "policy"
            takeover = mode == "takeover" and command is not None and command.intervene
            if takeover and commands_motion(command, self.gripper):  # type: ignore[arg-type]
                action, control, out.intervention = command_to_action(command, self.gripper), "human", True  # type: ignore[arg-type]
            if not motion:
                self._authority_follows(control)
        tick = time.perf_counter()
        next_obs, reward, terminated, truncated, info = self.env.step(action)
        self.scheduler.acted()
        self.times.add("step", time.perf_counter() - tick)
        if info.get("gripper_age_s") is not None:  # the gripper is read off the control path: its age shows here
            self.times.add("gripper_age", info["gripper_age_s"])
        if out.verdict is not None:
            reward, terminated, truncated = float(out.verdict), out.verdict, not out.verdict
            info["success"] = out.verdict
        out.proposed, out.executed, out.control = np.asarray(action, np.float64), info["executed_action"], control
        out.next_obs, out.reward, out.info = next_obs, reward, info
        out.terminated, out.truncated = terminated, truncated
        self.interventions += int(out.intervention)
        if record is not None:
            tick = time.perf_counter()
            record(out)
            self.times.add("record", time.perf_counter() - tick)
        self._obs, self._state, self.gripper = next_obs, info["state"], float(out.executed[6])
        self._captures = dict(self.env.last_capture_times)
        self._index += 1
        return out

    def _authority_follows(self, control: Control) -> None:
        if control == "human" and self.authority.state == "policy":
            self.authority.intervene("operator commands motion")
        elif control == "policy" and self.authority.state == "human":
            self.authority.release("operator idle")

    # -------------------------------------------------------------------------------------------- operator
    def read_operator(self, where: str = "") -> TeleopCommand | None:
        """The teleop's command (None without a teleop); an e-stop stops the arm and raises `EmergencyStop`."""
        if self.teleop is None:
            return None
        command = self.teleop.read()
        if command.estop:
            self.estop(f"e-stop from the {self.label} {where}".rstrip())
        return command

    def estop(self, why: str) -> None:
        self.authority.estop(why)
        self.env.robot.stop()
        raise EmergencyStop(why)

    def beat(self, force: bool = False) -> None:
        """Call the heartbeat hook if one is due."""
        now = time.monotonic()
        if self.heartbeat is not None and (force or now - self._last_beat >= HEARTBEAT_S):
            self._last_beat = now
            self.heartbeat()

    def confirm(self, say: Callable[[str], None], text: str) -> None:
        """Block until the operator's keep (heartbeats continue; e-stop raises)."""
        self.decide(say, text, keys=("keep",))

    def decide(self, say: Callable[[str], None], text: str, keys: tuple[str, ...] = ("keep", "discard")) -> bool:
        """Block until one of `keys` (keep -> True, discard -> False); without a teleop, `prompt` (or Enter) is keep."""
        self.beat(force=True)
        if self.teleop is None:
            (self.prompt or _enter)(text)
            return True
        say(f"{text} ({' / '.join(f'{k} key' for k in keys)})")
        while True:
            self.beat()
            command = self.read_operator("while waiting for the operator")
            assert command is not None
            if command.keep and "keep" in keys:
                return True
            if command.discard and "discard" in keys:
                return False
            time.sleep(POLL_S)

    def hold_step(self) -> Step:
        """One paced tick that keeps the arm where it is (gripper unchanged), not recorded."""
        return self.step(np.array([0, 0, 0, 0, 0, 0, self.gripper], dtype=np.float64), motion=True)

    # ---------------------------------------------------------------------------------------------- motions
    def move_to(self, pos: np.ndarray, rot: np.ndarray, max_steps: int = 200, gripper: float | None = None) -> bool:
        """Step the TCP towards the pose (pos, rot) at the envelope's per-step caps, one tick per control period;
        whether it was reached. The operator's e-stop is read at every tick.

        A driver that tracks a commanded reference (the Franka) gets steps that take the *reference* to the target
        shifted by an integral of the measured error (gain `INTEGRAL_GAIN` per step: it removes the compliant
        tracker's steady-state error); steps from the measured pose alone integrate on a reference the arm lags
        behind and oscillate around the target (measured on franky-sim)."""
        safety = self.env.cfg.safety
        grip = self.gripper if gripper is None else gripper
        offset, rot_offset = np.zeros(3), np.zeros(3)
        for _ in range(max_steps):
            assert self._state is not None
            state = self._state
            dpos = pos - state.ee_pos
            drot = rotation_error(rot, quat_to_matrix(state.ee_quat))
            if np.linalg.norm(dpos) < POSITION_TOLERANCE and np.linalg.norm(drot) < ROTATION_TOLERANCE:
                return True
            reference = getattr(self.env.robot, "commanded_pose", None)
            if reference is not None:
                if np.linalg.norm(pos + offset - reference[:3, 3]) < safety.max_step:  # arrived: no wind-up on the way
                    offset = _clip_norm(offset + INTEGRAL_GAIN * dpos, MAX_OFFSET)
                    rot_offset = _clip_norm(rot_offset + INTEGRAL_GAIN * drot, MAX_ROT_OFFSET)
                dpos = pos + offset - reference[:3, 3]
                drot = rotation_error(rotvec_to_matrix(rot_offset) @ rot, reference[:3, :3])
            dpos *= min(1.0, 0.9 * safety.max_step / max(np.linalg.norm(dpos), 1e-12))
            drot *= min(1.0, 0.9 * safety.max_rot_step / max(np.linalg.norm(drot), 1e-12))
            step = self.step(np.concatenate([dpos, drot, [grip]]), motion=True)
            self.beat()  # a long move (a retreat after a time-limit episode) must not read as a silent robot
            if step.info.get("stopped"):
                raise RuntimeError(f"the arm was stopped while moving to a pose: {step.info['stopped']}")
        return False


def _enter(text: str) -> None:
    input(f"{text} (Enter) ")


def _clip_norm(v: np.ndarray, cap: float) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v if norm <= cap else v * (cap / norm)
