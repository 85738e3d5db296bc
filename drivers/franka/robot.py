"""`FrankaRobot`: the `Robot` interface over a real Franka (FR3 or Panda) through franky.

franky runs libfranka's 1 kHz control loop in its own thread; this driver only hands it a new target once per
control step and never blocks on a Cartesian motion:

- `apply(action)` accumulates the delta on the commanded reference (as the simulator driver does), clips it to the
  workspace box and sends an absolute `CartesianMotion` with ``asynchronous=True`` and
  ``return_when_finished=False``: the new motion takes over the running one seamlessly, and the arm keeps holding
  the last target until the next one arrives. Each motion carries a `Reaction` that replaces it with a
  `CartesianStopMotion` inside the 1 kHz loop once the estimated external force exceeds
  `SafetyLimits.max_contact_force`; after that the driver refuses motion until `home()`.
- The Franka Hand takes non-blocking commands: a gripper command above `GRIP_CLOSE` starts a grasp (with the
  configured force, any object width accepted), one below `GRIP_OPEN` opens; in between nothing changes
  (hysteresis, so a rate-limited command crossing 0.5 does not chatter).
- Reflex errors (libfranka `ControlException`s: joint/Cartesian reflexes, limit violations) are counted, kept in
  `errors`, and re-raised as `FrankaFault` on every later command until the caller calls `recover()`. Nothing is
  cleared silently.

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

from inril_robot.config import RobotConfig, SafetyLimits
from inril_robot.doctor import tcp_probe
from inril_robot.geometry import matrix_to_quat, rotvec_to_matrix
from inril_robot.hardware import Robot, RobotState

log = logging.getLogger(__name__)

FCI_PORT = 1337                # libfranka's TCP command port on the robot
REANCHOR_DISTANCE = 0.03       # [m] reference-to-measured gap beyond which the reference re-anchors (held back)
GRIP_CLOSE, GRIP_OPEN = 0.6, 0.4  # gripper command hysteresis band
STOP_TIMEOUT_S = 2.0
HOME_TIMEOUT_S = 120.0
PREEMPTED = "Move command preempted"  # libfranka's message when stop() or a new motion type ends a motion
FIX_NETWORK = ("check the Ethernet cable to the robot's control box (not the arm base), the robot IP in Desk "
               "(Settings -> Network), that FCI is activated in Desk and the brakes are open, then "
               "`inril-robot doctor --robot franka --host HOST`")


class FrankaFault(RuntimeError):
    """The arm reported a reflex/control error; motion is refused until `FrankaRobot.recover()` is called."""


@dataclass(frozen=True)
class FaultRecord:
    time: float         # host monotonic clock [s]
    message: str


def import_franky() -> Any:
    try:
        import franky
    except ImportError as e:
        raise ImportError(f"the Franka driver needs franky-control ({e}): pip install 'inril-robot[franka]'",
                          name="franky") from e
    return franky


class FrankaRobot(Robot):
    """A real Franka arm (+ Franka Hand) commanded in delta end-effector poses at `control_hz`, without blocking."""

    def __init__(self, robot_cfg: RobotConfig, safety: SafetyLimits) -> None:
        self.cfg = robot_cfg
        self.franka = robot_cfg.franka
        self.safety = safety
        self.robot: Any = None
        self.gripper: Any = None
        self.errors: list[FaultRecord] = []     # every reflex/control error seen, in order
        self.contact_stops = 0                  # force reactions that stopped the arm
        self._fault: str | None = None          # set on an error, cleared only by recover()
        self._stopped: str | None = None        # set by stop() and the force reaction, cleared by home()
        self._reaction_fired = threading.Event()  # set from franky's control thread
        self._ref: np.ndarray | None = None     # commanded reference pose, 4x4, base frame
        self._grip_target: str = "unknown"      # "open" | "closed" | "unknown"
        self._grip_future: Any = None

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
            raise ConnectionError(f"franky could not get real-time priority ({e}): run on a PREEMPT_RT kernel with "
                                  "rtprio/memlock limits (docs/hardware.md), or, for tests and simulators only, "
                                  "--set robot.franka.realtime=ignore") from e
        except franky.IncompatibleVersionException as e:
            raise ConnectionError(f"libfranka in franky-control does not match the robot's server version ({e}): "
                                  "install the franky-control release built for your robot firmware "
                                  "(`inril-robot doctor --robot franka` prints both)") from e
        except franky.Exception as e:
            raise ConnectionError(f"cannot connect to the Franka at {host} ({e}): {FIX_NETWORK}") from e
        if self.franka.gripper:
            try:
                self.gripper = franky.Gripper(host)
            except Exception as e:
                self.robot = None
                raise ConnectionError(f"cannot connect to the Franka Hand at {host} ({e}): check it is mounted and "
                                      "initialised in Desk, or set robot.franka.gripper=false") from e
        self._ref = self._measured_pose()

    def close(self) -> None:
        if self.robot is None:
            return
        try:
            self._halt()
        except Exception as e:  # closing after a lost connection must not mask the caller's own error
            log.warning("stopping the Franka on close failed: %s", e)
        if self._grip_future is not None and not self._grip_future.wait(STOP_TIMEOUT_S):
            log.warning("the Franka Hand was still moving when the driver closed")
        self._grip_future = None  # franky's future thread must not outlive the gripper it uses
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
        if np.linalg.norm(ref[:3, 3] - measured[:3, 3]) > REANCHOR_DISTANCE:
            ref = measured  # held back (contact, limits): do not wind the reference up
        target = np.eye(4)
        target[:3, 3] = np.clip(ref[:3, 3] + action[:3], self.safety.workspace_min, self.safety.workspace_max)
        target[:3, :3] = rotvec_to_matrix(action[3:6]) @ ref[:3, :3]
        self._ref = target
        self._move_cartesian(target)
        self._command_gripper(float(action[6]))

    def hold(self) -> None:
        """Zero motion: no new target; the running motion keeps holding the last one (or the arm is idle)."""
        self._check_ready(allow_stopped=True)

    def home(self) -> None:
        """Stop, move to `home_joints` by a joint motion at `home_dynamics_factor` (blocking), open the gripper."""
        franky = import_franky()
        self._check_ready(allow_stopped=True)
        self._halt()
        self._check_ready(allow_stopped=True)  # stopping may have surfaced an error
        motion = franky.JointMotion(np.asarray(self.cfg.home_joints, dtype=np.float64),
                                    relative_dynamics_factor=self.franka.home_dynamics_factor)
        try:
            self.robot.move(motion, asynchronous=True)
            finished = self.robot.join_motion(HOME_TIMEOUT_S)
        except Exception as e:  # ControlException (reflex), or the trajectory planner rejecting the target
            self._record_fault(e)
            raise FrankaFault(f"home() failed: {e}; {self._recover_hint()}") from e
        if not finished:
            self._halt()
            raise TimeoutError(f"home() did not finish within {HOME_TIMEOUT_S:.0f} s: the arm was stopped; check "
                               "robot.franka.home_dynamics_factor and the connection")
        if self.gripper is not None:
            self._grip_target = "unknown"
            self._command_gripper(0.0)
            self._wait_gripper(timeout=10.0)
        self._ref = self._measured_pose()
        self._stopped = None
        self._reaction_fired.clear()

    def stop(self) -> None:
        """Decelerate to rest now; `apply` refuses motion until `home()` (the gripper keeps its grasp)."""
        self._stopped = self._stopped or "stopped by stop()"
        if self.robot is not None:
            self._halt()

    def recover(self) -> None:
        """Clear a reflex/control error on the robot (the operator's explicit decision; never called implicitly)."""
        self._require_connected()
        if not self.robot.recover_from_errors():
            raise FrankaFault(f"automatic error recovery failed (last error: {self._fault}); check Desk for the "
                              "reason, release the external activation device, and try again")
        self._fault = None

    # ------------------------------------------------------------------------------------------------ state
    def state(self) -> RobotState:
        self._require_connected()
        s = self.robot.state  # one consistent snapshot of the 1 kHz state
        pose = np.asarray(s.O_T_EE.matrix)
        q, dq = np.asarray(s.q, dtype=np.float64), np.asarray(s.dq, dtype=np.float64)
        jacobian = np.asarray(self.robot.model.zero_jacobian(self._franky.Frame.EndEffector, s))  # (6, 7) lin; ang
        if s.robot_mode == self._franky.RobotMode.Reflex and self._fault is None:
            self._record_fault(f"robot in reflex mode: {s.last_motion_errors}")
        return RobotState(
            # libfranka's clock counts robot uptime (franky-sim does not advance it); the host's wall clock is the
            # domain of RealSense global timestamps, so robot states and camera frames can be lined up.
            time=time.time(),
            ee_pos=pose[:3, 3].copy(),
            ee_quat=matrix_to_quat(pose[:3, :3]),
            ee_vel=jacobian @ dq,
            joint_pos=q,
            joint_vel=dq,
            gripper_width=float(self.gripper.width) if self.gripper is not None else 0.0,
            ee_wrench=np.asarray(s.O_F_ext_hat_K, dtype=np.float64),
        )

    @property
    def commanded_pose(self) -> np.ndarray | None:
        """The reference the arm is driven to (4x4, base frame); re-anchored to the measured pose when held back."""
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

    def _require_connected(self) -> None:
        if self.robot is None:
            raise RuntimeError("FrankaRobot is not connected: call connect() (or use it as a context manager)")

    def _recover_hint(self) -> str:
        return "check the arm and its surroundings, then call recover() (errors are never cleared automatically)"

    def _record_fault(self, error: BaseException | str) -> None:
        message = str(error)
        self._fault = message
        self.errors.append(FaultRecord(time.monotonic(), message))
        log.error("Franka fault #%d: %s", len(self.errors), message)

    def _check_ready(self, allow_stopped: bool = False) -> None:
        """Surface an error raised in franky's control thread since the last command; refuse while faulted."""
        self._require_connected()
        try:
            self.robot.poll_motion()  # re-raises what ended the last motion in franky's thread
        except Exception as e:
            if PREEMPTED not in str(e):
                self._record_fault(e)
        if self._reaction_fired.is_set() and self._stopped is None:
            self._stopped = (f"contact force above max_contact_force {self.safety.max_contact_force} N: the force "
                             "reaction stopped the arm")
        if self._fault is not None:
            raise FrankaFault(f"the Franka reported an error: {self._fault}; {self._recover_hint()}")
        if self._stopped is not None and not allow_stopped:
            raise RuntimeError(f"robot is stopped ({self._stopped}); call home() before commanding it again")

    def _measured_pose(self) -> np.ndarray:
        return np.asarray(self.robot.current_pose.end_effector_pose.matrix, dtype=np.float64)

    def _force_reaction(self) -> Any:
        franky = self._franky
        fx, fy, fz = franky.Measure.FORCE_X, franky.Measure.FORCE_Y, franky.Measure.FORCE_Z
        limit = self.safety.max_contact_force
        # |F|^2 > limit * |limit|: the signed square keeps the comparison meaningful for any threshold (a zero or
        # negative one always stops, the only way to fire it against franky-sim, which reports no external force)
        reaction = franky.Reaction(fx * fx + fy * fy + fz * fz > limit * abs(limit), franky.CartesianStopMotion())
        reaction.register_callback(self._on_contact)
        return reaction

    def _on_contact(self, *_: Any) -> None:
        # runs in franky's control thread: only flag it; the next command surfaces it
        if not self._reaction_fired.is_set():
            self.contact_stops += 1
            self._reaction_fired.set()

    def _move_cartesian(self, target: np.ndarray) -> None:
        franky = self._franky
        motion = franky.CartesianMotion(franky.Affine(target), franky.ReferenceType.Absolute,
                                        relative_dynamics_factor=self.franka.relative_dynamics_factor,
                                        return_when_finished=False)
        motion.add_reaction(self._force_reaction())
        try:
            if self.robot.current_control_signal_type not in (None, franky.ControlSignalType.CartesianPose):
                self._halt()  # a joint motion (home) is still running: motion types cannot change in flight
            self.robot.move(motion, asynchronous=True)
        except Exception as e:
            self._record_fault(e)
            raise FrankaFault(f"the Franka rejected the motion: {e}; {self._recover_hint()}") from e

    def _halt(self) -> None:
        """Bring a running motion to rest within the arm's limits and wait for franky's loop to end."""
        franky = self._franky
        signal = self.robot.current_control_signal_type
        try:
            if signal == franky.ControlSignalType.CartesianPose:
                self.robot.move(franky.CartesianStopMotion(), asynchronous=True)
            elif signal == franky.ControlSignalType.JointPositions:
                self.robot.move(franky.JointStopMotion(), asynchronous=True)
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
        want = "closed" if command >= GRIP_CLOSE else "open" if command <= GRIP_OPEN else self._grip_target
        if want == self._grip_target:
            return
        # a new command supersedes a running move or grasp on the gripper server; the blocking Gripper.stop() is
        # not used here: it can wait on the running command, and apply() must never block
        speed, width = self.franka.gripper_speed, self.gripper.max_width
        if want == "closed":
            # width 0 with an outer tolerance of the full stroke: any object width counts as grasped
            self._grip_future = self.gripper.grasp_async(0.0, speed, self.franka.gripper_force, 0.0, width)
        else:
            self._grip_future = self.gripper.move_async(width, speed)
        self._grip_target = want

    def _wait_gripper(self, timeout: float) -> None:
        if self._grip_future is not None and not self._grip_future.wait(timeout):
            raise TimeoutError(f"the Franka Hand did not finish within {timeout} s: check it in Desk")
