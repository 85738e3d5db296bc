"""`SimRobot`: the `Robot` interface over the MuJoCo world, commanded exactly like the real arm."""

from __future__ import annotations

import numpy as np

from inril_robot.config import CameraConfig, RandomizationConfig, RobotConfig
from inril_robot.core.geometry import matrix_to_quat, rotvec_to_matrix
from inril_robot.core.safety import SafetyLimits
from inril_robot.core.state import RobotState
from inril_robot.drivers.sim.randomize import apply_randomization
from inril_robot.drivers.sim.world import SimWorld
from inril_robot.hardware import Robot
from inril_robot.hardware.scene import Objects, SceneObject

REANCHOR_DISTANCE = 0.03  # [m] reference-to-measured gap beyond which the commanded reference re-anchors


class SimRobot(Robot):
    """A simulated FR3. `apply` advances the physics by one control period (1 / control_hz)."""

    def __init__(
        self,
        cfg: RobotConfig,
        safety: SafetyLimits,
        objects: list[SceneObject] = (),  # type: ignore[assignment]
        cameras: list[CameraConfig] = (),  # type: ignore[assignment]
    ) -> None:
        self.cfg = cfg
        self.safety = safety
        self._objects = list(objects)
        self._cameras = list(cameras)
        self.world: SimWorld | None = None
        self._stopped = False
        self._ref_pos = np.zeros(3)
        self._ref_rot = np.eye(3)

    # --------------------------------------------------------------------------------------------- lifecycle
    def connect(self) -> None:
        if self.world is None:
            self.world = SimWorld(self.cfg, self._objects, self._cameras)

    def close(self) -> None:
        self.world = None

    @property
    def sim(self) -> SimWorld:
        if self.world is None:
            raise RuntimeError("SimRobot is not connected: call connect() (or use it as a context manager)")
        return self.world

    # ----------------------------------------------------------------------------------------------- control
    def home(self) -> None:
        self.sim.reset_arm()
        self._ref_pos, self._ref_rot = self.sim.tcp_pose()
        self._stopped = False

    def hold(self) -> None:
        w = self.sim
        w.command(w.data.ctrl[w.arm_act].copy(), self._current_gripper_command())
        w.step_control_period()

    @property
    def stopped(self) -> str | None:
        """Why the arm takes no commands (None: it does); `home()` clears it, as on the Franka driver."""
        return "stopped by stop()" if self._stopped else None

    def stop(self) -> None:
        w = self.sim
        w.command(w.data.qpos[w.arm_qpos].copy(), self._current_gripper_command())
        self._stopped = True

    def apply(self, action: np.ndarray) -> None:
        if self._stopped:
            raise RuntimeError("robot is stopped (e-stop); call home() before commanding it again")
        action = np.asarray(action, dtype=np.float64)
        w = self.sim
        pos, rot = w.tcp_pose()
        # Deltas accumulate on the commanded reference (as a Cartesian impedance controller's set-point does), so
        # servo lag does not turn into drift; when the arm is held back (contact) the reference re-anchors to the
        # measured pose instead of winding up.
        if np.linalg.norm(self._ref_pos - pos) > REANCHOR_DISTANCE:
            self._ref_pos, self._ref_rot = pos, rot
        target_pos = np.clip(self._ref_pos + action[:3], self.safety.workspace_min, self.safety.workspace_max)
        target_rot = rotvec_to_matrix(action[3:6]) @ self._ref_rot
        self._ref_pos, self._ref_rot = target_pos, target_rot
        w.command(w.solve_ik(target_pos, target_rot), float(action[6]))
        w.step_control_period()

    def _current_gripper_command(self) -> float:
        w = self.sim
        return 1.0 - float(w.data.ctrl[w.hand_act]) / 255.0

    # ------------------------------------------------------------------------------------------------ state
    def state(self) -> RobotState:
        w = self.sim
        d = w.data
        pos, rot = w.tcp_pose()
        return RobotState(
            time=float(d.time),
            ee_pos=pos,
            ee_quat=matrix_to_quat(rot),
            ee_vel=w.tcp_velocity(),
            joint_pos=d.qpos[w.arm_qpos].copy(),
            joint_vel=d.qvel[w.arm_dof].copy(),
            gripper_width=w.gripper_width(),
            ee_wrench=w.tcp_external_wrench(),
        )

    # ------------------------------------------------------------------------------------ sim-only scene access
    def set_objects(self, poses: Objects) -> None:
        self.sim.set_objects(poses)

    def object_poses(self) -> Objects:
        return self.sim.object_poses()

    def randomize(self, cfg: RandomizationConfig, rng: np.random.Generator) -> dict[str, float]:
        """Re-randomise the model (friction, masses, cameras, lights, colours, gains) from its nominal values."""
        sampled = apply_randomization(self.sim, cfg, rng)
        self.sim.generation += 1
        return sampled
