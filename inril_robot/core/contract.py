"""The action/observation contract: what every driver, dataset, checkpoint and wire message agrees on.

Conventions (checked here, at every boundary, never assumed):
- SI units; positions and orientations in the robot base frame.
- Quaternions are xyzw (scipy order); drivers convert at their edge.
- The default action is a delta end-effector pose per control step: (dx, dy, dz) in metres, a 3-D rotation vector
  in radians applied in the base frame (R_target = exp(rotvec) @ R_current), and an absolute gripper command in
  [0, 1] where 0 is fully open and 1 is closed.
- Images are uint8 HxWx3 RGB, one observation key per camera: ``<camera>_rgb``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from inril_robot.core.errors import InrilError

SCHEMA_VERSION = 1

ActionType = Literal["delta_ee_pose", "abs_ee_pose", "joint_position"]


class ContractMismatch(ValueError, InrilError):
    """Two contracts (or a contract and a value) disagree. `field` names the first disagreeing field."""

    def __init__(self, field: str, expected: Any, got: Any, context: str = "", more: list[str] | None = None) -> None:
        self.field, self.expected, self.got = field, expected, got
        where = f" ({context})" if context else ""
        msg = f"contract mismatch on {field}{where}: expected {expected!r}, got {got!r}"
        if more:
            msg += "; also: " + "; ".join(more)
        super().__init__(msg)


class ObsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    shape: tuple[int, ...]
    dtype: Literal["float32", "float64", "uint8", "int64", "bool"]
    # [low, high] every element must lie in (physically absurd beyond: metres, unit quaternions); None: any finite
    range: tuple[float, float] | None = None


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    action_type: ActionType = "delta_ee_pose"
    action_dim: int = 7
    frame: Literal["base"] = "base"
    rotation_repr: Literal["rotvec", "quat", "rot6d"] = "rotvec"
    quat_order: Literal["xyzw"] = "xyzw"
    gripper: Literal["absolute_0open_1closed"] = "absolute_0open_1closed"
    control_hz: float = Field(10.0, gt=0)
    horizon: int = Field(1, ge=1, description="action chunk length predicted")
    act_steps: int = Field(1, ge=1, description="steps of each chunk executed")
    observations: dict[str, ObsSpec] = Field(default_factory=dict)
    cameras: dict[str, tuple[int, int]] = Field(default_factory=dict, description="name -> (height, width)")
    reward_range: tuple[float, float] | None = Field(None, description="[low, high] of one step's reward (the task's)")

    # -------------------------------------------------------------------------------------------- comparisons
    def mismatches(
        self, other: Contract, ignore: tuple[str, ...] = (), compare: tuple[str, ...] = ()
    ) -> list[tuple[str, Any, Any]]:
        """Every (field, ours, theirs) that differs; observation specs are compared key by key. `reward_range` only
        when named in `compare` and declared by both."""
        out: list[tuple[str, Any, Any]] = []
        for name in type(self).model_fields:
            if name in ignore:
                continue
            ours, theirs = getattr(self, name), getattr(other, name)
            if name == "observations":
                for key in sorted(set(ours) | set(theirs)):
                    a, b = ours.get(key), theirs.get(key)
                    if a is None or b is None:
                        out.append((f"observations.{key}", _spec_text(a), _spec_text(b)))
                    elif a != b:
                        for sub in ("shape", "dtype"):
                            if getattr(a, sub) != getattr(b, sub):
                                out.append((f"observations.{key}.{sub}", getattr(a, sub), getattr(b, sub)))
            elif name == "reward_range" and (ours is None or theirs is None or "reward_range" not in compare):
                continue  # not part of the observation/action interface; compared where rewards cross (the bridge)
            elif ours != theirs:
                out.append((name, ours, theirs))
        return out

    def require_match(
        self, other: Contract, context: str = "", ignore: tuple[str, ...] = (), compare: tuple[str, ...] = ()
    ) -> None:
        """Raise `ContractMismatch` naming the first differing field (and listing the rest) unless compatible."""
        diffs = self.mismatches(other, ignore, compare)
        if diffs:
            field, expected, got = diffs[0]
            more = [f"{f}: expected {e!r}, got {g!r}" for f, e, g in diffs[1:]]
            raise ContractMismatch(field, expected, got, context, more)

    # ------------------------------------------------------------------------------------------- value checks
    def check_observation(self, obs: dict[str, Any]) -> None:
        missing = sorted(set(self.observations) - set(obs))
        if missing:
            raise ContractMismatch(f"observations.{missing[0]}", "present", "missing", "observation")
        for key, spec in self.observations.items():
            value = np.asarray(obs[key])
            if tuple(value.shape) != spec.shape:
                raise ContractMismatch(f"observations.{key}.shape", spec.shape, tuple(value.shape), "observation")
            if value.dtype != np.dtype(spec.dtype):
                raise ContractMismatch(f"observations.{key}.dtype", spec.dtype, str(value.dtype), "observation")

    def value_problem(self, key: str, value: np.ndarray) -> str | None:
        """Why the values of observation `key` are unusable (non-finite, or outside the declared range), or None."""
        spec = self.observations[key]
        if value.dtype.kind != "f" and spec.range is None:
            return None
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return f"observation {key!r} holds non-finite values (NaN or inf)"
        if spec.range is not None:
            low, high = spec.range
            if value.size and (value.min() < low or value.max() > high):
                return (
                    f"observation {key!r} leaves its declared range [{low:g}, {high:g}] "
                    f"(min {float(value.min()):.6g}, max {float(value.max()):.6g})"
                )
        return None

    def reward_problem(self, rewards: np.ndarray) -> str | None:
        """Why these per-step rewards are unusable (non-finite, outside `reward_range`), or None."""
        if not np.isfinite(rewards).all():
            return "rewards hold non-finite values (NaN or inf)"
        if self.reward_range is not None and rewards.size:
            low, high = self.reward_range
            if rewards.min() < low or rewards.max() > high:
                return (
                    f"rewards leave the task's declared range [{low:g}, {high:g}] "
                    f"(min {float(rewards.min()):.6g}, max {float(rewards.max()):.6g})"
                )
        return None

    def check_action(self, action: Any) -> np.ndarray:
        """Return the action as float64 of shape (action_dim,), or raise naming what is wrong with it."""
        arr = np.asarray(action, dtype=np.float64)
        if arr.shape != (self.action_dim,):
            raise ContractMismatch("action_dim", (self.action_dim,), tuple(arr.shape), "action")
        return arr

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> Contract:
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ContractMismatch("schema_version", SCHEMA_VERSION, version, "stored contract")
        return cls.model_validate(data)


def _spec_text(spec: ObsSpec | None) -> str:
    return "absent" if spec is None else f"{spec.dtype}{list(spec.shape)}"


def image_key(camera: str) -> str:
    return f"{camera}_rgb"
