"""Moving the robot through calibration poses and capturing a board view at each, through `RobotEnv.step`.

Every motion is a sequence of contract actions stepped by the control loop (`runtime.loop`, paced at the control
rate on a real arm) through `RobotEnv.step`, which applies the safety envelope
(workspace box, per-step and speed caps, tilt/yaw limits, joint margins, contact force): the planner only proposes.
Poses are planned inside the envelope's box and tilt limits, so the envelope should never have to clip them; a
pose the arm does not reach (within tolerance, in time) is skipped and reported rather than forced.

Pose pattern: the tool axis pivots about a point at `pivot_distance` along it (the board, for a wrist camera,
so that the board stays in view), tilting by up to `tilt` in directions spread around the circle (golden angle),
with alternating yaw, and small position offsets. Rotations about several axes are what hand-eye needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from inril_robot.calibration.solve import make_transform
from inril_robot.core.geometry import quat_to_matrix, rotvec_to_matrix
from inril_robot.core.safety import SafetyLimits
from inril_robot.hardware import RobotFault
from inril_robot.runtime.env import RobotEnv
from inril_robot.runtime.loop import ControlLoop
from inril_robot.vision.board import BoardError, BoardSpec, Detection, detect

GOLDEN_ANGLE = np.pi * (3.0 - np.sqrt(5.0))
SETTLE_STEPS = 3  # zero-motion steps before capturing: no motion blur, a state that matches the image


@dataclass(frozen=True)
class PosePlan:
    positions: list[np.ndarray]
    rotations: list[np.ndarray]


def plan_poses(
    home_pos: np.ndarray,
    home_rot: np.ndarray,
    count: int,
    safety: SafetyLimits,
    *,
    pivot_distance: float = 0.0,
    tilt: float = 0.35,
    yaw: float = 0.35,
    offset: float = 0.04,
    seed: int = 0,
) -> PosePlan:
    """`count` TCP poses around the home pose, inside the workspace box and the envelope's tilt and yaw limits."""
    rng = np.random.default_rng(seed)
    tilt = min(tilt, 0.9 * safety.max_tilt)
    yaw = min(yaw, 0.9 * safety.max_yaw)
    lo, hi = np.asarray(safety.workspace_min) + 0.01, np.asarray(safety.workspace_max) - 0.01
    pivot = home_pos + home_rot[:, 2] * pivot_distance
    positions, rotations = [], []
    for i in range(count):
        direction = GOLDEN_ANGLE * i
        tilt_i = tilt * (0.5 + 0.5 * ((i % 3) / 2))  # three tilt rings: 50%, 75%, 100%
        axis = np.array([np.cos(direction), np.sin(direction), 0.0])
        yaw_i = yaw * (1 if i % 2 else -1) * (0.3 + 0.7 * rng.random())
        # tilt about an axis in the tool's xy plane, then yaw about the (tilted) tool axis
        rot = home_rot @ rotvec_to_matrix(axis * tilt_i) @ rotvec_to_matrix(np.array([0.0, 0.0, yaw_i]))
        pos = pivot - rot[:, 2] * pivot_distance + rng.uniform(-offset, offset, 3) * np.array([1.0, 1.0, 0.5])
        positions.append(np.clip(pos, lo, hi))
        rotations.append(rot)
    return PosePlan(positions, rotations)


def calibration_loop(env: RobotEnv) -> ControlLoop:
    """The control loop that moves the arm between views: paced at the control rate on a real arm (each step is one
    control period of motion); the simulator integrates a period per step by itself, so it is not paced."""
    return ControlLoop(env, None, mode="policy", period=0.0 if env.cfg.robot.kind == "sim" else None)


@dataclass
class Capture:
    t_base_tcp: list[np.ndarray] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    pose_index: list[int] = field(default_factory=list)  # index in the plan of each kept view
    skipped: list[str] = field(default_factory=list)  # why planned poses gave no view


ProgressFn = Callable[[int, int, str], None]


def capture_views(
    env: RobotEnv,
    camera: str,
    spec: BoardSpec,
    plan: PosePlan,
    on_progress: ProgressFn | None = None,
    keep_images: bool = False,
    on_fault: Callable[[RobotFault], None] | None = None,
) -> Capture:
    """Visit each planned pose, settle, read the camera and the robot state, detect the board.

    An arm fault on the way calls `on_fault` (pause, the operator confirms, recover, home: `inril_robot.runtime.faults`)
    and the pose is tried once more from home; without `on_fault` it propagates."""
    cams = {c.name: c for c in env.cameras}
    if camera not in cams:
        raise ValueError(f"no camera named {camera!r} in this run; cameras: {', '.join(cams) or 'none'}")
    cam = cams[camera]
    out = Capture()
    total = len(plan.positions)
    loop = calibration_loop(env)
    loop.begin(*env.reset(seed=env.cfg.seed), "homed for calibration")
    for i, (pos, rot) in enumerate(zip(plan.positions, plan.rotations, strict=True)):
        for attempt in range(2):
            try:
                reached = loop.move_to(pos, rot, gripper=0.0)
                break
            except RobotFault as e:
                if on_fault is None or attempt == 1:
                    raise
                on_fault(e)  # the arm is home again
                loop.replace_obs(env.observe())  # the envelope works from the fresh state
        if not reached:
            out.skipped.append(f"pose {i}: not reached within tolerance (limits or joint range); skipped")
            if on_progress:
                on_progress(i + 1, total, "not reached")
            continue
        for _ in range(SETTLE_STEPS):
            loop.hold_step()
        state = loop.state
        frame = cam.read_latest(max_age_s=1.0)
        try:
            det = detect(frame.image, spec, what=f"image {i}")
        except BoardError as e:
            out.skipped.append(str(e))
            if on_progress:
                on_progress(i + 1, total, "board not detected")
            continue
        out.t_base_tcp.append(make_transform(quat_to_matrix(state.ee_quat), state.ee_pos))
        out.detections.append(det)
        out.pose_index.append(i)
        if keep_images:
            out.images.append(frame.image)
        if on_progress:
            on_progress(i + 1, total, f"{len(det.ids)} corners")
    return out
