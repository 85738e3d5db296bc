"""The scene as drivers and tasks share it: declarative objects (`SceneObject`) and their poses as plain arrays.

A simulator builds bodies from these; a real cell reports poses in the same form (from markers or a mocap system),
so task code reads object poses without knowing where they came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

TABLE_TOP_Z = 0.0  # the table surface is the z = 0 plane of the base frame


@dataclass(frozen=True)
class Geom:
    shape: Literal["box", "cylinder", "sphere"]
    size: tuple[float, ...]  # MuJoCo half-sizes
    pos: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rgba: tuple[float, float, float, float] = (0.8, 0.2, 0.2, 1.0)
    collides: bool = True


@dataclass(frozen=True)
class SceneObject:
    """A body the task places. `movable` bodies have a free joint; others are placed kinematically (mocap)."""

    name: str
    geoms: tuple[Geom, ...]
    movable: bool = True
    mass: float = 0.1
    friction: float = 1.0


@dataclass(frozen=True)
class ObjectPose:
    pos: np.ndarray  # (3,)
    quat: np.ndarray  # (4,) xyzw

    @staticmethod
    def at(x: float, y: float, z: float, yaw: float = 0.0) -> ObjectPose:
        return ObjectPose(np.array([x, y, z]), np.array([0.0, 0.0, np.sin(yaw / 2), np.cos(yaw / 2)]))


Objects = dict[str, ObjectPose]
