"""The safety envelope: every action passes `apply_envelope` before it reaches the arm, in simulation and on the robot.

`apply_envelope` is a pure function of (proposed action, robot state, limits, control rate, previous gripper
command): no I/O, no hidden state, so sim and real runs, tests and dataset replays (`within_limits`) agree exactly.
It returns the action to execute (what learning uses), the `SafetyEvent`s that changed it, and whether the step is a
hold. Checks run in this order (the first four hold the arm and skip the rest):

1. shape: anything but 7 real numbers raises `SafetyShapeError` (a programming error, not a policy's choice).
2. state: a non-finite or malformed `RobotState`, or joint readings more than `IMPLAUSIBLE_JOINT_EXCESS` past their
   limits (a broken encoder: no motion computed from it can be trusted) -> hold (`non_finite_state`, `invalid_state`).
3. action: any NaN / inf -> hold (`non_finite`).
4. contact: external force at the TCP above `max_contact_force` -> hold (`contact_force`); the envelope never pushes
   harder into a contact (the driver stops the arm on its own reflexes too).
5. translation cap: ||d|| <= min(max_step, max_ee_speed / control_hz), direction kept (`max_step` / `max_ee_speed`).
6. rotation cap: ||rotvec|| <= max_rot_step, axis kept (`max_rot_step`).
7. workspace box on the target ee_pos + d (`workspace`; `outside_workspace` when the state is already outside).
8. orientation: tilt and yaw of the target orientation around `nominal_quat` (`orientation`).
9. joint margins: the step's predicted joint motion keeps every joint `joint_margin` from its limits
   (`joint_margin`).
10. gripper: clipped to [0, 1] (`gripper_range`), then rate limited against the previous command (`gripper_rate`).

Steps 8 and 9 only ever scale the motion down, towards zero motion, which always passes them; scaling keeps the
workspace guarantees of step 7 (the box is convex). A hold executes zero motion and keeps the gripper command.

`bound_reference` is the second half of the envelope, for drivers that accumulate the executed deltas on a
commanded reference which the arm tracks (the Franka driver): the *reference* stays inside the box and the
tilt/yaw limits, and within `max_ref_gap` / `max_ref_rot_gap` of the measured pose, so a stream of steps the arm
cannot follow never winds the target up beyond the envelope (docs/safety.md).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from inril_robot.core.geometry import matrix_to_quat, matrix_to_rotvec, quat_to_matrix, rotvec_to_matrix
from inril_robot.core.kinematics import JOINT_LIMITS, jacobian
from inril_robot.core.models import StrictModel, Vec3
from inril_robot.core.state import RobotState

ACTION_SHAPE = (7,)
#: every `SafetyEvent.limit` the envelope emits
LIMITS = (
    "non_finite_state",
    "invalid_state",
    "non_finite",
    "contact_force",
    "max_step",
    "max_ee_speed",
    "max_rot_step",
    "workspace",
    "outside_workspace",
    "orientation",
    "joint_margin",
    "gripper_range",
    "gripper_rate",
)
#: every `SafetyEvent.limit` `bound_reference` emits
REFERENCE_LIMITS = ("reference_gap", "reference_rot_gap", "reference_workspace", "reference_orientation")
GRIPPER_OPEN_WIDTH = 0.07  # [m] a Franka Hand at least this wide counts as open (it opens to 0.08 m)
IK_DAMPING = 0.05  # damped least squares for the joint-motion prediction (as the sim's IK)
IMPLAUSIBLE_JOINT_EXCESS = 1.0  # [rad] a joint reading this far past its limit is a sensor fault, not a pose
JOINT_TOL = 1e-6  # [rad] predicted joint motion towards a limit below this is noise, not motion
BISECTION_STEPS = 30  # scale resolution 1e-9
AT_CAP_RTOL = 1e-12  # a step this close to its cap counts as at the cap: rounding is not an event


# ----------------------------------------------------------------------------------------------------------- limits
class SafetyLimits(StrictModel):
    """The envelope every action passes before it reaches the arm (base frame, SI units)."""

    workspace_min: Vec3 = (0.25, -0.35, 0.02)
    workspace_max: Vec3 = (0.75, 0.35, 0.55)
    max_step: Annotated[float, Field(gt=0.0, le=0.05, description="max EE translation per control step [m]")] = 0.02
    max_rot_step: Annotated[float, Field(gt=0.0, le=0.5, description="max EE rotation per control step [rad]")] = 0.1
    max_ee_speed: Annotated[float, Field(gt=0.0, le=1.0, description="max EE linear speed [m/s]")] = 0.25
    nominal_quat: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)  # xyzw; tool z down, as at home
    max_tilt: Annotated[
        float, Field(gt=0.0, le=math.pi, description="max angle between the tool z axis and the nominal one [rad]")
    ] = 0.8
    max_yaw: Annotated[
        float, Field(gt=0.0, le=math.pi, description="max rotation about the nominal tool z axis [rad]; pi = any")
    ] = math.pi
    joint_margin: Annotated[float, Field(ge=0.0, le=0.5, description="keep joints this far from limits [rad]")] = 0.1
    max_contact_force: Annotated[float, Field(gt=0.0, le=150.0, description="stop above this EE force [N]")] = 30.0
    gripper_rate: Annotated[float, Field(gt=0.0, le=10.0, description="max gripper command change [1/s]")] = 5.0
    max_ref_gap: Annotated[
        float,
        Field(
            gt=0.0,
            le=0.1,
            description=("max distance between the commanded reference and the measured TCP position [m]"),
        ),
    ] = 0.03
    max_ref_rot_gap: Annotated[
        float,
        Field(
            gt=0.0,
            le=0.5,
            description=("max angle between the commanded reference and the measured TCP orientation [rad]"),
        ),
    ] = 0.1

    @field_validator("nominal_quat")
    @classmethod
    def _unit_quaternion(cls, q: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        norm = math.sqrt(sum(v * v for v in q))
        if not abs(norm - 1.0) <= 1e-3:  # also rejects NaN
            raise ValueError(f"nominal_quat must be a unit quaternion (xyzw), got norm {norm:.6g}")
        x, y, z, w = (v / norm for v in q)
        return (x, y, z, w)

    @model_validator(mode="after")
    def _box_is_ordered(self) -> SafetyLimits:
        for axis, lo, hi in zip("xyz", self.workspace_min, self.workspace_max, strict=True):
            if not lo < hi:
                raise ValueError(f"workspace_min.{axis}={lo} must be below workspace_max.{axis}={hi}")
        return self


class SafetyShapeError(ValueError):
    """The action is not 7 real numbers."""


@dataclass(frozen=True)
class SafetyEvent:
    """One limit that changed (or, from `within_limits`, was violated by) an action.

    `proposed` is the value the action asked for and `clipped` the value executed (or, from `within_limits`, the
    value found and the bound it broke). Scalars are floats, vectors tuples of floats.
    """

    limit: str
    proposed: float | tuple[float, ...]
    clipped: float | tuple[float, ...]
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        def plain(v: float | tuple[float, ...]) -> float | list[float]:
            return [float(x) for x in v] if isinstance(v, tuple) else float(v)

        return {
            "limit": self.limit,
            "proposed": plain(self.proposed),
            "clipped": plain(self.clipped),
            "detail": self.detail,
        }


@dataclass(frozen=True)
class EnvelopeResult:
    action: np.ndarray  # (7,) float64, the action to execute
    events: tuple[SafetyEvent, ...]  # empty when the action passed unchanged
    held: bool  # zero motion: invalid state, non-finite action or contact force

    @property
    def clipped(self) -> bool:
        return bool(self.events)


# ------------------------------------------------------------------------------------------------- the envelope
def apply_envelope(
    action: Any,
    state: RobotState,
    limits: SafetyLimits,
    *,
    control_hz: float,
    previous_gripper: float | None = None,
) -> EnvelopeResult:
    """The action to execute for a proposed `action` from `state`, and the events that changed it.

    Never raises for 7 real numbers (NaN, inf and 1e300 included) and any `state`; raises `SafetyShapeError`
    otherwise. Pass the previous step's executed gripper command as `previous_gripper` (None or non-finite: no
    rate limit on the first step).

    Hold: zero motion, gripper at `previous_gripper` (clipped to [0, 1]). Without a previous command the gripper
    is kept closed (1.0) unless the fingers are at least `GRIPPER_OPEN_WIDTH` apart (0.0): inferring "closed" from
    a narrow width only would open a gripper that is holding an object, and drop it.

    Workspace box, with p = state.ee_pos, d the capped translation and cap = min(max_step, max_ee_speed/control_hz):

    - p inside the box: the target is p + d clipped into the box (never longer than d).
    - p outside the box (event `outside_workspace`): the target is p + d clipped into the box if that is within cap
      of p; otherwise it is the nearest box point if that is within cap of p, otherwise the point cap along the
      straight line to the nearest box point. So the target is in the box whenever p is within cap of it, and
      otherwise the distance to the box shrinks by cap; the caps are never exceeded.

    Steps 8-9 may shorten the motion further: the target then lies between p and the target above, so it stays in
    the box (p inside) or no farther from it than p (p outside).
    """
    a = _as_action(action)
    if not (math.isfinite(control_hz) and control_hz > 0):
        raise ValueError(f"control_hz must be a positive number, got {control_hz!r}")
    prev = _finite_or_none(previous_gripper)

    hold_reason = _state_problem(state)
    if hold_reason is None and not np.all(np.isfinite(a)):
        bad = [i for i in range(7) if not math.isfinite(a[i])]
        hold_reason = SafetyEvent("non_finite", _floats(a), 0.0, f"action entries {bad} are not finite; holding")
    if hold_reason is None:
        force = _norm(np.asarray(state.ee_wrench, dtype=np.float64)[:3])
        if force > limits.max_contact_force:
            hold_reason = SafetyEvent(
                "contact_force",
                force,
                limits.max_contact_force,
                f"external force {force:.1f} N exceeds max_contact_force {limits.max_contact_force} N; holding",
            )
    if hold_reason is not None:
        return EnvelopeResult(hold_action(state, prev), (hold_reason,), held=True)

    events: list[SafetyEvent] = []
    cap, cap_name = translation_cap(limits, control_hz)
    d, norm = _scale_to(a[:3], cap)
    if _over(norm, cap):
        events.append(SafetyEvent(cap_name, norm, cap, f"translation {norm:.4g} m scaled to the {cap:.4g} m cap"))
    rv, angle = _scale_to(a[3:6], limits.max_rot_step)
    if _over(angle, limits.max_rot_step):
        events.append(
            SafetyEvent(
                "max_rot_step",
                angle,
                limits.max_rot_step,
                f"rotation {angle:.4g} rad scaled to the {limits.max_rot_step:.4g} rad cap",
            )
        )

    p = np.asarray(state.ee_pos, dtype=np.float64)
    d, box_event = _workspace(p, d, limits, cap)
    if box_event is not None:
        events.append(box_event)

    orient = _Orientation(limits, quat_to_matrix(state.ee_quat))
    if not orient.allows(rv):
        proposed = orient.tilt_yaw(rv)
        rv = rv * _bisect(lambda s: orient.allows(s * rv))
        events.append(SafetyEvent("orientation", proposed, orient.tilt_yaw(rv), orient.describe(proposed)))

    q = np.asarray(state.joint_pos, dtype=np.float64)
    dq = predict_joint_step(q, np.concatenate([d, rv]))
    scale, joint_events = _joint_scale(q, dq, limits.joint_margin)
    if joint_events:
        shortened = scale * rv
        if not orient.allows(shortened):  # the rotation arc can bulge outside the limit when shortened
            before = orient.tilt_yaw(shortened)
            scale *= _bisect(lambda s: orient.allows(s * shortened))
            events.append(SafetyEvent("orientation", before, orient.tilt_yaw(scale * rv), orient.describe(before)))
        d, rv = scale * d, scale * rv
        for j, full in joint_events:
            events.append(
                SafetyEvent(
                    "joint_margin",
                    full,
                    float(q[j] + scale * dq[j]),
                    f"joint {j + 1} would reach {full:.4f} rad, within {limits.joint_margin} rad of its limits "
                    f"[{JOINT_LIMITS[j, 0]}, {JOINT_LIMITS[j, 1]}]; step scaled by {scale:.3g}",
                )
            )

    g, gripper_events = _gripper(float(a[6]), prev, limits.gripper_rate / control_hz)
    events.extend(gripper_events)
    return EnvelopeResult(np.concatenate([d, rv, [g]]), tuple(events), held=False)


def hold_action(state: RobotState, previous_gripper: float | None = None) -> np.ndarray:
    """Zero motion, gripper kept (see `apply_envelope`)."""
    prev = _finite_or_none(previous_gripper)
    if prev is not None:
        gripper = min(max(prev, 0.0), 1.0)
    else:
        try:
            width = float(state.gripper_width)
        except (TypeError, ValueError):
            width = math.nan
        gripper = 0.0 if width >= GRIPPER_OPEN_WIDTH else 1.0  # NaN compares False: closed
    return np.array([0.0] * 6 + [gripper])


def translation_cap(limits: SafetyLimits, control_hz: float) -> tuple[float, str]:
    """The per-step translation cap [m] and the name of the limit that sets it."""
    speed_step = limits.max_ee_speed / control_hz
    if speed_step < limits.max_step:
        return speed_step, "max_ee_speed"
    return limits.max_step, "max_step"


def predict_joint_step(q: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Joint motion (7,) for a small TCP step [dx, dy, dz, rotvec] (6,) from joints `q`: damped pseudo-inverse."""
    jac = jacobian(q)
    return jac.T @ np.linalg.solve(jac @ jac.T + IK_DAMPING**2 * np.eye(6), step)


def tilt_yaw(rot: np.ndarray, nominal: np.ndarray) -> tuple[float, float]:
    """Tilt (angle between the tool z axes) and yaw (twist about the nominal tool z axis) of `rot` from `nominal`."""
    rel = nominal.T @ rot
    tilt = math.atan2(math.hypot(rel[0, 2], rel[1, 2]), rel[2, 2])
    quat = matrix_to_quat(rel)  # swing-twist: the twist about z is 2 atan2(z, w), with w >= 0
    return tilt, 2.0 * math.atan2(quat[2], quat[3])


def event_counts(events: Iterable[SafetyEvent]) -> dict[str, int]:
    """How often each limit fired, e.g. for an episode summary."""
    return dict(Counter(e.limit for e in events))


@dataclass(frozen=True)
class ReferenceResult:
    pose: np.ndarray  # (4, 4) the bounded reference, base frame
    events: tuple[SafetyEvent, ...]  # empty when the stepped reference passed unchanged


def bound_reference(
    reference: np.ndarray, measured: np.ndarray, step: np.ndarray, limits: SafetyLimits
) -> ReferenceResult:
    """The next commanded reference: `reference` (4x4) moved by an executed `step` [dx, dy, dz, rotvec] (translation
    added, rotation applied in the base frame), then bounded against the `measured` pose (4x4).

    Translation: pulled back along the line to the measured position to within `max_ref_gap`, then clipped into the
    workspace box. Both hold whenever the measured position is in the box (the projection onto a convex box never
    moves a point farther from a point inside it); from outside, the box wins.
    Rotation: always within max_tilt / max_yaw. From an anchor (the measured orientation, or, when the arm is beyond
    tilt/yaw, the nearest orientation inside on the geodesic to the nominal one), the point farthest along the
    geodesic to the stepped orientation that is inside the limits and within `max_ref_rot_gap` of the measured
    orientation (the gap holds whenever the measured orientation is inside the limits).
    """
    ref, meas = np.asarray(reference, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    step = np.asarray(step, dtype=np.float64)
    if (
        ref.shape != (4, 4)
        or meas.shape != (4, 4)
        or step.shape != (6,)
        or not (np.all(np.isfinite(ref)) and np.all(np.isfinite(meas)) and np.all(np.isfinite(step)))
    ):
        raise ValueError("bound_reference needs finite 4x4 reference and measured poses and a finite 6-D step")
    events: list[SafetyEvent] = []
    m_pos, m_rot = meas[:3, 3], meas[:3, :3]
    pos = ref[:3, 3] + step[:3]
    gap = _norm(pos - m_pos)
    if _over(gap, limits.max_ref_gap):
        pulled = m_pos + (pos - m_pos) * (limits.max_ref_gap / gap)
        events.append(
            SafetyEvent(
                "reference_gap",
                gap,
                limits.max_ref_gap,
                f"reference {gap:.4f} m from the measured position; pulled back to max_ref_gap {limits.max_ref_gap} m",
            )
        )
        pos = pulled
    lo, hi = np.array(limits.workspace_min), np.array(limits.workspace_max)
    boxed = np.clip(pos, lo, hi)
    if not np.array_equal(boxed, pos):
        events.append(
            SafetyEvent("reference_workspace", _floats(pos), _floats(boxed), "reference clipped into the workspace box")
        )
        pos = boxed

    stepped = rotvec_to_matrix(step[3:6]) @ ref[:3, :3]
    inside = _Orientation(limits, np.asarray(quat_to_matrix(limits.nominal_quat)))  # excess 0: strictly inside
    anchor, offset = m_rot, 0.0
    if not inside.allows_rot(m_rot):
        # the arm is beyond tilt/yaw (overshoot, or pushed): the reference starts from the nearest point inside on
        # the way to the nominal orientation
        to_nominal = matrix_to_rotvec(inside.nominal @ m_rot.T)
        s_in = _bisect(lambda s: inside.allows_rot(rotvec_to_matrix(s * to_nominal) @ m_rot), largest=False)
        anchor = rotvec_to_matrix(s_in * to_nominal) @ m_rot
        offset = s_in * _norm(to_nominal)
    arc = matrix_to_rotvec(stepped @ anchor.T)  # anchor -> stepped, base frame
    angle = _norm(arc)
    room = max(0.0, limits.max_ref_rot_gap - offset)
    scale = 1.0
    if _over(offset + angle, limits.max_ref_rot_gap):
        scale = room / angle if angle > 0 else 0.0
        events.append(
            SafetyEvent(
                "reference_rot_gap",
                angle + offset,
                limits.max_ref_rot_gap,
                f"reference {angle + offset:.4f} rad from the measured orientation; pulled back to "
                f"max_ref_rot_gap {limits.max_ref_rot_gap} rad",
            )
        )
    if offset > 0 or not inside.allows_rot(rotvec_to_matrix(scale * arc) @ anchor):
        proposed = tilt_yaw(stepped, inside.nominal)
        scale *= _bisect(lambda s: inside.allows_rot(rotvec_to_matrix(s * scale * arc) @ anchor))
        rot = rotvec_to_matrix(scale * arc) @ anchor
        events.append(
            SafetyEvent("reference_orientation", proposed, tilt_yaw(rot, inside.nominal), inside.describe(proposed))
        )
    rot = stepped if scale == 1.0 and offset == 0.0 else rotvec_to_matrix(scale * arc) @ anchor
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rot, pos
    return ReferenceResult(out, tuple(events))


def reference_violations(
    reference: np.ndarray, measured: np.ndarray, limits: SafetyLimits, *, tol: float = 1e-7
) -> list[str]:
    """What a commanded reference (4x4) breaks against the measured pose (4x4): the guarantees of `bound_reference`
    (box and tilt/yaw always; the translation gap while the measured position is in the box, the rotation gap while
    the measured orientation is inside tilt/yaw)."""
    ref, meas = np.asarray(reference, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    out = []
    lo, hi = np.array(limits.workspace_min), np.array(limits.workspace_max)
    if np.any(ref[:3, 3] < lo - tol) or np.any(ref[:3, 3] > hi + tol):
        out.append(f"reference position {_floats(ref[:3, 3])} outside the workspace box")
    inside = bool(np.all(meas[:3, 3] >= lo) and np.all(meas[:3, 3] <= hi))
    gap = _norm(ref[:3, 3] - meas[:3, 3])
    if inside and gap > limits.max_ref_gap + tol:
        out.append(f"reference {gap:.5f} m from the measured position > max_ref_gap {limits.max_ref_gap}")
    angle = _norm(matrix_to_rotvec(ref[:3, :3] @ meas[:3, :3].T))
    meas_excess = _Orientation(limits, meas[:3, :3]).start
    if meas_excess == (0.0, 0.0) and angle > limits.max_ref_rot_gap + tol:
        out.append(
            f"reference {angle:.5f} rad from the measured orientation > max_ref_rot_gap {limits.max_ref_rot_gap}"
        )
    orient = _Orientation(limits, quat_to_matrix(limits.nominal_quat))
    ref_excess = orient.excess(ref[:3, :3])
    if ref_excess[0] > tol or ref_excess[1] > tol:
        tilt, yaw = tilt_yaw(ref[:3, :3], orient.nominal)
        out.append(
            f"reference tilt {tilt:.4f} / yaw {yaw:.4f} rad beyond max_tilt {limits.max_tilt} / max_yaw "
            f"{limits.max_yaw}"
        )
    return out


# ---------------------------------------------------------------------------------------- replay / verification
def within_limits(
    executed_action: Any,
    state: RobotState,
    limits: SafetyLimits,
    control_hz: float,
    previous_gripper: float | None = None,
    *,
    rtol: float = 1e-9,
) -> list[SafetyEvent]:
    """Every limit an executed action breaks from `state` (empty: it lies inside the envelope). Nothing is clipped.

    A value passes when it is at most its bound + rtol * max(|bound|, 1), so actions exactly at a cap pass. The
    guarantees checked are those `apply_envelope` gives: caps, the box (from outside: never farther from it),
    orientation and joint-margin excess never growing, gripper range and rate, and zero motion on invalid states
    and contact. Actions stored as float32 need rtol of about 1e-6.
    """
    a = _as_action(executed_action)
    prev = _finite_or_none(previous_gripper)

    def over(value: float, bound: float) -> bool:
        return not value <= bound + rtol * max(abs(bound), 1.0)

    if not np.all(np.isfinite(a)):
        return [SafetyEvent("non_finite", _floats(a), 0.0, "executed action is not finite")]
    motion = _norm(a[:6])
    problem = _state_problem(state)
    if problem is not None:
        return [] if motion == 0 else [SafetyEvent(problem.limit, motion, 0.0, "moved from an invalid state")]
    force = _norm(np.asarray(state.ee_wrench, dtype=np.float64)[:3])
    if force > limits.max_contact_force and motion != 0:
        return [SafetyEvent("contact_force", force, limits.max_contact_force, "moved while over the force limit")]

    out: list[SafetyEvent] = []
    cap, cap_name = translation_cap(limits, control_hz)
    d, rv = a[:3], a[3:6]
    if over(_norm(d), cap):
        out.append(SafetyEvent(cap_name, _norm(d), cap, "translation above the per-step cap"))
    if over(_norm(rv), limits.max_rot_step):
        out.append(SafetyEvent("max_rot_step", _norm(rv), limits.max_rot_step, "rotation above the per-step cap"))

    p = np.asarray(state.ee_pos, dtype=np.float64)
    lo, hi = np.array(limits.workspace_min), np.array(limits.workspace_max)
    target = p + d
    start_out = _norm(p - np.clip(p, lo, hi))
    if start_out == 0:
        if any(over(lo[i], target[i]) or over(target[i], hi[i]) for i in range(3)):
            clipped = _floats(np.clip(target, lo, hi))
            out.append(SafetyEvent("workspace", _floats(target), clipped, "target outside the box"))
    else:
        end_out = _norm(target - np.clip(target, lo, hi))
        if over(end_out, start_out):
            out.append(SafetyEvent("outside_workspace", end_out, start_out, "moved farther from the box"))

    orient = _Orientation(limits, quat_to_matrix(state.ee_quat))
    if not orient.allows(rv, tol=rtol):
        out.append(
            SafetyEvent(
                "orientation",
                orient.tilt_yaw(rv),
                (limits.max_tilt, limits.max_yaw),
                orient.describe(orient.tilt_yaw(rv)),
            )
        )

    q = np.asarray(state.joint_pos, dtype=np.float64)
    q_next = q + predict_joint_step(q, np.concatenate([d, rv]))
    low = np.minimum(q, JOINT_LIMITS[:, 0] + limits.joint_margin) - JOINT_TOL
    high = np.maximum(q, JOINT_LIMITS[:, 1] - limits.joint_margin) + JOINT_TOL
    for j in range(7):
        if over(low[j], q_next[j]) or over(q_next[j], high[j]):
            bound = low[j] if q_next[j] < low[j] else high[j]
            out.append(SafetyEvent("joint_margin", float(q_next[j]), float(bound), f"joint {j + 1} into its margin"))

    g = float(a[6])
    if over(0.0, g) or over(g, 1.0):
        out.append(SafetyEvent("gripper_range", g, min(max(g, 0.0), 1.0), "gripper command outside [0, 1]"))
    if prev is not None:
        change = abs(g - min(max(prev, 0.0), 1.0))
        if over(change, limits.gripper_rate / control_hz):
            out.append(
                SafetyEvent(
                    "gripper_rate",
                    change,
                    limits.gripper_rate / control_hz,
                    "gripper command changed faster than gripper_rate",
                )
            )
    return out


# ------------------------------------------------------------------------------------------------------- helpers
def _as_action(action: Any) -> np.ndarray:
    try:
        arr = np.asarray(action)
    except (TypeError, ValueError) as e:  # ragged nested sequences
        raise SafetyShapeError(f"action must be 7 real numbers, shape {ACTION_SHAPE}; got {action!r} ({e})") from None
    if arr.dtype.kind not in "iuf":
        raise SafetyShapeError(
            f"action must be 7 real numbers, shape {ACTION_SHAPE}; got dtype {arr.dtype} with shape {arr.shape}"
        )
    if arr.shape != ACTION_SHAPE:
        raise SafetyShapeError(f"action must have shape {ACTION_SHAPE}; got shape {arr.shape}")
    return arr.astype(np.float64)


def _floats(v: np.ndarray) -> tuple[float, ...]:
    return tuple(float(x) for x in v)


def _finite_or_none(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _state_problem(state: RobotState) -> SafetyEvent | None:
    """A hold event when the state cannot be trusted (non-finite or malformed fields), else None."""
    fields = {
        "time": (),
        "ee_pos": (3,),
        "ee_quat": (4,),
        "ee_vel": (6,),
        "joint_pos": (7,),
        "joint_vel": (7,),
        "gripper_width": (),
        "ee_wrench": (6,),
    }
    for name, shape in fields.items():
        try:
            value = np.asarray(getattr(state, name), dtype=np.float64)
        except (AttributeError, TypeError, ValueError):
            return SafetyEvent("invalid_state", 0.0, 0.0, f"state.{name} is missing or not numeric; holding")
        if value.shape != shape:
            return SafetyEvent(
                "invalid_state", 0.0, 0.0, f"state.{name} has shape {value.shape}, expected {shape}; holding"
            )
        if not np.all(np.isfinite(value)):
            shown = _floats(value.ravel()) if value.ndim else float(value)
            return SafetyEvent("non_finite_state", shown, 0.0, f"state.{name} is not finite; holding")
    if _norm(np.asarray(state.ee_quat, dtype=np.float64)) == 0:
        return SafetyEvent("invalid_state", 0.0, 0.0, "state.ee_quat is the zero quaternion; holding")
    q = np.asarray(state.joint_pos, dtype=np.float64)
    excess = np.maximum(JOINT_LIMITS[:, 0] - q, q - JOINT_LIMITS[:, 1])
    if np.any(excess > IMPLAUSIBLE_JOINT_EXCESS):
        j = int(np.argmax(excess))
        return SafetyEvent(
            "invalid_state",
            float(q[j]),
            float(JOINT_LIMITS[j, int(q[j] > 0)]),
            f"joint {j + 1} reads {q[j]:.6g} rad, {excess[j]:.3g} rad past its limit: a sensor fault; holding",
        )
    return None


def _norm(v: np.ndarray) -> float:
    """Euclidean norm without overflow for huge entries (inf only when the norm itself exceeds float range)."""
    m = float(np.max(np.abs(v))) if v.size else 0.0
    if m == 0.0:
        return 0.0
    return m * float(np.linalg.norm(v / m))


def _over(value: float, cap: float) -> bool:
    return value > cap * (1.0 + AT_CAP_RTOL)


def _scale_to(v: np.ndarray, cap: float) -> tuple[np.ndarray, float]:
    """`v` shortened to length `cap` if longer (direction kept), and its original length."""
    m = float(np.max(np.abs(v)))
    if m == 0.0:
        return np.zeros_like(v), 0.0
    unit = v / m
    unit_norm = float(np.linalg.norm(unit))  # in [1, sqrt(3)]: no overflow
    norm = m * unit_norm
    if not _over(norm, cap):
        return v.copy(), norm
    return unit * (cap / unit_norm), norm


def _workspace(p: np.ndarray, d: np.ndarray, limits: SafetyLimits, cap: float) -> tuple[np.ndarray, SafetyEvent | None]:
    lo, hi = np.array(limits.workspace_min), np.array(limits.workspace_max)
    proposed = p + d
    clipped = np.clip(proposed, lo, hi)
    nearest = np.clip(p, lo, hi)
    outside = _norm(p - nearest)
    if outside == 0.0:
        if np.array_equal(clipped, proposed):
            return d, None
        return clipped - p, SafetyEvent(
            "workspace", _floats(proposed), _floats(clipped), "target clipped into the workspace box"
        )
    step = clipped - p
    if _over(_norm(step), cap):
        step = nearest - p if not _over(outside, cap) else _scale_to(nearest - p, cap)[0]
    detail = f"state is {outside:.4g} m outside the workspace box; moving only into or towards it"
    return step, SafetyEvent("outside_workspace", _floats(proposed), _floats(p + step), detail)


class _Orientation:
    """Tilt and yaw limits around the nominal orientation, relative to the current orientation's excess over them.

    A rotation is allowed when it does not increase the excess over either limit: from inside the limits the target
    must be inside; from beyond them (the state already violates) only rotations that do not make it worse pass.
    """

    def __init__(self, limits: SafetyLimits, current: np.ndarray) -> None:
        self.limits = limits
        self.nominal = quat_to_matrix(limits.nominal_quat)
        self.current = current
        self.start = self.excess(current)

    def excess(self, rot: np.ndarray) -> tuple[float, float]:
        tilt, yaw = tilt_yaw(rot, self.nominal)
        return max(0.0, tilt - self.limits.max_tilt), max(0.0, abs(yaw) - self.limits.max_yaw)

    def tilt_yaw(self, rv: np.ndarray) -> tuple[float, float]:
        return tilt_yaw(rotvec_to_matrix(rv) @ self.current, self.nominal)

    def allows_rot(self, rot: np.ndarray) -> bool:
        """`rot` (3x3) is no farther beyond the limits than the current orientation."""
        tilt_excess, yaw_excess = self.excess(rot)
        return tilt_excess <= self.start[0] and yaw_excess <= self.start[1]

    def allows(self, rv: np.ndarray, tol: float = 0.0) -> bool:
        tilt_excess, yaw_excess = self.excess(rotvec_to_matrix(rv) @ self.current)
        return tilt_excess <= self.start[0] + tol * max(self.limits.max_tilt, 1.0) and (
            yaw_excess <= self.start[1] + tol * max(self.limits.max_yaw, 1.0)
        )

    def describe(self, angles: tuple[float, float]) -> str:
        tilt, yaw = angles
        return (
            f"target tilt {tilt:.3f} rad / yaw {yaw:.3f} rad against max_tilt {self.limits.max_tilt} / max_yaw "
            f"{self.limits.max_yaw:.3f}; rotation shortened"
        )


def _bisect(ok: Any, largest: bool = True) -> float:
    """By bisection: the largest scale in [0, 1] with ok(scale) true (ok(0) must hold), or with largest=False the
    smallest (ok(1) must hold); the returned scale is always on the true side."""
    lo, hi = 0.0, 1.0
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if ok(mid) == largest:
            lo = mid
        else:
            hi = mid
    return lo if largest else hi


def _joint_scale(q: np.ndarray, dq: np.ndarray, margin: float) -> tuple[float, list[tuple[int, float]]]:
    """Largest scale s in [0, 1] keeping q + s dq out of the margins (or, already inside, not deeper); the joints
    that the full step would have pushed in, with their predicted positions."""
    low = np.minimum(q, JOINT_LIMITS[:, 0] + margin)
    high = np.maximum(q, JOINT_LIMITS[:, 1] - margin)
    q_next = q + dq
    scale, hits = 1.0, []
    for j in range(7):
        if q_next[j] < low[j] and dq[j] < -JOINT_TOL:
            scale = min(scale, (low[j] - q[j]) / dq[j])
        elif q_next[j] > high[j] and dq[j] > JOINT_TOL:
            scale = min(scale, (high[j] - q[j]) / dq[j])
        else:
            continue
        hits.append((j, float(q_next[j])))
    return max(0.0, scale), hits


def _gripper(g: float, prev: float | None, max_change: float) -> tuple[float, list[SafetyEvent]]:
    events = []
    clipped = min(max(g, 0.0), 1.0)
    if clipped != g:
        events.append(SafetyEvent("gripper_range", g, clipped, "gripper command clipped to [0, 1]"))
    if prev is not None:
        prev = min(max(prev, 0.0), 1.0)
        limited = min(max(clipped, prev - max_change), prev + max_change)
        if limited != clipped:
            events.append(
                SafetyEvent(
                    "gripper_rate", clipped, limited, f"gripper command change limited to {max_change:.3g} per step"
                )
            )
        clipped = limited
    return clipped, events
