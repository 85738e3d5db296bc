"""What a real cell provides (issue 19): the rules of the real-like sim mode (``--set cell=real-like``).

A real cell has cameras, proprioception, perhaps fiducial-marker poses, an operator, and (once trained) a success
detector. It has no simulator state. In the real-like mode the simulator still runs the physics, places the objects
at each reset (the scripted stand-in for the person who resets the scene) and drives the scripted teleop (the stand-in
for the person who demonstrates), but nothing it knows reaches the policy, the dataset or the bridge:

- observations: the task's privileged keys (`Task.privileged_keys`: object state read from the simulator) are not in
  the contract and never observed; `task.observation=state` is refused unless a real pose source provides them;
- reward and success (`reward.source`, the one setting for every cell): from the operator's verdict (in simulation a
  scripted operator who judges as a person watching would, the same keep key the real cell has) or from a success
  detector, a callable on the observation (what the policy sees: images and proprioception) returning a success
  probability; the simulator's own check (`sim`) and dense rewards need object state and are refused.

numpy only: this runs on the robot PC. A learned detector (torch) runs on the server, or is injected as a callable.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from inril_robot.config import RunConfig
from inril_robot.core.errors import InrilError
from inril_robot.core.state import RobotState

if TYPE_CHECKING:
    from inril_robot.hardware.scene import Objects
    from inril_robot.tasks.base import Task

#: obs -> probability that the task has succeeded (the observation holds only what the cell provides)
SuccessDetector = Callable[[dict[str, np.ndarray]], float]


class CellError(ValueError, InrilError):
    """A setting that needs what the configured cell does not provide (names the setting and the fix)."""


def real_like(cfg: RunConfig) -> bool:
    return cfg.cell.mode == "real-like"


def check_cell(cfg: RunConfig, task: Task, object_state_source: bool = False) -> None:
    """Refuse, naming the fix, what a real-like cell cannot provide. `object_state_source`: a real pose source
    (fiducial markers) supplies the task's object keys."""
    if not real_like(cfg):
        return
    if cfg.task.observation == "state" and not object_state_source:
        raise CellError(
            f"cell=real-like: task.observation=state reads {task.name}'s privileged simulator state "
            f"({', '.join(sorted(task.privileged_keys))}), which a real cell does not have; use "
            "task.observation=image (with cameras) or a marker pose source"
        )
    if cfg.task.reward == "dense":
        raise CellError("cell=real-like: task.reward=dense is shaped from object state; use task.reward=sparse")


#: the factory that loads a trained detector's file (torch: the server side; named, not imported, from this layer)
TRAINED_DETECTOR_FACTORY = "inril_robot.learning.policies.success:detector_for_config"


def load_detector(cfg: RunConfig) -> SuccessDetector:
    """`reward.detector`: a trained detector's file (`detector train`), or 'package.module:factory' where
    factory(cfg) returns the detector callable."""
    spec = cfg.reward.detector or ""
    module_name, sep, attr = spec.partition(":")
    if not sep or "/" in module_name or module_name.endswith(".pt"):  # a file
        if not spec or not Path(spec).is_file():
            raise CellError(
                f"reward.detector {spec!r} is neither a detector file (`inril-robot detector train`) nor "
                "'package.module:factory'"
            )
        module_name, _, attr = TRAINED_DETECTOR_FACTORY.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise CellError(f"reward.detector {spec!r} cannot be loaded: {e}") from None
    return factory(cfg)


class SuccessSource:
    """Success and reward of one step, from `reward.source`: the simulator (`sim`: the task's reward), the operator
    (`operator`: in simulation the scripted operator's verdict, sparse; on a robot the keys, in the agent) or a
    success detector on the observation (`detector`, sparse)."""

    def __init__(self, cfg: RunConfig, task: Task, detector: SuccessDetector | None = None) -> None:
        self.cfg, self.task = cfg, task
        self.kind = cfg.reward.source or ("operator" if real_like(cfg) else "sim")
        self.detector = detector
        if self.kind == "detector" and detector is None:
            self.detector = load_detector(cfg)
        self.last_probability: float | None = None
        # an explicit reward.threshold wins; else the detector's own (chosen for precision when it was trained)
        own = getattr(self.detector, "threshold", None)
        self.threshold = cfg.reward.threshold or (float(own) if own is not None else 0.5)

    def __call__(self, obs: dict[str, np.ndarray], state: RobotState, objects: Objects | None) -> tuple[bool, float]:
        """(success, reward). `objects` is the simulator's truth (None on a real robot): only the simulator and the
        scripted operator read it; the detector sees `obs` alone."""
        if self.kind == "detector":
            assert self.detector is not None
            self.last_probability = float(self.detector(obs))
            success = self.last_probability >= self.threshold
            return success, float(success)
        if objects is None:  # a real robot: the operator's keys decide, in the agent
            return False, 0.0
        success = bool(self.task.success(state, objects))
        return success, self.task.reward(state, objects) if self.kind == "sim" else float(success)
