"""Strict pydantic models and the messages their validation errors become: every field named with its allowed range.

Shared by the run configuration (`inril_robot.config`), the safety limits and the calibration file, so a wrong value
reads the same wherever it is found.
"""

from __future__ import annotations

from typing import Any, Literal

import annotated_types as at
from pydantic import BaseModel, ConfigDict, ValidationError

Vec3 = tuple[float, float, float]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def format_validation_error(error: ValidationError, model: type[BaseModel]) -> str:
    lines = []
    for err in error.errors():
        loc = [str(p) for p in err["loc"]]
        field = ".".join(loc) or "<root>"
        if err["type"] == "extra_forbidden":
            parent = ".".join(loc[:-1])
            known = _known_fields(model, err["loc"][:-1])
            where = f" in {parent}" if parent else ""
            lines.append(f"unknown setting {field!r}{where}; known settings: {', '.join(known)}")
            continue
        allowed = describe_allowed(model, err["loc"])
        got = err.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        hint = f"; allowed: {allowed}" if allowed else ""
        lines.append(f"{field}: {err['msg']}{got_text}{hint}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _field_info(model: type[BaseModel], loc: tuple[Any, ...]) -> Any:
    """Walk a validation error location down the model tree; return the FieldInfo of the leaf, or None."""
    current: Any = model
    info = None
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return info if part in {"tuple", "list"} else None
        info = current.model_fields[part]
        current = _inner_model(info.annotation)
    return info


def _inner_model(annotation: Any) -> Any:
    args = getattr(annotation, "__args__", ())
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in args:
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def _known_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return []
        current = _inner_model(current.model_fields[part].annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def describe_allowed(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """Human-readable allowed range/choices of the field at `loc` ("0 < x <= 0.05", "one of 'sim', 'franka')."""
    info = _field_info(model, loc)
    if info is None:
        return ""
    lower = upper = ""
    for meta in info.metadata:
        if isinstance(meta, at.Gt):
            lower = f"{meta.gt} < x"
        elif isinstance(meta, at.Ge):
            lower = f"{meta.ge} <= x"
        elif isinstance(meta, at.Lt):
            upper = f"x < {meta.lt}"
        elif isinstance(meta, at.Le):
            upper = f"x <= {meta.le}"
    if lower or upper:
        text = lower + (upper[1:] if lower and upper else upper)
        return text + (f" ({info.description})" if info.description else "")
    choices = getattr(info.annotation, "__args__", None)
    if getattr(info.annotation, "__origin__", None) is Literal and choices:
        return "one of " + ", ".join(repr(c) for c in choices)
    return info.description or ""
