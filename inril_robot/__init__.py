"""inril-robot: deploy and fine-tune Franka robot-arm policies with IN-RIL, in simulation and on the real robot.

Importing the package registers the Gymnasium ids ``inril_robot/{Reach,Lift,Push,Peg}-v0``. That imports
gymnasium and the (numpy/pydantic) core only: MuJoCo and the drivers load when an environment is made.
"""

from __future__ import annotations

__version__ = "0.1.0"


def _register_gym_envs() -> None:
    try:
        from inril_robot.runtime.gym_env import register_envs
    except ImportError:  # a broken install: `inril-robot doctor` must still import the package to report it
        return
    register_envs()


_register_gym_envs()
