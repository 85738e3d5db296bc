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
OUTLIER_PX = 4.0  # a view whose corners the fused pose misses by more is dropped


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


def _reprojection(obj: np.ndarray, img: np.ndarray, rvec: np.ndarray, tvec: np.ndarray, cam: CameraModel) -> float:
    proj, _ = cv2.projectPoints(obj, rvec, tvec, cam.matrix, cam.distortion)
    return float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - img) ** 2, axis=1))))


def object_points(detections: Sequence[tuple[Detection, Fiducial]]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) marker corners in the object frame and their (N, 2) detected pixels."""
    obj = np.concatenate(
        [(marker_frame(f) @ np.c_[corner_points(f.size), np.ones(4)].T).T[:, :3] for _, f in detections]
    )
    return obj, np.concatenate([d.corners for d, _ in detections])


def object_in_camera(
    detections: Sequence[tuple[Detection, Fiducial]], cam: CameraModel
) -> list[tuple[np.ndarray, float]]:
    """Candidate (T_camera_object, RMS reprojection error [px]) from the detected markers of one object, best
    first. A single square is ambiguous (IPPE's two solutions: the tilt mirrored, often within a pixel of each
    other); both are kept for fusion to decide with other cameras or the previous pose."""
    if not detections:
        return []
    obj, img = object_points(detections)
    det, fid = max(detections, key=lambda pair: pair[0].area_px)
    n, rvecs, tvecs, _ = cv2.solvePnPGeneric(
        corner_points(fid.size), det.corners, cam.matrix, cam.distortion, flags=cv2.SOLVEPNP_IPPE_SQUARE
    )
    seeds = [(r, t) for r, t in zip(rvecs[:n], tvecs[:n], strict=True) if np.isfinite(r).all() and np.isfinite(t).all()]
    if not seeds:  # IPPE is degenerate on an exactly fronto-parallel square (NaN): a general solver then
        ok, r, t = cv2.solvePnP(
            corner_points(fid.size), det.corners, cam.matrix, cam.distortion, flags=cv2.SOLVEPNP_SQPNP
        )
        seeds = [(r, t)] if ok else []
    out = []
    for rvec, tvec in seeds:
        t_cam_obj = _to_transform(rvec, tvec) @ np.linalg.inv(marker_frame(fid))
        r, tv = cv2.Rodrigues(t_cam_obj[:3, :3])[0], t_cam_obj[:3, 3].copy()
        if len(detections) > 1:  # every corner of every seen face: the flip no longer fits
            r, tv = cv2.solvePnPRefineLM(obj, img, cam.matrix, cam.distortion, r, tv.reshape(3, 1))
        err = _reprojection(obj, img, r, tv, cam)
        if np.isfinite(err):
            out.append((_to_transform(r, tv), err))
    return sorted(out, key=lambda c: c[1])


# ------------------------------------------------------------------------------------------------------- fusion
@dataclass(frozen=True)
class View:
    """One camera's estimate of one object's pose in the base frame, and the correspondences it came from."""

    camera: CameraModel
    base_from_camera: np.ndarray  # (4, 4) at capture
    candidates: tuple[np.ndarray, ...]  # (4, 4) base <- object, best fitting first
    markers: int
    points: tuple[np.ndarray, np.ndarray]  # (N, 3) object-frame corners, (N, 2) pixels


def _residuals(views: Sequence[View], base_from_object: np.ndarray) -> np.ndarray:
    out = []
    for v in views:
        cam_from_obj = np.linalg.inv(v.base_from_camera) @ base_from_object
        rvec = cv2.Rodrigues(cam_from_obj[:3, :3])[0]
        proj, _ = cv2.projectPoints(v.points[0], rvec, cam_from_obj[:3, 3], v.camera.matrix, v.camera.distortion)
        out.append((proj.reshape(-1, 2) - v.points[1]).ravel())
    return np.concatenate(out)


def _perturb(pose: np.ndarray, x: np.ndarray) -> np.ndarray:
    t = pose.copy()
    t[:3, :3] = cv2.Rodrigues(x[:3])[0] @ pose[:3, :3]
    t[:3, 3] = pose[:3, 3] + x[3:]
    return t


def refine_jointly(views: Sequence[View], start: np.ndarray, iterations: int = 8) -> tuple[np.ndarray, float]:
    """The object pose minimising the reprojection error over every view's corners at once (Levenberg-Marquardt,
    numeric Jacobian): cameras that see the object from different sides pin down each other's depth. Returns the
    pose and its RMS reprojection error [px]."""
    pose, lam = start, 1e-3
    r = _residuals(views, pose)
    eps = np.array([1e-5] * 3 + [1e-6] * 3)
    for _ in range(iterations):
        jac = np.column_stack(
            [(_residuals(views, _perturb(pose, e)) - r) / h for e, h in zip(np.diag(eps), eps, strict=True)]
        )
        jtj, jtr = jac.T @ jac, jac.T @ r
        step = -np.linalg.solve(jtj + lam * np.diag(np.diag(jtj) + 1e-12), jtr)
        candidate = _perturb(pose, step)
        rc = _residuals(views, candidate)
        if rc @ rc < r @ r:
            pose, r, lam = candidate, rc, lam * 0.3
            if np.linalg.norm(step) < 1e-8:
                break
        else:
            lam *= 10.0
    return pose, float(np.sqrt(np.mean(r.reshape(-1, 2) ** 2) * 2))


def rotation_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Angle [rad] of the rotation between two rotation matrices."""
    return float(np.arccos(np.clip((np.trace(a.T @ b) - 1.0) / 2.0, -1.0, 1.0)))


def _rms(view: View, base_from_object: np.ndarray) -> float:
    return float(np.sqrt(2 * np.mean(_residuals([view], base_from_object) ** 2)))


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    """Position distance [m] plus 5 cm per radian of rotation between two poses."""
    return float(np.linalg.norm(a[:3, 3] - b[:3, 3]) + 0.05 * rotation_angle(a[:3, :3], b[:3, :3]))


def fuse(views: Sequence[View], previous: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, list[View]]:
    """(position, quaternion xyzw with w >= 0, views used) from one object's views.

    Every candidate of every view starts a joint fit over all views' corners; the best fit wins (cameras that see
    the object from different sides resolve each other's ambiguity). Fits within `TIE_PX` of the best are told
    apart by `previous` (the last pose: objects do not flip between frames). A view that still fits badly (a
    misdetection) is dropped and the fit redone."""
    fits = [refine_jointly(views, c) for v in views for c in v.candidates]
    best = min(r for _, r in fits)
    close = [p for p, r in fits if r <= best + TIE_PX]
    if previous is not None and len(close) > 1:
        pose = min(close, key=lambda p: _distance(p, previous))
    else:
        pose = min(fits, key=lambda f: f[1])[0]
    used = [v for v in views if _rms(v, pose) <= OUTLIER_PX]
    if used and len(used) < len(views):
        pose, _ = refine_jointly(used, pose)
    quat = matrix_to_quat(pose[:3, :3])
    return pose[:3, 3].copy(), quat if quat[3] >= 0 else -quat, used or list(views)


# ------------------------------------------------------------------------------------------------------ tracker
@dataclass(frozen=True)
class ObjectEstimate:
    pose: ObjectPose
    time: float  # capture time of the frames it was estimated from (the cameras' clock) [s]
    age_s: float  # how long ago, at the latest update
    lost: bool  # not seen for more than max_age_s
    cameras: tuple[str, ...] = ()  # the views fused at `time`
    markers: int = 0


@dataclass
class MarkerTracker:
    """Keeps every object's latest fused pose. `update` takes each camera's newest frame and its capture time."""

    objects: Sequence[SceneObject]
    cameras: Mapping[str, CameraModel]
    dictionary: str
    max_age_s: float = 0.5
    estimates: dict[str, ObjectEstimate] = field(default_factory=dict)

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

    def views(self, frames: Mapping[str, np.ndarray], base_from_tcp: np.ndarray | None = None) -> dict[str, list[View]]:
        out: dict[str, list[View]] = {}
        for cam_name, image in frames.items():
            cam = self.cameras[cam_name]
            if cam.parent == "tcp":
                if base_from_tcp is None:
                    raise MarkerError(f"camera {cam_name!r} is on the wrist: its views need the TCP pose")
                base_from_cam = base_from_tcp @ cam.parent_from_camera
            else:
                base_from_cam = cam.parent_from_camera
            per_object: dict[str, list[tuple[Detection, Fiducial]]] = {}
            for det in detect(image, self.detector):
                if det.marker_id in self.by_id:
                    name, fid = self.by_id[det.marker_id]
                    per_object.setdefault(name, []).append((det, fid))
            for name, dets in per_object.items():
                found = object_in_camera(dets, cam)
                if found:
                    candidates = tuple(base_from_cam @ t for t, _ in found)
                    out.setdefault(name, []).append(
                        View(cam, base_from_cam, candidates, len(dets), object_points(dets))
                    )
        return out

    def update(
        self, frames: Mapping[str, tuple[np.ndarray, float]], base_from_tcp: np.ndarray | None = None
    ) -> dict[str, ObjectEstimate]:
        """Detect, estimate and fuse; objects not seen keep their last pose, older by now (the newest capture)."""
        now = max(t for _, t in frames.values())
        capture = {name: t for name, (_, t) in frames.items()}
        for name, views in self.views({k: img for k, (img, _) in frames.items()}, base_from_tcp).items():
            last = self.estimates.get(name)
            previous = None
            if last is not None:
                previous = np.eye(4)
                previous[:3, :3], previous[:3, 3] = quat_to_matrix(last.pose.quat), last.pose.pos
            pos, quat, used = fuse(views, previous)
            seen = max(capture[v.camera.name] for v in used)
            cams = tuple(v.camera.name for v in used)
            self.estimates[name] = ObjectEstimate(
                ObjectPose(pos, quat), seen, 0.0, False, cams, sum(v.markers for v in used)
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
