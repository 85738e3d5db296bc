"""`inril-robot calibrate intrinsics|hand-eye`: move, capture, solve, write the calibration file.

A static camera (``mount: world``) is calibrated eye-to-hand with the board carried by the hand; a wrist camera
eye-in-hand with the board fixed on the table under the home pose. In simulation the scene gets the board
(``robot.sim.calibration_board``) and the report adds the error against the simulator's ground truth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from inril_robot.calibration.capture import ProgressFn, capture_views, plan_poses
from inril_robot.calibration.solve import CalibrationError, calibrate_intrinsics, pose_error, solve_hand_eye
from inril_robot.config import CameraConfig, RunConfig
from inril_robot.core.geometry import quat_to_matrix
from inril_robot.hardware.calibration_file import (
    CalibrationFile,
    Extrinsics,
    Intrinsics,
    PoseResidual,
    Residuals,
    Uncertainty,
    load_calibration,
    save_calibration,
)
from inril_robot.vision.board import BoardSpec

WRIST_PIVOT = 0.30  # [m] a wrist camera's poses pivot about the board, this far below the home TCP
# Tool tilt of the poses [rad] (capped by the envelope). A static camera sees a small board from afar, where focal
# length and distance trade off (weak perspective): strong tilts are what pin fx down (sim: 0.8% fx error at 0.35 rad,
# under 0.2% at 0.6). A wrist camera pivoting about the board keeps it in view only at moderate tilts.
TILT = {"eye_to_hand": 0.6, "eye_in_hand": 0.35}
MIN_CAPTURE_HEIGHT = 480  # sim: render calibration views at least this tall (corners need pixels)


@dataclass
class CalibrationRun:
    path: str
    calibration: CalibrationFile
    views: int
    skipped: list[str]
    truth_error: dict[str, float] | None = None  # simulation only
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "views": self.views,
            "skipped": self.skipped,
            "truth_error": self.truth_error,
            "calibration": self.calibration.model_dump(mode="json"),
            "notes": self.notes,
        }


def calibration_config(cfg: RunConfig, camera: str, spec: BoardSpec) -> tuple[RunConfig, CameraConfig]:
    """The run's config for calibrating `camera`: that camera only (at calibration resolution in sim), the reach
    task (no object on the table), and in sim the board in the scene where this camera's calibration needs it."""
    cams = {c.name: c for c in cfg.cameras}
    if camera not in cams:
        raise CalibrationError(
            f"no camera named {camera!r} in the configuration; cameras: "
            f"{', '.join(cams) or 'none'} (pick a preset with --cameras)"
        )
    cam = cams[camera]
    if cam.calibration is not None:
        cam = cam.model_copy(update={"calibration": None})  # calibrate the configured placement, not a previous fit
    if cfg.robot.kind == "sim" and cam.height < MIN_CAPTURE_HEIGHT:
        scale = MIN_CAPTURE_HEIGHT / cam.height
        cam = cam.model_copy(update={"width": round(cam.width * scale), "height": MIN_CAPTURE_HEIGHT})
    robot = cfg.robot
    if robot.kind == "sim":
        board = robot.sim.calibration_board.model_copy(
            update={
                "mount": "world" if cam.mount == "wrist" else "hand",
                "squares_x": spec.squares_x,
                "squares_y": spec.squares_y,
                "square_length": spec.square_length,
                "marker_length": spec.marker_length,
                "dictionary": spec.dictionary,
            }
        )
        robot = robot.model_copy(update={"sim": robot.sim.model_copy(update={"calibration_board": board})})
    task = cfg.task.model_copy(update={"name": "reach", "observation": "state"})
    return cfg.model_copy(update={"cameras": [cam], "robot": robot, "task": task}), cam


def run_calibration(
    cfg: RunConfig,
    camera: str,
    kind: Literal["intrinsics", "hand-eye"],
    out: Path,
    *,
    spec: BoardSpec,
    poses: int = 12,
    intrinsics: str = "device",
    method: str = "auto",
    execute: bool = False,
    on_progress: ProgressFn | None = None,
    on_stage: Callable[[str], None] | None = None,
    confirm: Callable[[str], None] | None = None,
) -> CalibrationRun:
    """`confirm(text)` blocks until the operator confirms the arm's recovery after a fault (None: a fault ends the
    run)."""
    from inril_robot.runtime.env import RobotEnv
    from inril_robot.runtime.faults import pause_and_recover

    say = on_stage or (lambda _: None)
    run_cfg, cam_cfg = calibration_config(cfg, camera, spec)
    mode = "eye_in_hand" if cam_cfg.mount == "wrist" else "eye_to_hand"
    if kind == "hand-eye" and intrinsics not in ("device", "charuco") and not Path(intrinsics).is_file():
        raise CalibrationError(f"--intrinsics must be device, charuco or a calibration file; {intrinsics!r} is none")
    with RobotEnv(run_cfg, execute=execute) as env:
        _, info = env.reset(seed=run_cfg.seed)
        home = info["state"]
        plan = plan_poses(
            home.ee_pos,
            quat_to_matrix(home.ee_quat),
            poses,
            run_cfg.safety,
            pivot_distance=WRIST_PIVOT if mode == "eye_in_hand" else 0.0,
            tilt=TILT[mode],
            seed=run_cfg.seed,
        )
        say(f"moving through {poses} poses ({mode.replace('_', '-')}, board {spec.squares_x}x{spec.squares_y})")
        on_fault = None if confirm is None else (lambda fault: pause_and_recover(env.robot, fault, confirm, say))
        cap = capture_views(env, camera, spec, plan, on_progress=on_progress, on_fault=on_fault)
        cam = next(c for c in env.cameras if c.name == camera)
        device = cam.intrinsics
        truth_x = truth_k = None
        if run_cfg.robot.kind == "sim":
            from inril_robot.calibration.simtruth import camera_truth, intrinsics_truth

            truth_x = camera_truth(env.robot.sim, camera)  # type: ignore[attr-defined]
            truth_k = intrinsics_truth(env.robot.sim, camera, cam_cfg.width, cam_cfg.height)  # type: ignore[attr-defined]
    if not cap.detections:
        raise CalibrationError(f"the board was not detected in any of the {poses} views: " + "; ".join(cap.skipped))

    size = (cam_cfg.width, cam_cfg.height)
    uncertainty = Uncertainty()
    if kind == "intrinsics" or intrinsics == "charuco":
        say(f"intrinsics from {len(cap.detections)} ChArUco views")
        res = calibrate_intrinsics(cap.detections, spec, size)
        k = res.camera_matrix
        intr = Intrinsics(
            width=size[0],
            height=size[1],
            fx=k[0, 0],
            fy=k[1, 1],
            cx=k[0, 2],
            cy=k[1, 2],
            distortion=[float(v) for v in res.distortion],
            source="charuco",
            rms_px=res.rms_px,
        )
        uncertainty = Uncertainty(fx_px=res.std_fx_px, fy_px=res.std_fy_px)
    elif intrinsics == "device":
        intr = Intrinsics.from_camera_intrinsics(device, "sim" if run_cfg.robot.kind == "sim" else "device")
        if run_cfg.robot.kind == "sim":  # OpenCV's pixel-centre convention: see inril_robot.calibration.simtruth
            intr = intr.model_copy(update={"cx": (size[0] - 1) / 2, "cy": (size[1] - 1) / 2})
    else:
        intr = load_calibration(intrinsics).intrinsics
        if (intr.width, intr.height) != size:
            raise CalibrationError(
                f"--intrinsics {intrinsics} is for {intr.width}x{intr.height} images, the camera "
                f"captures {size[0]}x{size[1]}"
            )

    extrinsics = None
    residuals = Residuals(reprojection_rms_px=intr.rms_px)
    truth_error: dict[str, float] | None = None
    if kind == "hand-eye":
        say(f"hand-eye ({mode.replace('_', '-')}) from {len(cap.detections)} poses")
        he = solve_hand_eye(
            mode, cap.t_base_tcp, cap.detections, spec, intr.matrix(), np.array(intr.distortion), method=method
        )
        extrinsics = Extrinsics.from_matrix(
            he.transform, "tcp" if mode == "eye_in_hand" else "base", method=f"{he.method}+lm-refine"
        )
        uncertainty = uncertainty.model_copy(
            update={"position_m": he.std_position_m, "rotation_rad": he.std_rotation_rad}
        )
        per_pose = [
            PoseResidual(
                index=cap.pose_index[i],
                reprojection_rms_px=he.per_pose_rms_px[i],
                translation_m=he.per_pose_translation_m[i],
                rotation_rad=he.per_pose_rotation_rad[i],
                corners=len(cap.detections[i].ids),
                outlier=i in he.outliers,
            )
            for i in range(len(cap.detections))
        ]
        residuals = Residuals(
            reprojection_rms_px=he.reprojection_rms_px,
            per_pose=per_pose,
            outliers=[cap.pose_index[i] for i in he.outliers],
            method_comparison=he.method_comparison,
        )
        if truth_x is not None:
            t_err, r_err = pose_error(he.transform, truth_x)
            truth_error = {"position_mm": t_err * 1000, "rotation_deg": float(np.degrees(r_err))}
    if truth_k is not None:
        truth_error = {
            **(truth_error or {}),
            "fx_rel": abs(intr.fx / truth_k[0, 0] - 1),
            "fy_rel": abs(intr.fy / truth_k[1, 1] - 1),
        }

    calib = CalibrationFile(
        camera=camera,
        serial=cam_cfg.serial,
        mount=cam_cfg.mount,
        intrinsics=intr,
        extrinsics=extrinsics,
        uncertainty=uncertainty,
        residuals=residuals,
        board=spec.to_dict(),
        robot=run_cfg.robot.model_dump(mode="json", exclude={"sim": {"calibration_board"}}),
        camera_config=cam_cfg.model_dump(mode="json"),
        notes=[f"simulated ({mode}); ground truth error: {truth_error}"] if truth_error else [],
    )
    save_calibration(calib, out)
    return CalibrationRun(str(out), calib, len(cap.detections), cap.skipped, truth_error)
