"""Task definitions: scene objects, initial-state distributions, success/reward, scripted experts."""

from __future__ import annotations

from inril_robot.config import TaskConfig
from inril_robot.tasks.base import Task
from inril_robot.tasks.lift import Lift
from inril_robot.tasks.peg import Peg
from inril_robot.tasks.push import Push
from inril_robot.tasks.reach import Reach

TASKS: dict[str, type[Task]] = {"reach": Reach, "lift": Lift, "push": Push, "peg": Peg}


def make_task(cfg: TaskConfig) -> Task:
    return TASKS[cfg.name](cfg)
