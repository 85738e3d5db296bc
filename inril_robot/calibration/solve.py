"""Solvers: camera intrinsics from ChArUco views, board poses (PnP), and hand-eye calibration with its residuals.

Hand-eye. With ``T_a_b`` the 4x4 transform taking frame-b coordinates to frame a, pose i gives the TCP in the base
(``T_base_tcp[i]``, from the robot) and the board in the camera (``T_cam_board[i]``, from PnP).

- eye-in-hand (wrist camera, board fixed in the world): unknown ``X = T_tcp_cam``; the board in the base,
  ``T_base_tcp[i] @ X @ T_cam_board[i]``, is the same for every i.
- eye-to-hand (static camera, board carried by the hand): unknown ``X = T_base_cam``; the board in the TCP frame,
  ``inv(T_base_tcp[i]) @ X @ T_cam_board[i]``, is the same for every i. OpenCV's `calibrateHandEye` solves this
  when it is given the inverted robot poses (base in TCP instead of TCP in base).

Every available method (OpenCV 4.x: Tsai, Park, Horaud, Andreff, Daniilidis; OpenCV 5.0, whose Python bindings
lack calibrateHandEye: this module's Tsai, Park and Andreff) is run; by default the one whose solution reprojects
the board corners best (RMS over all poses, the board's pose fitted too) is kept, and the others are reported.
A final Levenberg-Marquardt refinement of X and the board pose minimises that same reprojection error. On the
simulated ground truth (tests/test_calibration_sim.py) every linear method lands within a few millimetres and the
refinement brings all of them within a millimetre; picking by reprojection needs no ground truth, so it also works
on the real robot, where an unlucky method (Andreff's and Daniilidis' sensitivity to rotation noise) is caught.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from inril_robot.core.errors import InrilError
from inril_robot.core.geometry import matrix_to_rotvec, rotvec_to_matrix, skew
from inril_robot.vision.board import BoardSpec, Detection

Mode = Literal["eye_in_hand", "eye_to_hand"]
OPENCV_METHODS: dict[str, int] = {
    "tsai": cv2.CALIB_HAND_EYE_TSAI,
    "park": cv2.CALIB_HAND_EYE_PARK,
    "horaud": cv2.CALIB_HAND_EYE_HORAUD,
    "andreff": cv2.CALIB_HAND_EYE_ANDREFF,
    "daniilidis": cv2.CALIB_HAND_EYE_DANIILIDIS,
}
# OpenCV 4.x (pinned < 5 in pyproject.toml: 5.0's Python bindings dropped calibrateHandEye) solves Tsai-Lenz,
# Park-Martin, Horaud and Daniilidis. Andreff's rotation is solved here (`_own_rotation`) with the translation least
# squares shared by every own solve: OpenCV's Andreff solves translation jointly in its linear system, which was
# 5.9-12.8 mm off on 10 synthetic poses with 0.1 px noise (tests/test_calibration.py) where ours is within 5 mm.
# Without calibrateHandEye (an OpenCV 5 install) Tsai-Lenz and Park-Martin fall back to the own solves too.
HAVE_OPENCV_HAND_EYE = hasattr(cv2, "calibrateHandEye")
OWN_METHODS = ("tsai", "park", "andreff")
METHODS: tuple[str, ...] = tuple(OPENCV_METHODS) if HAVE_OPENCV_HAND_EYE else OWN_METHODS
MIN_POSES = 3
MIN_ROTATION_DEG = 5.0  # relative rotations smaller than this carry no hand-eye information
OUTLIER_MAD_K = 4.0  # a pose is an outlier beyond median + k * 1.4826 * MAD of the per-pose errors
OUTLIER_FLOOR_PX = 1.0  # ... and above this many pixels (sub-pixel spreads are noise, not outliers)


class CalibrationError(ValueError, InrilError):
    """The data cannot give a calibration: too few views or poses, degenerate motion, a failed solve."""


# ------------------------------------------------------------------------------------------------- transforms
def make_transform(rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3] = rot
    t[:3, 3] = np.asarray(trans, float).reshape(3)
    return t


def invert(t: np.ndarray) -> np.ndarray:
    return make_transform(t[:3, :3].T, -t[:3, :3].T @ t[:3, 3])


def rotation_angle(rot: np.ndarray) -> float:
    return float(np.arccos(np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)))


def pose_error(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(translation [m], rotation [rad]) between two transforms."""
    return float(np.linalg.norm(a[:3, 3] - b[:3, 3])), rotation_angle(a[:3, :3].T @ b[:3, :3])


def mean_transform(ts: Sequence[np.ndarray]) -> np.ndarray:
    """Chordal mean: the rotation nearest (Frobenius) to the mean rotation matrix, and the mean translation."""
    u, _, vt = np.linalg.svd(sum(t[:3, :3] for t in ts))
    rot = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    return make_transform(rot, np.mean([t[:3, 3] for t in ts], axis=0))


def _to_vec(t: np.ndarray) -> np.ndarray:
    return np.concatenate([matrix_to_rotvec(t[:3, :3]), t[:3, 3]])


def _from_vec(v: np.ndarray) -> np.ndarray:
    return make_transform(rotvec_to_matrix(v[:3]), v[3:])


# ------------------------------------------------------------------------------------------------- intrinsics
@dataclass
class IntrinsicsResult:
    camera_matrix: np.ndarray
    distortion: np.ndarray
    rms_px: float
    per_view_rms_px: list[float]
    std_fx_px: float
    std_fy_px: float
    image_size: tuple[int, int]


def calibrate_intrinsics(
    detections: Sequence[Detection],
    spec: BoardSpec,
    image_size: tuple[int, int],
    distortion: Literal["none", "k1k2", "full"] = "k1k2",
) -> IntrinsicsResult:
    """`cv2.calibrateCamera` on ChArUco corners. ``k1k2``: radial k1, k2 and tangential p1, p2 (k3 fixed at 0,
    which a few tilted views of a small board cannot pin down); ``none``: a pure pinhole."""
    if len(detections) < 4:
        raise CalibrationError(f"intrinsics need at least 4 views of the board, got {len(detections)}")
    obj = [d.object_points(spec).astype(np.float32) for d in detections]
    img = [d.corners.astype(np.float32) for d in detections]
    flags = {
        "none": cv2.CALIB_FIX_K1 | cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST,
        "k1k2": cv2.CALIB_FIX_K3,
        "full": 0,
    }[distortion]
    w, h = image_size
    k0 = np.array([[float(max(w, h)), 0, (w - 1) / 2], [0, float(max(w, h)), (h - 1) / 2], [0, 0, 1]])
    rms, k, dist, _, _, std_intr, _, per_view = cv2.calibrateCameraExtended(
        obj, img, (w, h), k0, np.zeros(5), flags=flags | cv2.CALIB_USE_INTRINSIC_GUESS
    )
    std = np.asarray(std_intr).reshape(-1)
    return IntrinsicsResult(
        k,
        dist.reshape(-1),
        float(rms),
        [float(v) for v in np.asarray(per_view).reshape(-1)],
        float(std[0]),
        float(std[1]),
        (w, h),
    )


# ------------------------------------------------------------------------------------------------- board poses
def board_pose(
    det: Detection, spec: BoardSpec, camera_matrix: np.ndarray, distortion: np.ndarray, what: str = "image"
) -> np.ndarray:
    """T_cam_board from one detection (iterative PnP, refined by Levenberg-Marquardt)."""
    obj = det.object_points(spec)
    if spec.board().checkCharucoCornersCollinear(det.ids.reshape(-1, 1).astype(np.int32)):
        raise CalibrationError(f"{what}: the detected corners are collinear; the board pose is undetermined")
    ok, rvec, tvec = cv2.solvePnP(obj, det.corners, camera_matrix, distortion, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise CalibrationError(f"{what}: solvePnP failed for the board")
    rvec, tvec = cv2.solvePnPRefineLM(obj, det.corners, camera_matrix, distortion, rvec, tvec)
    return make_transform(cv2.Rodrigues(rvec)[0], tvec)


def reprojection_errors(
    t_cam_board: np.ndarray, det: Detection, spec: BoardSpec, camera_matrix: np.ndarray, distortion: np.ndarray
) -> np.ndarray:
    """Per-corner pixel distances between the detected corners and the board corners projected at `t_cam_board`."""
    rvec = cv2.Rodrigues(t_cam_board[:3, :3])[0]
    proj, _ = cv2.projectPoints(det.object_points(spec), rvec, t_cam_board[:3, 3], camera_matrix, distortion)
    return np.linalg.norm(proj.reshape(-1, 2) - det.corners, axis=1)


# --------------------------------------------------------------------------------------------------- hand-eye
@dataclass
class HandEyeResult:
    mode: Mode
    transform: np.ndarray  # X: T_tcp_cam (eye-in-hand) or T_base_cam (eye-to-hand)
    board: np.ndarray  # the constant board pose: T_base_board (eye-in-hand) or T_tcp_board (eye-to-hand)
    method: str
    reprojection_rms_px: float
    per_pose_rms_px: list[float]
    per_pose_translation_m: list[float]  # board-pose consistency: distance of pose i's board from the mean
    per_pose_rotation_rad: list[float]
    outliers: list[int]
    std_position_m: float  # leave-one-out jackknife
    std_rotation_rad: float
    method_comparison: dict[str, dict[str, float]] = field(default_factory=dict)


def check_motion(t_base_tcp: Sequence[np.ndarray]) -> None:
    """Refuse pose sets that cannot determine a hand-eye transform: too few, or rotations about one axis only."""
    n = len(t_base_tcp)
    if n < MIN_POSES:
        raise CalibrationError(f"hand-eye needs at least {MIN_POSES} robot poses (10-20 recommended), got {n}")
    axes = []
    largest = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            rel = matrix_to_rotvec(t_base_tcp[i][:3, :3].T @ t_base_tcp[j][:3, :3])
            angle = float(np.linalg.norm(rel))
            largest = max(largest, angle)
            if angle > np.radians(MIN_ROTATION_DEG):
                axes.append(rel / angle)
    if not axes:
        raise CalibrationError(
            f"degenerate motion: the robot poses' orientations differ by at most "
            f"{np.degrees(largest):.1f} deg; hand-eye needs rotations of >= {MIN_ROTATION_DEG:g} "
            "deg about at least two different axes"
        )
    singular = np.linalg.svd(np.array(axes), compute_uv=False)
    if len(singular) < 2 or singular[1] < 0.1 * singular[0]:
        raise CalibrationError(
            "degenerate motion: every rotation between robot poses is about (nearly) the same "
            "axis; tilt the tool about two different axes"
        )


def _board_estimates(
    mode: Mode, x: np.ndarray, t_base_tcp: Sequence[np.ndarray], t_cam_board: Sequence[np.ndarray]
) -> list[np.ndarray]:
    if mode == "eye_in_hand":
        return [tb @ x @ tc for tb, tc in zip(t_base_tcp, t_cam_board, strict=True)]
    return [invert(tb) @ x @ tc for tb, tc in zip(t_base_tcp, t_cam_board, strict=True)]


def predicted_board_in_camera(mode: Mode, x: np.ndarray, board: np.ndarray, t_base_tcp: np.ndarray) -> np.ndarray:
    if mode == "eye_in_hand":
        return invert(x) @ invert(t_base_tcp) @ board
    return invert(x) @ t_base_tcp @ board


def _reprojection(
    mode: Mode,
    x: np.ndarray,
    board: np.ndarray,
    t_base_tcp: Sequence[np.ndarray],
    detections: Sequence[Detection],
    spec: BoardSpec,
    k: np.ndarray,
    dist: np.ndarray,
) -> list[np.ndarray]:
    return [
        reprojection_errors(predicted_board_in_camera(mode, x, board, tb), det, spec, k, dist)
        for tb, det in zip(t_base_tcp, detections, strict=True)
    ]


def _rms(errors: Sequence[np.ndarray]) -> float:
    allerr = np.concatenate(list(errors))
    return float(np.sqrt(np.mean(allerr**2)))


def _motion_pairs(gripper: Sequence[np.ndarray], target: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(A, B) with A X = X B for every pair of poses i < j: A = inv(G_j) G_i, B = C_j inv(C_i)."""
    pairs = []
    for i in range(len(gripper)):
        for j in range(i + 1, len(gripper)):
            a = invert(gripper[j]) @ gripper[i]
            if rotation_angle(a[:3, :3]) > 1e-3:  # pure translations say nothing about the rotation
                pairs.append((a, target[j] @ invert(target[i])))
    return pairs


def _nearest_rotation(m: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(m)
    return u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt


def _own_rotation(method: str, pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    ra = [a[:3, :3] for a, _ in pairs]
    rb = [b[:3, :3] for _, b in pairs]
    if method == "park":  # Park & Martin 1994: R_X = (M^T M)^(-1/2) M^T, M = sum beta alpha^T of the log maps
        m = sum(np.outer(matrix_to_rotvec(b), matrix_to_rotvec(a)) for a, b in zip(ra, rb, strict=True))
        w, v = np.linalg.eigh(m.T @ m)
        return _nearest_rotation(v @ np.diag(1.0 / np.sqrt(np.maximum(w, 1e-18))) @ v.T @ m.T)
    if method == "tsai":  # Tsai & Lenz 1989, modified Rodrigues vectors p = 2 sin(theta/2) axis

        def rodrigues(r: np.ndarray) -> np.ndarray:
            v = matrix_to_rotvec(r)
            angle = np.linalg.norm(v)
            return 2.0 * np.sin(angle / 2) * v / max(angle, 1e-12)

        pg, pc = [rodrigues(r) for r in ra], [rodrigues(r) for r in rb]
        lhs = np.vstack([skew(g + c) for g, c in zip(pg, pc, strict=True)])
        rhs = np.concatenate([c - g for g, c in zip(pg, pc, strict=True)])
        prime = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
        p = 2.0 * prime / np.sqrt(1.0 + prime @ prime)
        n2 = p @ p
        return _nearest_rotation((1 - n2 / 2) * np.eye(3) + 0.5 * (np.outer(p, p) + np.sqrt(4 - n2) * skew(p)))
    # Andreff et al. 2001 (rotation part): R_A R_X - R_X R_B = 0 is linear in vec(R_X); take the null vector
    rows = np.vstack([np.kron(a, np.eye(3)) - np.kron(np.eye(3), b.T) for a, b in zip(ra, rb, strict=True)])
    null = np.linalg.svd(rows)[2][-1].reshape(3, 3)
    return _nearest_rotation(null * np.sign(np.linalg.det(null)))


def _linear_solve(
    mode: Mode, method: str, t_base_tcp: Sequence[np.ndarray], t_cam_board: Sequence[np.ndarray]
) -> np.ndarray:
    robot = t_base_tcp if mode == "eye_in_hand" else [invert(t) for t in t_base_tcp]
    if HAVE_OPENCV_HAND_EYE and method != "andreff":
        rot, trans = cv2.calibrateHandEye(
            [t[:3, :3] for t in robot],
            [t[:3, 3] for t in robot],
            [t[:3, :3] for t in t_cam_board],
            [t[:3, 3] for t in t_cam_board],
            method=OPENCV_METHODS[method],
        )
    else:
        pairs = _motion_pairs(robot, t_cam_board)
        if len(pairs) < 2:
            raise CalibrationError("hand-eye needs at least two robot motions with rotation")
        rot = _own_rotation(method, pairs)
        # translation, shared by all three: (R_A - I) t_X = R_X t_B - t_A, least squares over every pair
        lhs = np.vstack([a[:3, :3] - np.eye(3) for a, _ in pairs])
        rhs = np.concatenate([rot @ b[:3, 3] - a[:3, 3] for a, b in pairs])
        trans = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    x = make_transform(rot, trans)
    if not np.all(np.isfinite(x)):
        raise CalibrationError(f"hand-eye method {method!r} returned a non-finite solution")
    return x


def _refine(
    mode: Mode,
    x: np.ndarray,
    board: np.ndarray,
    t_base_tcp: Sequence[np.ndarray],
    detections: Sequence[Detection],
    spec: BoardSpec,
    k: np.ndarray,
    dist: np.ndarray,
    iterations: int = 15,
) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt on (X, board) minimising all corners' reprojection error (forward-difference Jacobian)."""

    def residual(v: np.ndarray) -> np.ndarray:
        errs = []
        xx, bb = _from_vec(v[:6]), _from_vec(v[6:])
        for tb, det in zip(t_base_tcp, detections, strict=True):
            tcb = predicted_board_in_camera(mode, xx, bb, tb)
            proj, _ = cv2.projectPoints(det.object_points(spec), cv2.Rodrigues(tcb[:3, :3])[0], tcb[:3, 3], k, dist)
            errs.append((proj.reshape(-1, 2) - det.corners).reshape(-1))
        return np.concatenate(errs)

    v = np.concatenate([_to_vec(x), _to_vec(board)])
    r = residual(v)
    lam = 1e-3
    for _ in range(iterations):
        jac = np.empty((r.size, v.size))
        for j in range(v.size):
            step = 1e-6 if j % 6 < 3 else 1e-7
            dv = np.zeros_like(v)
            dv[j] = step
            jac[:, j] = (residual(v + dv) - r) / step
        jtj, jtr = jac.T @ jac, jac.T @ r
        improved = False
        for _ in range(8):
            delta = np.linalg.solve(jtj + lam * np.diag(np.diag(jtj) + 1e-12), -jtr)
            r_new = residual(v + delta)
            if r_new @ r_new < r @ r:
                v, r, lam, improved = v + delta, r_new, lam * 0.3, True
                break
            lam *= 10.0
        if not improved or np.linalg.norm(delta) < 1e-10:
            break
    return _from_vec(v[:6]), _from_vec(v[6:])


def _solve_once(
    mode: Mode,
    method: str,
    t_base_tcp: Sequence[np.ndarray],
    t_cam_board: Sequence[np.ndarray],
    detections: Sequence[Detection],
    spec: BoardSpec,
    k: np.ndarray,
    dist: np.ndarray,
    refine: bool,
) -> tuple[np.ndarray, np.ndarray, float]:
    x = _linear_solve(mode, method, t_base_tcp, t_cam_board)
    board = mean_transform(_board_estimates(mode, x, t_base_tcp, t_cam_board))
    if refine:
        x, board = _refine(mode, x, board, t_base_tcp, detections, spec, k, dist)
    return x, board, _rms(_reprojection(mode, x, board, t_base_tcp, detections, spec, k, dist))


def solve_hand_eye(
    mode: Mode,
    t_base_tcp: Sequence[np.ndarray],
    detections: Sequence[Detection],
    spec: BoardSpec,
    camera_matrix: np.ndarray,
    distortion: np.ndarray,
    method: str = "auto",
    refine: bool = True,
    uncertainty: bool = True,
) -> HandEyeResult:
    """Hand-eye calibration from robot poses and board detections (one per pose); see the module docstring."""
    if len(t_base_tcp) != len(detections):
        raise CalibrationError(f"{len(t_base_tcp)} robot poses but {len(detections)} board detections")
    if method != "auto" and method not in METHODS:
        raise CalibrationError(f"unknown hand-eye method {method!r}; available: auto, {', '.join(METHODS)}")
    check_motion(t_base_tcp)
    k, dist = np.asarray(camera_matrix, float), np.asarray(distortion, float).reshape(-1)
    t_cam_board = [board_pose(d, spec, k, dist, what=f"pose {i}") for i, d in enumerate(detections)]

    comparison: dict[str, dict[str, float]] = {}
    candidates = list(METHODS) if method == "auto" else [method]
    for name in candidates:
        try:
            x, board, rms = _solve_once(mode, name, t_base_tcp, t_cam_board, detections, spec, k, dist, False)
        except (cv2.error, CalibrationError, np.linalg.LinAlgError):
            continue
        comparison[name] = {"reprojection_rms_px": rms, "x": x, "board": board}  # type: ignore[dict-item]
    if not comparison:
        raise CalibrationError(f"every hand-eye method failed ({', '.join(candidates)})")
    best = min(comparison, key=lambda n: comparison[n]["reprojection_rms_px"])
    x, board = comparison[best]["x"], comparison[best]["board"]  # type: ignore[assignment]
    if refine:
        x, board = _refine(mode, x, board, t_base_tcp, detections, spec, k, dist)  # type: ignore[arg-type]
    errors = _reprojection(mode, x, board, t_base_tcp, detections, spec, k, dist)
    per_pose = [float(np.sqrt(np.mean(e**2))) for e in errors]
    consistency = [pose_error(b, board) for b in _board_estimates(mode, x, t_base_tcp, t_cam_board)]
    med = float(np.median(per_pose))
    mad = float(np.median(np.abs(np.array(per_pose) - med))) * 1.4826
    outliers = [i for i, e in enumerate(per_pose) if e > max(med + OUTLIER_MAD_K * mad, OUTLIER_FLOOR_PX)]

    std_pos = std_rot = 0.0
    n = len(detections)
    if uncertainty and n > MIN_POSES:
        # jackknife: refit without each pose in turn; the spread of the refits estimates the solution's sigma
        loo = []
        for i in range(n):
            keep = [j for j in range(n) if j != i]
            try:
                xi, _, _ = _solve_once(
                    mode,
                    best,
                    [t_base_tcp[j] for j in keep],
                    [t_cam_board[j] for j in keep],
                    [detections[j] for j in keep],
                    spec,
                    k,
                    dist,
                    refine,
                )
            except (cv2.error, CalibrationError, np.linalg.LinAlgError):
                continue
            loo.append(xi)
        if len(loo) >= 2:
            centre = mean_transform(loo)
            d = np.array([pose_error(xi, centre) for xi in loo])
            scale = (len(loo) - 1) / len(loo)
            std_pos = float(np.sqrt(scale * np.sum(d[:, 0] ** 2)))
            std_rot = float(np.sqrt(scale * np.sum(d[:, 1] ** 2)))

    report = {name: {"reprojection_rms_px": float(v["reprojection_rms_px"])} for name, v in comparison.items()}
    return HandEyeResult(
        mode,
        x,
        board,
        best,
        _rms(errors),
        per_pose,
        [c[0] for c in consistency],
        [c[1] for c in consistency],
        outliers,
        std_pos,
        std_rot,
        report,
    )
