"""`FrankaRobot`: the `Robot` interface over a real Franka (FR3 or Panda) through franky.

franky runs libfranka's 1 kHz control loop in its own thread; this driver only hands it a new target once per
control step and never blocks on the arm or the gripper:

- `apply(action)` moves the commanded reference by the executed delta and bounds it with the envelope's numbers
  (`safety.bound_reference`: workspace box, tilt/yaw, and at most `max_ref_gap` / `max_ref_rot_gap` from the
  measured pose), so the target the arm is told to reach is inside the envelope at every step.
- ``robot.franka.control: impedance`` (the preset) streams that reference into one franky
  `CartesianImpedanceTrackingMotion` (the real-time tracker): a compliant, critically damped spring whose stretch is
  clipped (`translational_error_clip`, `rotational_error_clip`), so a stream of deltas is one motion, not a series
  of stops. ``control: motion`` sends one absolute `CartesianMotion` per step (Ruckig, comes to rest at each
  target; the older behaviour, kept for comparison: `scripts/franka_tracking_bench.py`).
- `hold()` stops the arm now at its current pose: the reference is re-anchored on the measured pose (impedance: a
  joint-damping brake, then the tracker holds the pose; motion: a `CartesianStopMotion`).
- Each motion carries a `Reaction` that stops it inside the 1 kHz loop once the estimated external force exceeds
  `SafetyLimits.max_contact_force`; after that the driver refuses motion until `home()`.
- The Franka Hand runs in `GripperWorker` threads (commands with a deadline, width read off the control path);
  one above `GRIP_CLOSE` grasps (configured force, any object width accepted), one below `GRIP_OPEN` opens; in
  between nothing changes (hysteresis, so a rate-limited command crossing 0.5 does not chatter).
- Reflex errors (libfranka `ControlException`s: joint/Cartesian reflexes, limit violations, user stop), a gripper
  past its deadline and the arm found in reflex mode are counted, kept in `errors`, and re-raised as `FrankaFault`
  on every later command until the caller calls `recover()` (the operator's decision, `inril-robot robot recover`
  or the run's pause prompt). Nothing is cleared silently.

Frames and units match `drivers.sim.SimRobot`: positions of the TCP (Franka Hand fingertip centre, franky's end
effector frame) in the robot base frame, quaternions xyzw (converted here from franky's matrices), linear then
angular velocity, the estimated external wrench on the TCP in the base frame (libfranka's ``O_F_ext_hat_K`` with
the stiffness frame at the end effector, the default).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from inril_robot.config import RobotConfig
from inril_robot.core.geometry import matrix_to_quat
from inril_robot.core.net import tcp_probe
from inril_robot.core.safety import SafetyEvent, SafetyLimits, bound_reference
from inril_robot.core.state import RobotState
from inril_robot.drivers.franka.gripper import CLOSED, OPEN, GripperWorker
from inril_robot.drivers.franka.streaming import ReferenceStreamer
from inril_robot.hardware import Robot, RobotFault

log = logging.getLogger(__name__)

FCI_PORT = 1337  # libfranka's TCP command port on the robot
GRIP_CLOSE, GRIP_OPEN = 0.6, 0.4  # gripper command hysteresis band
STOP_TIMEOUT_S = 2.0
HOME_TIMEOUT_S = 120.0
HOME_GRIPPER_TIMEOUT_S = 10.0
HOLD_RAMP_S = 0.02  # [s] hold(): the tracker's torque blends into joint damping this fast
HOLD_DAMPING = (50.0, 50.0, 50.0, 20.0, 20.0, 20.0, 10.0)  # [Nms/rad] the joint impedance example of libfranka
HOLD_REST_SPEED = 0.01  # [m/s] hold(): slower than this the arm counts as at rest (held, not braked)
PREEMPTED = "Move command preempted"  # libfranka's message when stop() or a new motion type ends a motion
FIX_NETWORK = (
    "check the Ethernet cable to the robot's control box (not the arm base), the robot IP in Desk "
    "(Settings -> Network), that FCI is activated in Desk and the brakes are open, then "
    "`inril-robot doctor --robot franka --host HOST`"
)


class FrankaFault(RobotFault):
    """The arm reported a reflex/control error; motion is refused until `FrankaRobot.recover()` is called."""


@dataclass(frozen=True)
class FaultRecord:
    time: float  # host monotonic clock [s]
    message: str


def import_franky() -> Any:
    try:
        import franky
    except ImportError as e:
        raise ImportError(
            f"the Franka driver needs franky-control ({e}): pip install 'inril-robot[franka]'", name="franky"
        ) from e
    return franky


class FrankaRobot(Robot):
    """A real Franka arm (+ Franka Hand) commanded in delta end-effector poses at `control_hz`, without blocking."""

    def __init__(self, robot_cfg: RobotConfig, safety: SafetyLimits) -> None:
        self.cfg = robot_cfg
        self.franka = robot_cfg.franka
        self.safety = safety
        self.robot: Any = None
        self.gripper: GripperWorker | None = None
        self.errors: list[FaultRecord] = []  # every reflex/control error seen, in order
        self.contact_stops = 0  # force reactions that stopped the arm
        self.last_reference_events: tuple[SafetyEvent, ...] = ()  # what bounded the reference at the last apply
        self.gripper_width_age = 0.0  # [s] age of the width in the last state()
        self._fault: str | None = None  # set on an error, cleared only by recover()
        self._stopped: str | None = None  # set by stop() and the force reaction, cleared by home()
        self._reaction_fired = threading.Event()  # set from franky's control thread
        self._ref: np.ndarray | None = None  # commanded reference pose, 4x4, base frame
        self._tracking: Any = None  # the running CartesianImpedanceTrackingMotion (impedance control)
        self._streamer: ReferenceStreamer | None = None  # moves the tracker's target between steps (impedance)
        self._braked = False  # hold() braked a tracking arm: the next hold holds it stiffly
        self._grip_target: str = "unknown"  # "open" | "closed" | "unknown"

    # --------------------------------------------------------------------------------------------- lifecycle
    def connect(self) -> None:
        if self.robot is not None:
            return
        franky = import_franky()
        host = self.franka.host
        try:
            tcp_probe(host, FCI_PORT, self.franka.connect_timeout_s)
        except OSError as e:
            raise ConnectionError(f"cannot reach the Franka FCI at {host}:{FCI_PORT} ({e}): {FIX_NETWORK}") from e
        realtime = franky.RealtimeConfig.Enforce if self.franka.realtime == "enforce" else franky.RealtimeConfig.Ignore
        try:
            # The global factor stays 1: every motion names its own factor (config), which franky multiplies in.
            self.robot = franky.Robot(host, realtime_config=realtime)
        except franky.RealtimeException as e:
            raise ConnectionError(
                f"franky could not get real-time priority ({e}): run on a PREEMPT_RT kernel with "
                "rtprio/memlock limits (docs/hardware.md), or, for tests and simulators only, "
                "--set robot.franka.realtime=ignore"
            ) from e
        except franky.IncompatibleVersionException as e:
            raise ConnectionError(
                f"libfranka in franky-control does not match the robot's server version ({e}): "
                "install the franky-control release built for your robot firmware "
                "(`inril-robot doctor --robot franka` prints both)"
            ) from e
        except franky.Exception as e:
            raise ConnectionError(f"cannot connect to the Franka at {host} ({e}): {FIX_NETWORK}") from e
        if self.franka.gripper:
            try:
                self._connect_gripper()
            except Exception as e:
                self.robot = None
                raise ConnectionError(
                    f"cannot connect to the Franka Hand at {host} ({e}): check it is mounted and "
                    "initialised in Desk, or set robot.franka.gripper=false"
                ) from e
        self._ref = self._measured_pose()
        if self.franka.control == "impedance":
            self._streamer = ReferenceStreamer(self._robot_clock, self._send_tracking, self.franka.stream_hz)

    def close(self) -> None:
        if self.robot is None:
            return
        if self._streamer is not None:
            self._streamer.close()
            self._streamer = None
        try:
            self._halt()
        except Exception as e:  # closing after a lost connection must not mask the caller's own error
            log.warning("stopping the Franka on close failed: %s", e)
        if self.gripper is not None:
            if not self.gripper.wait_idle(STOP_TIMEOUT_S):
                log.warning("the Franka Hand was still moving when the driver closed")
            self.gripper.close()
        self.gripper = None
        self.robot = None

    def __del__(self) -> None:
        if getattr(self, "robot", None) is not None:
            self.close()

    # ----------------------------------------------------------------------------------------------- control
    def apply(self, action: np.ndarray) -> None:
        self._check_ready()
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (7,) or not np.all(np.isfinite(action)):
            raise ValueError(f"FrankaRobot.apply needs a finite 7-D delta-pose action, got {action!r}")
        measured = self._measured_pose()
        ref = self._ref if self._ref is not None else measured
        bounded = bound_reference(ref, measured, action[:6], self.safety)
        self._ref, self.last_reference_events = bounded.pose, bounded.events
        self._command(ref, bounded.pose)
        self._command_gripper(float(action[6]))

    def hold(self) -> None:
        """Stop the arm now at its current pose; call it every control period while holding (the watchdog does).

        Impedance: a moving arm is braked by franky's `TorqueStopMotion` (the tracker's torque blended into joint
        damping within `HOLD_RAMP_S`); an arm at rest, or one the brake has stopped, is held by the tracker at the
        measured pose. Motion: the running motion is replaced by a `CartesianStopMotion`. The reference is
        re-anchored on the measured pose either way."""
        self._check_ready(allow_stopped=True)
        self.last_reference_events = ()
        if self._stopped is not None:
            return  # already brought to rest by stop() or the force reaction
        self._ref = self._measured_pose()
        franky = self._franky
        if self._streamer is not None:
            self._streamer.stop()
        try:
            if self.franka.control == "impedance":
                tracking = self._tracking is not None and self.robot.is_in_control
                if tracking and self._tcp_speed() > HOLD_REST_SPEED:
                    self._tracking, self._braked = None, True
                    self.robot.move(
                        franky.TorqueStopMotion(damping=np.array(HOLD_DAMPING), ramp_duration=HOLD_RAMP_S),
                        asynchronous=True,
                    )
                elif tracking:
                    self._tracking.set_reference(franky.CartesianReference(target=franky.Affine(self._ref)))
                elif self._braked and not self.robot.is_in_control:
                    # at rest after the brake: held stiffly at the measured pose (an arm that was not tracking, e.g.
                    # in shadow mode or at home, is left to the robot's own idle hold: nothing is commanded)
                    self._braked = False
                    self._start_tracking()
            elif self.robot.current_control_signal_type == franky.ControlSignalType.CartesianPose:
                self.robot.move(franky.CartesianStopMotion(), asynchronous=True)
        except Exception as e:
            self._record_fault(e)
            raise FrankaFault(f"the Franka rejected the hold: {e}; {self._recover_hint()}") from e

    def home(self) -> None:
        """Stop, move to `home_joints` by a joint motion at `home_dynamics_factor` (blocking), open the gripper."""
        franky = import_franky()
        self._check_ready(allow_stopped=True)
        self._halt()
        self._check_ready(allow_stopped=True)  # stopping may have surfaced an error
        motion = franky.JointMotion(
            np.asarray(self.cfg.home_joints, dtype=np.float64),
            relative_dynamics_factor=self.franka.home_dynamics_factor,
        )
        try:
            self.robot.move(motion, asynchronous=True)
            finished = self.robot.join_motion(HOME_TIMEOUT_S)
        except Exception as e:  # ControlException (reflex), or the trajectory planner rejecting the target
            self._record_fault(e)
            raise FrankaFault(f"home() failed: {e}; {self._recover_hint()}") from e
        if not finished:
            self._halt()
            raise TimeoutError(
                f"home() did not finish within {HOME_TIMEOUT_S:.0f} s: the arm was stopped; check "
                "robot.franka.home_dynamics_factor and the connection"
            )
        if self.gripper is not None:
            self._grip_target = "unknown"
            self._command_gripper(0.0)
            if not self.gripper.wait_idle(HOME_GRIPPER_TIMEOUT_S):
                self._check_ready(allow_stopped=True)  # a gripper fault is raised as one
                raise TimeoutError(f"the Franka Hand did not open within {HOME_GRIPPER_TIMEOUT_S} s: check it in Desk")
        self._ref = self._measured_pose()
        self._stopped = None
        self._reaction_fired.clear()

    def stop(self) -> None:
        """Decelerate to rest now; `apply` refuses motion until `home()` (the gripper keeps its grasp)."""
        self._stopped = self._stopped or "stopped by stop()"
        if self.robot is not None:
            self._halt()

    def recover(self) -> None:
        """Clear a reflex/control error on the robot and a faulted gripper connection (the operator's explicit
        decision; never called implicitly). The arm stays where it is: `home()` next."""
        self._require_connected()
        if not self.robot.recover_from_errors():
            raise FrankaFault(
                f"automatic error recovery failed (last error: {self._fault}); check Desk for the "
                "reason, release the external activation device, and try again"
            )
        if self.gripper is not None and self.gripper.fault is not None:
            self.gripper.close(timeout=0.5)  # a thread stuck inside the old connection is left behind
            self.gripper = None
            self._connect_gripper()
        self._fault = None
        self._tracking = None
        self._ref = self._measured_pose()

    # ------------------------------------------------------------------------------------------------ state
    def state(self) -> RobotState:
        self._require_connected()
        s = self.robot.state  # one consistent snapshot of the 1 kHz state
        pose = np.asarray(s.O_T_EE.matrix)
        q, dq = np.asarray(s.q, dtype=np.float64), np.asarray(s.dq, dtype=np.float64)
        jacobian = np.asarray(self.robot.model.zero_jacobian(self._franky.Frame.EndEffector, s))  # (6, 7) lin; ang
        if s.robot_mode == self._franky.RobotMode.Reflex and self._fault is None:
            self._record_fault(f"robot in reflex mode: {s.last_motion_errors}")
        width = 0.0
        if self.gripper is not None:
            width, self.gripper_width_age = self.gripper.width()  # the reader thread's latest value, never a call
        return RobotState(
            # the host's wall clock is the domain of RealSense global timestamps, so robot states and camera frames
            # can be lined up (libfranka's clock counts robot uptime)
            time=time.time(),
            ee_pos=pose[:3, 3].copy(),
            ee_quat=matrix_to_quat(pose[:3, :3]),
            ee_vel=jacobian @ dq,
            joint_pos=q,
            joint_vel=dq,
            gripper_width=width,
            ee_wrench=np.asarray(s.O_F_ext_hat_K, dtype=np.float64),
        )

    def fault_state(self) -> dict[str, Any]:
        """What the arm and this driver report about faults (for `doctor` and the pause prompt)."""
        self._require_connected()
        s = self.robot.state
        gripper = self.gripper.check() if self.gripper is not None else None
        reflex = s.robot_mode == self._franky.RobotMode.Reflex
        return {
            "robot_mode": str(s.robot_mode).split(".")[-1],
            "in_reflex": reflex,
            "last_motion_errors": str(s.last_motion_errors),
            "driver_fault": self._fault,
            "gripper_fault": gripper,
            "stopped": self._stopped,
            "errors": len(self.errors),
        }

    @property
    def commanded_pose(self) -> np.ndarray | None:
        """The reference the arm is driven to (4x4, base frame); bounded by `safety.bound_reference`."""
        return None if self._ref is None else self._ref.copy()

    @property
    def fault(self) -> str | None:
        return self._fault

    @property
    def stopped(self) -> str | None:
        return self._stopped

    # ---------------------------------------------------------------------------------------------- helpers
    @property
    def _franky(self) -> Any:
        return import_franky()

    def _connect_gripper(self) -> None:
        self.gripper = GripperWorker(
            self._franky.Gripper(self.franka.host),
            speed=self.franka.gripper_speed,
            force=self.franka.gripper_force,
            deadline_s=self.franka.gripper_timeout_s,
            read_hz=self.franka.gripper_read_hz,
        )
        self._grip_target = "unknown"

    def _require_connected(self) -> None:
        if self.robot is None:
            raise RuntimeError("FrankaRobot is not connected: call connect() (or use it as a context manager)")

    def _recover_hint(self) -> str:
        return (
            "check the arm and its surroundings, then recover (`inril-robot robot recover`, or confirm at the "
            "run's prompt); errors are never cleared automatically"
        )

    def _record_fault(self, error: BaseException | str) -> None:
        message = str(error)
        self._fault = message
        self.errors.append(FaultRecord(time.monotonic(), message))
        log.error("Franka fault #%d: %s", len(self.errors), message)

    def _check_ready(self, allow_stopped: bool = False) -> None:
        """Surface an error raised in franky's control thread or the gripper's since the last command; refuse while
        faulted."""
        self._require_connected()
        try:
            self.robot.poll_motion()  # re-raises what ended the last motion in franky's thread
        except Exception as e:
            if PREEMPTED not in str(e):
                self._record_fault(e)
        if self._fault is None and self.gripper is not None and self.gripper.check() is not None:
            self._record_fault(self.gripper.fault or "gripper fault")
        if self._reaction_fired.is_set() and self._stopped is None:
            self._stopped = (
                f"contact force above max_contact_force {self.safety.max_contact_force} N: the force "
                "reaction stopped the arm"
            )
        if self._fault is not None:
            raise FrankaFault(f"the Franka reported an error: {self._fault}; {self._recover_hint()}")
        if self._stopped is not None and not allow_stopped:
            raise RuntimeError(f"robot is stopped ({self._stopped}); call home() before commanding it again")

    def _robot_clock(self) -> float:
        t = self.robot.state.time
        return t.to_sec() if hasattr(t, "to_sec") else float(t) / 1e3

    def _send_tracking(self, pose: np.ndarray, twist: np.ndarray) -> None:
        """The streamer's target for the running tracker (none running: nothing to send)."""
        franky, motion = self._franky, self._tracking
        if motion is not None:
            motion.set_reference(
                franky.CartesianReference(target=franky.Affine(pose), target_twist=franky.Twist(twist[:3], twist[3:]))
            )

    def _tcp_speed(self) -> float:
        s = self.robot.state
        jacobian = np.asarray(self.robot.model.zero_jacobian(self._franky.Frame.EndEffector, s))
        v = jacobian @ np.asarray(s.dq, dtype=np.float64)
        return float(max(np.linalg.norm(v[:3]), 0.1 * np.linalg.norm(v[3:])))  # 0.1 m lever for rotation

    def _measured_pose(self) -> np.ndarray:
        return np.asarray(self.robot.current_pose.end_effector_pose.matrix, dtype=np.float64)

    def _force_reaction(self, stop_motion: Any) -> Any:
        franky = self._franky
        fx, fy, fz = franky.Measure.FORCE_X, franky.Measure.FORCE_Y, franky.Measure.FORCE_Z
        limit = self.safety.max_contact_force
        # |F|^2 > limit * |limit|: the signed square keeps the comparison meaningful for any threshold (a zero or
        # negative one always stops, the only way to fire it against franky-sim, which reports no external force)
        reaction = franky.Reaction(fx * fx + fy * fy + fz * fz > limit * abs(limit), stop_motion)
        reaction.register_callback(self._on_contact)
        return reaction

    def _on_contact(self, *_: Any) -> None:
        # runs in franky's control thread: only flag it; the next command surfaces it
        if not self._reaction_fired.is_set():
            self.contact_stops += 1
            self._reaction_fired.set()

    def _command(self, start: np.ndarray, target: np.ndarray) -> None:
        """Send the new reference. Impedance: the streamer ramps the tracker's target from `start` (or where it is)
        to `target` over one control period, with that ramp's velocity as feedforward twist (the damping then acts
        on the velocity error, not on the velocity itself)."""
        franky = self._franky
        try:
            if self.franka.control == "impedance":
                if self._tracking is None or not self.robot.is_in_control:
                    self._start_tracking()
                assert self._streamer is not None
                self._streamer.ramp(start, target, 1.0 / self.cfg.control_hz)
                return
            motion = franky.CartesianMotion(
                franky.Affine(target),
                franky.ReferenceType.Absolute,
                relative_dynamics_factor=self.franka.relative_dynamics_factor,
                return_when_finished=False,
            )
            motion.add_reaction(self._force_reaction(franky.CartesianStopMotion()))
            if self.robot.current_control_signal_type not in (None, franky.ControlSignalType.CartesianPose):
                self._halt()  # a joint motion (home) is still running: motion types cannot change in flight
            self.robot.move(motion, asynchronous=True)
        except Exception as e:
            self._record_fault(e)
            raise FrankaFault(f"the Franka rejected the motion: {e}; {self._recover_hint()}") from e

    def _start_tracking(self) -> None:
        """One compliant tracking motion, seeded at the measured pose, that every later step only retargets."""
        franky = self._franky
        if self.robot.is_in_control:
            self._halt()  # a joint or stop motion still running: motion types cannot change in flight
        f = self.franka
        motion = franky.CartesianImpedanceTrackingMotion(
            translational_stiffness=f.translational_stiffness,
            rotational_stiffness=f.rotational_stiffness,
            translational_error_clip=np.full(3, f.translational_error_clip),
            rotational_error_clip=np.full(3, f.rotational_error_clip),
        )
        motion.set_reference(franky.CartesianReference(target=franky.Affine(self._measured_pose())))
        motion.add_reaction(self._force_reaction(franky.TorqueStopMotion()))
        self.robot.move(motion, asynchronous=True)
        self._tracking, self._braked = motion, False

    def _halt(self) -> None:
        """Bring a running motion to rest within the arm's limits and wait for franky's loop to end."""
        franky = self._franky
        signal = self.robot.current_control_signal_type
        if self._streamer is not None:
            self._streamer.stop()
        self._tracking, self._braked = None, False
        try:
            if signal == franky.ControlSignalType.CartesianPose:
                self.robot.move(franky.CartesianStopMotion(), asynchronous=True)
            elif signal == franky.ControlSignalType.JointPositions:
                self.robot.move(franky.JointStopMotion(), asynchronous=True)
            elif signal == franky.ControlSignalType.Torques:
                self.robot.move(franky.TorqueStopMotion(), asynchronous=True)
            elif signal is not None:
                self.robot.stop()
            self.robot.join_motion(STOP_TIMEOUT_S)
        except Exception as e:
            if PREEMPTED not in str(e):
                self._record_fault(e)
        if self.robot.is_in_control:  # the stop motion did not end in time: abort it
            self.robot.stop()
            try:
                self.robot.join_motion(STOP_TIMEOUT_S)
            except Exception as e:
                if PREEMPTED not in str(e):
                    self._record_fault(e)

    def _command_gripper(self, command: float) -> None:
        if self.gripper is None:
            return
        want = CLOSED if command >= GRIP_CLOSE else OPEN if command <= GRIP_OPEN else self._grip_target
        if want != self._grip_target:
            self.gripper.command(want)  # queued for the worker thread: never waits on the gripper server
            self._grip_target = want
