"""Teleop commands as contract actions, and the operator state that human teleops latch between reads.

The devices themselves live in `drivers` (scripted, keyboard, spacemouse) and are found through
`inril_robot.runtime.registry.make_teleop`; this module is what the collect loop needs from them, without importing any.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inril_robot.hardware import TeleopCommand


def command_to_action(cmd: TeleopCommand, previous_gripper: float) -> np.ndarray:
    """The 7-D delta-EE contract action of a teleop command; a gripper of None keeps `previous_gripper`."""
    delta_pos = np.asarray(cmd.delta_pos, dtype=np.float64)
    delta_rot = np.asarray(cmd.delta_rot, dtype=np.float64)
    if delta_pos.shape != (3,) or delta_rot.shape != (3,):
        raise ValueError(
            f"teleop command needs delta_pos and delta_rot of shape (3,), got {delta_pos.shape} and {delta_rot.shape}"
        )
    gripper = previous_gripper if cmd.gripper is None else cmd.gripper
    return np.concatenate([delta_pos, delta_rot, [float(gripper)]])


@dataclass
class OperatorToggles:
    """The gripper target and intervention flag a human teleop toggles, latched between reads.

    Once the operator has toggled the gripper, its target is reported on every read, not only on the read where it
    changed: the safety envelope rate-limits gripper changes, so a one-shot command would leave the gripper half-way
    (the collect loop carries the *executed* gripper forward when a command's gripper is None). Both reset when the
    operator keeps or discards an episode: the next one starts from home, gripper open, robot in control.
    """

    gripper: float | None = None  # None: never toggled since the last reset
    intervene: bool = False

    def toggle_gripper(self) -> None:
        closed = self.gripper is not None and self.gripper >= 0.5
        self.gripper = 0.0 if closed else 1.0

    def toggle_intervene(self) -> None:
        self.intervene = not self.intervene

    def reset(self) -> None:
        self.gripper = None
        self.intervene = False
