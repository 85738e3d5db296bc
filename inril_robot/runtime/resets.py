"""The reset phase between episodes, the same for collect, the robot agent and eval on the arm, in sim and on a cell.

In order (each stage is logged in `ResetPhase.log`, and the episode store records the log with the episode):

1. ``open``: the gripper opens where the arm stands (it may hold the object), at the envelope's gripper rate;
2. ``retreat``: the arm rises straight up to the home height plus `task.reset.retreat_height` (clear of the scene),
   then homes (`robot.home()`);
3. ``operator``: the operator resets the scene; the teleop moves the arm meanwhile (through the envelope, one paced
   tick per control period, nothing recorded); the keep key ends the stage. In simulation the stage is scripted
   (`scripted_operator`, default: nothing to do, the simulator places the objects at `env.reset`);
4. ``scripted``: the task's scripted reset, when one is given (a callable on the loop);
5. ``home``: `env.reset(seed)` homes the arm (and, in simulation, places the seeded scene);
6. ``start``: a randomised start pose, home + uniform offsets in `task.reset.start_xyz` / `start_yaw` drawn from the
   episode's seeded generator (skipped when the ranges are zero);
7. ``confirm``: the operator's keep starts the episode (automatic in simulation).

The first episode skips 1-2 (the arm is homed first). After an episode that stopped the arm (a contact-force stop),
1-2 are replaced by ``recover``: the stopped arm takes no motion command, so it is homed (`robot.home()` clears the
stop and opens the gripper) once the operator confirms. `heartbeat` is called all along (the loop's `beat`), so a
policy server never drops a robot whose operator is resetting. An e-stop in any stage stops the arm and raises.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inril_robot.core.geometry import quat_to_matrix, rotvec_to_matrix
from inril_robot.hardware.teleop import command_to_action
from inril_robot.runtime.loop import POLL_S, ControlLoop
from inril_robot.runtime.shadow import ShadowRobot

GRIPPER_OPEN = 0.0  # the contract's gripper command for open (home() opens it too)
SETTLE_TICKS = 2  # hold ticks after the gripper command reached open, for the fingers to follow


@dataclass
class ResetPhase:
    loop: ControlLoop
    say: Callable[[str], None] = lambda _: None
    operator: bool = True  # a person resets the scene (False: simulation, `scripted_operator` does)
    scripted_operator: Callable[[ControlLoop], None] | None = None
    scripted_reset: Callable[[ControlLoop], None] | None = None
    log: list[dict[str, Any]] = field(default_factory=list)
    _home: np.ndarray | None = None
    _started: bool = False

    def run(self, seed: int | None, index: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Stages 1-7 for episode `index`; returns the episode's first observation and info (as `env.reset`)."""
        self.log = []
        env, loop = self.loop.env, self.loop
        # a new paced phase: what ran since the episode's last tick (its end, its storage) and every motion that is
        # not paced (robot.home(), env.reset) are not late control ticks, and are never caught up on
        loop.scheduler.restart()
        moves = not isinstance(env.robot, ShadowRobot)  # in shadow mode the arm holds: nothing to move or wait for
        stopped = env.stopped or env.robot.stopped  # the env's contact-force stop, or the driver's own (stop(), reflex)
        if self._started and moves and stopped is not None:
            self._recover(stopped)
        elif self._started and moves:
            self._open()
            self._retreat()
        else:
            self._begin(*env.reset(seed=seed), "homed")
        self._started = True
        self._operator(index)
        if self.scripted_reset is not None:
            self._mark("scripted")
            self.scripted_reset(loop)
        obs, info = env.reset(seed=seed)
        self._begin(obs, info, "homed")  # a fresh schedule (`loop.begin`)
        self._mark("home", pos=info["state"].ee_pos.tolist())
        self._home = info["state"].ee_pos.copy()
        if moves:
            obs, info = self._start(obs, info)
        if self.operator:
            self._mark("confirm")
            self.loop.confirm(self.say, f"episode {index}: the arm is at its start pose; confirm to start")
        else:
            self._mark("confirm", by="scripted (simulation)")
        loop.beat(force=True)
        return obs, info

    # ------------------------------------------------------------------------------------------------ stages
    def _open(self) -> None:
        loop = self.loop
        self._mark("open", gripper_from=loop.gripper)
        loop.replace_obs(loop.env.observe())  # the arm may have been homed since the last step (a fault recovery)
        max_ticks = int(np.ceil(loop.env.cfg.robot.control_hz / loop.env.cfg.safety.gripper_rate)) + 2
        for _ in range(max_ticks):
            if loop.gripper <= GRIPPER_OPEN + 1e-9:
                break
            loop.step(np.array([0, 0, 0, 0, 0, 0, GRIPPER_OPEN], dtype=np.float64), motion=True)
            loop.beat()
        for _ in range(SETTLE_TICKS):
            loop.hold_step()
            loop.beat()
        self.log[-1]["gripper_to"] = loop.gripper

    def _recover(self, reason: str) -> None:
        """The last episode stopped the arm (a contact-force stop): it takes no motion command, so there is no open
        or retreat; `robot.home()` clears the stop, opens the gripper and homes, after a person checked the cell."""
        self._mark("recover", reason=reason)
        if self.operator:
            self.loop.confirm(self.say, f"the arm was stopped ({reason}); check the cell, then confirm to home it")
        self.loop.env.robot.home()
        self.loop.scheduler.restart()
        self.loop.beat(force=True)

    def _retreat(self) -> None:
        loop = self.loop
        state = loop.state
        self._mark("retreat", z_from=float(state.ee_pos[2]))
        home_z = self._home[2] if self._home is not None else state.ee_pos[2]
        ceiling = loop.env.cfg.safety.workspace_max[2] - 0.01
        target = state.ee_pos.copy()
        target[2] = max(state.ee_pos[2], min(home_z + loop.env.cfg.task.reset.retreat_height, ceiling))
        loop.move_to(target, quat_to_matrix(state.ee_quat), gripper=GRIPPER_OPEN)
        self.log[-1]["z_to"] = float(loop.state.ee_pos[2])
        loop.beat(force=True)
        loop.env.robot.home()
        loop.scheduler.restart()
        loop.beat(force=True)

    def _operator(self, index: int) -> None:
        loop = self.loop
        if not self.operator:
            self._mark("operator", by="scripted (simulation)")
            if self.scripted_operator is not None:
                self.scripted_operator(loop)
            return
        self._mark("operator")
        self.say(f"episode {index}: reset the scene (the teleop moves the arm), then press the keep key")
        loop.replace_obs(loop.env.observe())
        moved = 0
        while True:
            loop.beat()
            command = loop.read_operator("during the scene reset")
            if command is None:  # no teleop: the loop's prompt (Enter)
                loop.confirm(self.say, f"episode {index}: reset the scene, then confirm")
                break
            if command.keep:
                break
            # paced: one control period per tick, through the envelope; the command was read above
            step = loop.step(command_to_action(command, loop.gripper), motion=True, command=command)
            if loop.scheduler.period <= 0:  # unpaced (simulation as fast as it runs): a person is not that fast
                time.sleep(POLL_S)
            moved += int(np.abs(step.executed[:6]).max() > 0)
        self.log[-1]["moved_steps"] = moved

    def _start(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        env, loop = self.loop.env, self.loop
        cfg = env.cfg.task.reset
        lo = np.asarray(cfg.start_xyz)
        if not lo.any() and cfg.start_yaw == 0:
            return obs, info
        offset = env.rng.uniform(-lo, lo)
        yaw = float(env.rng.uniform(-cfg.start_yaw, cfg.start_yaw))
        state = info["state"]
        target = state.ee_pos + offset
        rot = rotvec_to_matrix(np.array([0.0, 0.0, yaw])) @ quat_to_matrix(state.ee_quat)  # yaw about base z
        reached = loop.move_to(target, rot, gripper=GRIPPER_OPEN)
        self._mark("start", offset=offset.tolist(), yaw=yaw, reached=reached)
        env.steps = 0  # the episode's time limit counts from the start pose
        obs, info = loop.obs, {**info, "state": loop.state}
        self._begin(obs, info, "start pose")
        return obs, info

    def _begin(self, obs: dict[str, np.ndarray], info: dict[str, Any], reason: str) -> None:
        self.loop.begin(obs, info, reason)

    def _mark(self, stage: str, **detail: Any) -> None:
        self.log.append({"stage": stage, **detail})
        self.loop.beat()
