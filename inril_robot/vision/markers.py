"""Object poses from fiducial markers: detection, PnP, fusion across cameras, age and lost flags (numpy + OpenCV).

FurnitureBench's answer for state policies on a real cell: square markers (AprilTag 36h11 by default, any OpenCV
aruco dictionary) printed on the objects, seen by calibrated cameras. Per camera and object, every detected marker of
the object goes into one PnP (IPPE on a single square, refined over all corners when several faces are seen, which
removes the planar flip ambiguity); the object's pose in the base frame is that camera's extrinsics composed with it;
views are fused by one fit over every camera's corners, started from each view's candidates (a single square's
IPPE flip is kept as a second candidate; other cameras, or the previous pose on a tie, decide between them).
`MarkerTracker` keeps the last pose of each object with its capture time, so a caller gets the pose's age and a
lost flag (nothing seen for `max_age_s`) instead of a silent stale value.

Frames: OpenCV's optical camera frame (x right, y down, z forward) as in calibration files; a marker's frame is
OpenCV's marker convention (centre, x right, y up as printed, z out of the face); corners come in detection order
top-left, top-right, bottom-right, bottom-left.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from inril_robot.core.errors import InrilError
from inril_robot.core.geometry import matrix_to_quat, quat_to_matrix
from inril_robot.hardware.scene import Fiducial, ObjectPose, SceneObject

QUIET_ZONE_CELLS = 1  # white cells printed around the black border
FACES = ("+x", "-x", "+y", "-y", "+z")  # the bottom face lies on the table: never seen
TIE_PX = 0.5  # joint fits within this RMS of the best are ambiguous: the previous pose decides
MAX_SEEDS = 4  # joint fits started per object and update (from the candidates that fit best as they are)
# A detected square is used only if it is a whole, fittable marker (`plausible`); thresholds measured on rendered
# lift episodes (docs/markers.md):
MIN_SIDE_PX = 10.0  # shortest side
MIN_ASPECT = 0.2  # shortest / longest side (seen nearly edge-on, its corners are poorly located)
SQUARE_PX = 1.0  # RMS of its corners about the best square pose (a partly hidden marker's corners fit no square)
MARKER_OUTLIER_PX = 1.5  # a marker the fused pose misses by more (RMS) disagrees with the others and is dropped
# A lone square is ambiguous when its second tilt fits within AMBIGUITY_RATIO x the first's error + AMBIGUITY_PX;
# then only a tilt within GATE of the previous pose is taken (`pose_distance`: metres + 5 cm per radian).
AMBIGUITY_RATIO = 3.0
AMBIGUITY_PX = 0.5
GATE = 0.02


class MarkerError(ValueError, InrilError):
    """An unknown dictionary, a marker layout that does not fit its object, or a camera without extrinsics."""


# ----------------------------------------------------------------------------------------------------- printing
def aruco_dictionary(name: str) -> cv2.aruco.Dictionary:
    if not name.startswith("DICT_") or not hasattr(cv2.aruco, name):
        raise MarkerError(f"unknown aruco dictionary {name!r}; e.g. DICT_APRILTAG_36h11, DICT_4X4_50")
    return cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, name))


def cells(dictionary: str) -> int:
    """Cells along a marker's side, black border included (36h11: 8)."""
    return int(aruco_dictionary(dictionary).markerSize) + 2


def printed_side(fiducial: Fiducial) -> float:
    """Side of the printed square with its white quiet zone [m]."""
    n = cells(fiducial.dictionary)
    return fiducial.size * (n + 2 * QUIET_ZONE_CELLS) / n


def marker_image(dictionary: str, marker_id: int, px_per_cell: int = 10) -> np.ndarray:
    """The marker with its quiet zone as a uint8 greyscale image, `px_per_cell` pixels per cell."""
    d = aruco_dictionary(dictionary)
    n = cells(dictionary)
    if not 0 <= marker_id < len(d.bytesList):
        raise MarkerError(f"marker id {marker_id} is not in {dictionary} (0..{len(d.bytesList) - 1})")
    img = cv2.aruco.generateImageMarker(d, marker_id, n * px_per_cell, borderBits=1)
    q = QUIET_ZONE_CELLS * px_per_cell
    return cv2.copyMakeBorder(img, q, q, q, q, cv2.BORDER_CONSTANT, value=255)


# ------------------------------------------------------------------------------------------------------- layout
def box_face_markers(half: Sequence[float], first_id: int, size: float, dictionary: str) -> tuple[Fiducial, ...]:
    """One marker centred on each face of a box of half-sizes `half` (faces +x, -x, +y, -y, +z; ids in that order)."""
    hx, hy, hz = (float(v) for v in half)
    up = np.array([0.0, 0.0, 1.0])
    out = []
    for i, face in enumerate(FACES):
        axis = "xyz".index(face[1])
        normal = np.zeros(3)
        normal[axis] = 1.0 if face[0] == "+" else -1.0
        y = up if axis != 2 else np.array([1.0, 0.0, 0.0])  # printed "up" points to the object's top (+x on top)
        x = np.cross(y, normal)
        rot = np.column_stack([x, y, normal])
        pos = normal * (hx, hy, hz)[axis]
        face_side = 2 * min(v for j, v in enumerate((hx, hy, hz)) if j != axis)
        marker = Fiducial(first_id + i, size, dictionary, _floats(pos), _floats(matrix_to_quat(rot)))  # type: ignore[arg-type]
        if printed_side(marker) > face_side + 1e-9:
            raise MarkerError(
                f"a {size * 1000:g} mm marker ({printed_side(marker) * 1000:g} mm with its quiet zone) does not fit "
                f"the {face_side * 1000:g} mm face {face}; use markers.size <= "
                f"{face_side * cells(dictionary) / (cells(dictionary) + 2 * QUIET_ZONE_CELLS) * 1000:.1f} mm"
            )
        out.append(marker)
    return tuple(out)


def _floats(v: np.ndarray) -> tuple[float, ...]:
    return tuple(float(x) for x in v)


def with_markers(objects: Iterable[SceneObject], first_id: int, size: float, dictionary: str) -> list[SceneObject]:
    """The task's objects with a marker on every face of each movable box (ids count up in object order)."""
    out, next_id = [], first_id
    for obj in objects:
        if obj.movable and obj.geoms and obj.geoms[0].shape == "box":
            markers = box_face_markers(obj.geoms[0].size, next_id, size, dictionary)
            next_id += len(markers)
            obj = SceneObject(obj.name, obj.geoms, obj.movable, obj.mass, obj.friction, markers)
        out.append(obj)
    return out


def marker_frame(fiducial: Fiducial) -> np.ndarray:
    """4x4 transform marker frame -> object frame."""
    t = np.eye(4)
    t[:3, :3] = quat_to_matrix(np.asarray(fiducial.quat, float))
    t[:3, 3] = fiducial.pos
    return t


def corner_points(size: float) -> np.ndarray:
    """(4, 3) corners in the marker frame, in OpenCV's detection order."""
    s = size / 2
    return np.array([[-s, s, 0.0], [s, s, 0.0], [s, -s, 0.0], [-s, -s, 0.0]])


# ---------------------------------------------------------------------------------------------------- detection
@dataclass(frozen=True)
class Detection:
    marker_id: int
    corners: np.ndarray  # (4, 2) pixels, detection order

    @property
    def area_px(self) -> float:
        return float(cv2.contourArea(self.corners.astype(np.float32)))


def make_detector(dictionary: str) -> cv2.aruco.ArucoDetector:
    params = cv2.aruco.DetectorParameters()
    params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    return cv2.aruco.ArucoDetector(aruco_dictionary(dictionary), params)


def detect(image: np.ndarray, detector: cv2.aruco.ArucoDetector) -> list[Detection]:
    """Every marker of the detector's dictionary in an RGB or greyscale image."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    corners, ids, _ = detector.detectMarkers(grey)
    if ids is None:
        return []
    return [
        Detection(int(i), c.reshape(4, 2).astype(np.float64)) for i, c in zip(ids.reshape(-1), corners, strict=True)
    ]


# ---------------------------------------------------------------------------------------------------------- PnP
@dataclass(frozen=True)
class CameraModel:
    """A calibrated camera: intrinsics and the camera frame in its parent (`base`, or `tcp` for a wrist camera)."""

    name: str
    matrix: np.ndarray  # (3, 3) K
    distortion: np.ndarray  # OpenCV order, may be empty
    parent_from_camera: np.ndarray  # (4, 4)
    parent: str = "base"


def _to_transform(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3] = cv2.Rodrigues(rvec)[0]
    t[:3, 3] = tvec.reshape(3)
    return t


def _project(points: np.ndarray, cam_from_obj: np.ndarray, cam: CameraModel) -> np.ndarray:
    rvec = cv2.Rodrigues(cam_from_obj[:3, :3])[0]
    proj, _ = cv2.projectPoints(points, rvec, cam_from_obj[:3, 3], cam.matrix, cam.distortion)
    return proj.reshape(-1, 2)


def _rms_px(residuals: np.ndarray) -> float:
    """RMS over points of the pixel distance, from (N*2,) or (N, 2) residuals."""
    return float(np.sqrt(np.mean(np.sum(np.asarray(residuals).reshape(-1, 2) ** 2, axis=1))))


@dataclass(frozen=True, eq=False)  # compared by identity (numpy fields)
class MarkerView:
    """One marker of an object seen by one camera: its corners, and the object poses (base frame) that this square
    alone explains. A single square is ambiguous: IPPE's two solutions mirror its tilt and often fit within a pixel
    of each other; both are kept, best fitting first."""

    camera: CameraModel
    base_from_camera: np.ndarray  # (4, 4) at capture
    detection: Detection
    fiducial: Fiducial
    candidates: tuple[np.ndarray, ...]  # (4, 4) base <- object
    errors: tuple[float, ...]  # each candidate's RMS reprojection error over the 4 corners [px]

    @property
    def points(self) -> np.ndarray:
        """(4, 3) corners in the object frame."""
        return (marker_frame(self.fiducial) @ np.c_[corner_points(self.fiducial.size), np.ones(4)].T).T[:, :3]

    @property
    def ambiguous(self) -> bool:
        """Whether the square's second tilt fits about as well as the first (nothing in the square tells them
        apart)."""
        return len(self.errors) > 1 and self.errors[1] <= AMBIGUITY_RATIO * self.errors[0] + AMBIGUITY_PX


def square_candidates(det: Detection, fid: Fiducial, cam: CameraModel) -> list[tuple[np.ndarray, float]]:
    """(T_camera_object, RMS reprojection error [px]) from one square (IPPE's two solutions), best first."""
    square = corner_points(fid.size)
    n, rvecs, tvecs, _ = cv2.solvePnPGeneric(
        square, det.corners, cam.matrix, cam.distortion, flags=cv2.SOLVEPNP_IPPE_SQUARE
    )
    seeds = [(r, t) for r, t in zip(rvecs[:n], tvecs[:n], strict=True) if np.isfinite(r).all() and np.isfinite(t).all()]
    if not seeds:  # IPPE is degenerate on an exactly fronto-parallel square (NaN): a general solver then
        ok, r, t = cv2.solvePnP(square, det.corners, cam.matrix, cam.distortion, flags=cv2.SOLVEPNP_SQPNP)
        seeds = [(r, t)] if ok else []
    out = []
    for rvec, tvec in seeds:
        cam_from_marker = _to_transform(rvec, tvec)
        err = _rms_px(_project(square, cam_from_marker, cam) - det.corners)
        if np.isfinite(err):
            out.append((cam_from_marker @ np.linalg.inv(marker_frame(fid)), err))
    return sorted(out, key=lambda c: c[1])


def plausible(det: Detection, errors: Sequence[float]) -> str | None:
    """Why a detected square is not a whole, fittable marker (None: it is): too small, seen too edge-on, or corners
    that no square fits (a finger or the other object hides part of it, shifting the detected corners)."""
    sides = np.linalg.norm(det.corners - np.roll(det.corners, -1, axis=0), axis=1)
    if sides.min() < MIN_SIDE_PX:
        return f"side {sides.min():.1f} px < {MIN_SIDE_PX}"
    if sides.min() < MIN_ASPECT * sides.max():
        return f"aspect {sides.min() / sides.max():.2f} < {MIN_ASPECT}"
    if not errors or errors[0] > SQUARE_PX:
        return f"square fit {errors[0] if errors else float('inf'):.2f} px > {SQUARE_PX}"
    return None


# ------------------------------------------------------------------------------------------------------- fusion
def _residuals(markers: Sequence[MarkerView], base_from_object: np.ndarray) -> np.ndarray:
    """Pixel residuals of every marker's corners, in `markers` order, (4 * len(markers), 2)."""
    out = np.empty((4 * len(markers), 2))
    by_camera: dict[str, list[int]] = {}
    for i, m in enumerate(markers):
        by_camera.setdefault(m.camera.name, []).append(i)
    for idx in by_camera.values():
        first = markers[idx[0]]
        cam_from_obj = np.linalg.inv(first.base_from_camera) @ base_from_object
        points = np.concatenate([markers[i].points for i in idx])
        pixels = np.concatenate([markers[i].detection.corners for i in idx])
        res = _project(points, cam_from_obj, first.camera) - pixels
        for k, i in enumerate(idx):
            out[4 * i : 4 * i + 4] = res[4 * k : 4 * k + 4]
    return out


def _perturb(pose: np.ndarray, x: np.ndarray) -> np.ndarray:
    t = pose.copy()
    t[:3, :3] = cv2.Rodrigues(x[:3])[0] @ pose[:3, :3]
    t[:3, 3] = pose[:3, 3] + x[3:]
    return t


def refine_jointly(markers: Sequence[MarkerView], start: np.ndarray, iterations: int = 8) -> tuple[np.ndarray, float]:
    """The object pose minimising the reprojection error over every marker's corners in every camera at once
    (Levenberg-Marquardt, numeric Jacobian): cameras that see the object from different sides pin down each other's
    depth. Returns the pose and its RMS reprojection error [px]."""
    pose, lam = start, 1e-3
    r = _residuals(markers, pose).ravel()
    eps = np.array([1e-5] * 3 + [1e-6] * 3)
    for _ in range(iterations):
        jac = np.column_stack(
            [(_residuals(markers, _perturb(pose, e)).ravel() - r) / h for e, h in zip(np.diag(eps), eps, strict=True)]
        )
        jtj, jtr = jac.T @ jac, jac.T @ r
        step = -np.linalg.solve(jtj + lam * np.diag(np.diag(jtj) + 1e-12), jtr)
        candidate = _perturb(pose, step)
        rc = _residuals(markers, candidate).ravel()
        if rc @ rc < r @ r:
            pose, r, lam = candidate, rc, lam * 0.3
            if np.linalg.norm(step) < 1e-8:
                break
        else:
            lam *= 10.0
    return pose, _rms_px(r)


def rotation_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Angle [rad] of the rotation between two rotation matrices."""
    return float(np.arccos(np.clip((np.trace(a.T @ b) - 1.0) / 2.0, -1.0, 1.0)))


def pose_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Position distance [m] plus 5 cm per radian of rotation between two poses."""
    return float(np.linalg.norm(a[:3, 3] - b[:3, 3]) + 0.05 * rotation_angle(a[:3, :3], b[:3, :3]))


def _distinct(poses: Iterable[np.ndarray], within: float = 0.003) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for p in poses:
        if all(pose_distance(p, q) > within for q in out):
            out.append(p)
    return out


def marker_rms(markers: Sequence[MarkerView], base_from_object: np.ndarray) -> np.ndarray:
    """Each marker's RMS reprojection error [px] at a pose."""
    res = _residuals(markers, base_from_object)
    return np.sqrt(np.mean(np.sum(res.reshape(-1, 4, 2) ** 2, axis=2), axis=1))


def fuse(markers: Sequence[MarkerView], previous: np.ndarray | None = None) -> tuple[np.ndarray, list[MarkerView]]:
    """(base <- object pose, markers it agrees with) from one object's markers in every camera.

    Every square's candidates seed a joint fit over all corners (the `MAX_SEEDS` seeds that fit best as they are);
    the best fit wins, and cameras or faces that see the object from different sides resolve each other's tilt.
    Fits within `TIE_PX` of the best are told apart by `previous` (objects do not flip between frames). Then the
    marker the pose misses most is dropped while it misses by more than `MARKER_OUTLIER_PX` (a partly hidden or
    misdetected marker disagreeing with the others), and the fit redone."""
    seeds = _distinct(c for m in markers for c in m.candidates)
    seeds = sorted(seeds, key=lambda s: float(np.sum(_residuals(markers, s) ** 2)))[:MAX_SEEDS]
    fits = [refine_jointly(markers, s) for s in seeds]
    best = min(r for _, r in fits)
    close = [p for p, r in fits if r <= best + TIE_PX]
    if previous is not None and len(close) > 1:
        pose = min(close, key=lambda p: pose_distance(p, previous))
    else:
        pose = min(fits, key=lambda f: f[1])[0]
    used = list(markers)
    while len(used) > 1:
        rms = marker_rms(used, pose)
        worst = int(np.argmax(rms))
        if rms[worst] <= MARKER_OUTLIER_PX:
            break
        used.pop(worst)
        pose, _ = refine_jointly(used, pose)
    return pose, used


def lone_square(marker: MarkerView, previous: np.ndarray | None) -> np.ndarray | None:
    """The pose from a single square, or None when it cannot be trusted: when its two tilts fit about equally
    well, only the one within `GATE` of the previous pose is taken (objects do not flip between frames); with no
    previous pose, or none near it, the square gives nothing (the estimate ages instead)."""
    if not marker.ambiguous:
        return marker.candidates[0]
    if previous is None:
        return None
    near = [c for c in marker.candidates if pose_distance(c, previous) <= GATE]
    return min(near, key=lambda c: pose_distance(c, previous)) if near else None


# ------------------------------------------------------------------------------------------------------ tracker
@dataclass(frozen=True)
class ObjectEstimate:
    pose: ObjectPose
    time: float  # capture time of the frames it was estimated from (the cameras' clock) [s]
    age_s: float  # how long ago, at the latest update
    lost: bool  # not seen for more than max_age_s
    cameras: tuple[str, ...] = ()  # the cameras whose markers were fused at `time`
    markers: int = 0


@dataclass(frozen=True)
class Rejected:
    """A detected marker left out of an object's pose, and why (for diagnostics and the bench)."""

    camera: str
    marker_id: int
    reason: str


@dataclass
class MarkerTracker:
    """Keeps every object's latest fused pose. `update` takes each camera's newest frame and its capture time."""

    objects: Sequence[SceneObject]
    cameras: Mapping[str, CameraModel]
    dictionary: str
    max_age_s: float = 0.5
    estimates: dict[str, ObjectEstimate] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)  # of the latest update

    def __post_init__(self) -> None:
        self.detector = make_detector(self.dictionary)
        self.by_id: dict[int, tuple[str, Fiducial]] = {}
        for obj in self.objects:
            for f in obj.markers:
                if f.dictionary != self.dictionary:
                    raise MarkerError(
                        f"{obj.name}'s marker {f.marker_id} is {f.dictionary}, tracker reads {self.dictionary}"
                    )
                if f.marker_id in self.by_id:
                    raise MarkerError(f"marker id {f.marker_id} is on both {self.by_id[f.marker_id][0]} and {obj.name}")
                self.by_id[f.marker_id] = (obj.name, f)
        self.tracked = sorted({name for name, _ in self.by_id.values()})

    def reset(self) -> None:
        self.estimates.clear()

    def detect(self, images: Mapping[str, np.ndarray]) -> dict[str, list[Detection]]:
        """Every camera's detected markers (any id of the dictionary)."""
        return {name: detect(image, self.detector) for name, image in images.items()}

    def views(
        self, detections: Mapping[str, Sequence[Detection]], base_from_tcp: np.ndarray | None = None
    ) -> dict[str, list[MarkerView]]:
        """Each object's plausible markers, with their candidate poses in the base frame; the implausible ones go to
        `rejected`."""
        out: dict[str, list[MarkerView]] = {}
        self.rejected = []
        for cam_name, dets in detections.items():
            cam = self.cameras[cam_name]
            if cam.parent == "tcp":
                if base_from_tcp is None:
                    raise MarkerError(f"camera {cam_name!r} is on the wrist: its views need the TCP pose")
                base_from_cam = base_from_tcp @ cam.parent_from_camera
            else:
                base_from_cam = cam.parent_from_camera
            for det in dets:
                if det.marker_id not in self.by_id:
                    continue
                name, fid = self.by_id[det.marker_id]
                found = square_candidates(det, fid, cam)
                why = plausible(det, [e for _, e in found])
                if why is not None:
                    self.rejected.append(Rejected(cam_name, det.marker_id, why))
                    continue
                candidates = tuple(base_from_cam @ t for t, _ in found)
                out.setdefault(name, []).append(
                    MarkerView(cam, base_from_cam, det, fid, candidates, tuple(e for _, e in found))
                )
        return out

    def update(
        self, frames: Mapping[str, tuple[np.ndarray, float]], base_from_tcp: np.ndarray | None = None
    ) -> dict[str, ObjectEstimate]:
        """Detect, estimate and fuse; objects not seen keep their last pose, older by now (the newest capture)."""
        detections = self.detect({name: image for name, (image, _) in frames.items()})
        return self.update_detections({name: (detections[name], t) for name, (_, t) in frames.items()}, base_from_tcp)

    def update_detections(
        self, detections: Mapping[str, tuple[Sequence[Detection], float]], base_from_tcp: np.ndarray | None = None
    ) -> dict[str, ObjectEstimate]:
        """`update` from each camera's detections and capture time (replays recorded detections)."""
        now = max(t for _, t in detections.values())
        capture = {name: t for name, (_, t) in detections.items()}
        for name, markers in self.views({k: d for k, (d, _) in detections.items()}, base_from_tcp).items():
            last = self.estimates.get(name)
            previous = None
            if last is not None:
                previous = np.eye(4)
                previous[:3, :3], previous[:3, 3] = quat_to_matrix(last.pose.quat), last.pose.pos
            pose, used = fuse(markers, previous)
            self.rejected += [
                Rejected(m.camera.name, m.detection.marker_id, "disagrees with the others")
                for m in markers
                if m not in used
            ]
            if len(used) == 1:
                pose = lone_square(used[0], previous)
                if pose is None:
                    self.rejected.append(
                        Rejected(used[0].camera.name, used[0].detection.marker_id, "lone ambiguous square")
                    )
                    continue
            quat = matrix_to_quat(pose[:3, :3])
            self.estimates[name] = ObjectEstimate(
                ObjectPose(pose[:3, 3].copy(), quat if quat[3] >= 0 else -quat),
                max(capture[m.camera.name] for m in used),
                0.0,
                False,
                tuple(sorted({m.camera.name for m in used})),
                len(used),
            )
        for name, est in list(self.estimates.items()):
            age = max(0.0, now - est.time)
            self.estimates[name] = ObjectEstimate(
                est.pose, est.time, age, age > self.max_age_s, est.cameras, est.markers
            )
        return dict(self.estimates)


# -------------------------------------------------------------------------------------------------- error stats
def pose_error(estimate: ObjectPose, truth: ObjectPose) -> tuple[float, float]:
    """(position error [m], rotation error [rad]) of an estimate against the truth."""
    return (
        float(np.linalg.norm(estimate.pos - truth.pos)),
        rotation_angle(quat_to_matrix(estimate.quat), quat_to_matrix(truth.quat)),
    )
