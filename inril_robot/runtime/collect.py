"""Demonstration recording: a teleop source drives the robot through the safety envelope; episodes are stored.

The loop is `runtime.loop.ControlLoop` in ``human`` mode: per control step read the teleop command ->
proposed action -> `RobotEnv.step` (safety envelope -> executed action -> robot); between episodes the reset phase
(`runtime.resets`: open, retreat, the operator resets the scene with the teleop, start pose, confirm).
The store records the observation the operator acted on, both actions, reward, who
was in control and the capture times; learning later uses the executed action. Episode seeds are
`seed + 1000 * index + attempt`, so a resumed collection never replays an episode it already recorded.

`--episodes N` is the number of kept episodes the dataset should hold: re-running the same command after a crash
or Ctrl-C records only what is missing (resume). At the end of an episode the operator keeps or discards it; with
the scripted expert in simulation, success decides.

An arm fault (`RobotFault`: reflex, user stop) drops the open episode, pauses with the reason and, after the
operator's confirmation (the keep key), recovers and homes the arm (`runtime.faults`); collection goes on. In
shadow mode (a real robot without --execute) steps are stored with control "none" and episodes marked ``shadow``:
learning refuses them (`pretrain.check_dataset_fits`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inril_robot.config import RunConfig
from inril_robot.data.provenance import calibration_field
from inril_robot.data.store import DatasetWriter
from inril_robot.hardware import EmergencyStop, RobotFault, Teleop
from inril_robot.runtime.env import GRIPPER_AT_HOME, RobotEnv
from inril_robot.runtime.faults import pause_and_recover
from inril_robot.runtime.loop import ControlLoop, store_recorder
from inril_robot.runtime.resets import ResetPhase
from inril_robot.runtime.shadow import ShadowRobot

MAX_RECORDED_EVENTS = 1000  # per episode, kept in its attributes


@dataclass
class CollectStatus:
    """What the live display shows; updated every step."""

    target: int
    kept: int = 0
    discarded: int = 0
    episode_index: int = 0
    step: int = 0
    hz: float = 0.0
    last: str = ""
    safety_events: int = 0


@dataclass
class CollectResult:
    out: str
    target: int
    kept_before: int
    kept: int
    discarded: int
    steps: int
    wall_s: float
    interrupted: bool = False
    stopped: str | None = None
    faults: list[str] = field(default_factory=list)  # arm faults: each dropped its episode, then recovered
    episodes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def collect(
    cfg: RunConfig,
    out: Path,
    episodes: int,
    env: RobotEnv,
    teleop: Teleop,
    *,
    notes: str = "",
    on_update: Callable[[CollectStatus], None] | None = None,
    pace: bool | None = None,
    extra_info: dict[str, Any] | None = None,
    confirm: Callable[[str], None] | None = None,
    say: Callable[[str], None] | None = None,
    operator_resets: bool | None = None,
) -> CollectResult:
    """Record until the dataset holds `episodes` kept episodes. Ctrl-C drops the open episode and returns.
    dataset.json records the calibration files of the cameras (`inril_robot.data.provenance`) and `extra_info`.
    `confirm(text)` blocks until the operator confirms a recovery after a fault (default: the teleop's keep key).
    Between episodes the reset phase runs (`inril_robot.runtime.resets`); `operator_resets`: a person resets the scene
    (default: on a real robot; in simulation the stage is scripted)."""
    scripted = cfg.teleop.kind == "scripted"
    pace = (not scripted or cfg.robot.kind != "sim") if pace is None else pace
    say = say or (lambda _: None)
    writer = DatasetWriter(
        out,
        env.contract,
        task=cfg.task.name,
        robot=cfg.robot.model_dump(mode="json"),
        calibration=calibration_field(cfg),
        extra_info={"teleop": cfg.teleop.kind, **(extra_info or {})},
    )
    loop = ControlLoop(
        env,
        teleop,
        mode="human",
        period=None if pace else 0.0,
        label=f"{cfg.teleop.kind} teleop",
        scripted=scripted,
    )
    person = cfg.robot.kind != "sim" if operator_resets is None else operator_resets
    resets = ResetPhase(loop, say, operator=person and not scripted)
    kept_before = writer.num_episodes()
    status = CollectStatus(target=episodes, kept=kept_before)
    result = CollectResult(str(out), episodes, kept_before, 0, 0, 0, 0.0)
    start = time.perf_counter()
    attempt = 0
    try:
        while status.kept < episodes:
            index = writer.next_index()
            seed = cfg.seed + 1000 * index + attempt
            status.episode_index = index
            try:
                record = record_episode(loop, resets, writer, seed, notes, status, on_update)
            except RobotFault as e:
                result.faults.append(f"episode {index}: {e}")
                status.last = f"episode {index}: dropped (arm fault)"
                if on_update:
                    on_update(status)
                pause_and_recover(env.robot, e, confirm or (lambda text: loop.confirm(say, text)), say)
                attempt += 1
                continue
            result.steps += record["length"]
            result.episodes.append(record)
            if record["kept"]:
                status.kept += 1
                result.kept += 1
                attempt = 0
            else:
                status.discarded += 1
                result.discarded += 1
                attempt += 1
            status.last = f"episode {index}: {'kept' if record['kept'] else 'discarded'}"
            if on_update:
                on_update(status)
    except KeyboardInterrupt:
        result.interrupted = True
    except EmergencyStop as e:
        result.stopped = str(e)
    finally:
        writer.close()  # drops the open episode, if any; committed ones stay
        result.wall_s = time.perf_counter() - start
    return result


def record_episode(
    loop: ControlLoop,
    resets: ResetPhase,
    writer: DatasetWriter,
    seed: int,
    notes: str,
    status: CollectStatus,
    on_update: Callable[[CollectStatus], None] | None,
) -> dict[str, Any]:
    """The reset phase, then one demonstration through the control loop; keep or discard it."""
    env = loop.env
    cfg = env.cfg
    shadow = isinstance(env.robot, ShadowRobot)
    status.step = 0  # the display must not show the previous episode's step
    resets.run(seed, writer.next_index())
    episode = writer.begin_episode(seed=seed, notes=notes)
    record = store_recorder(episode, shadow)
    events: list[dict[str, Any]] = []
    decision: bool | None = None
    success = False
    try:
        for _ in range(cfg.task.max_steps):
            step = loop.step(record=record)
            if step.verdict is not None:
                decision = step.verdict
                break
            for event in step.info["safety_events"]:
                if len(events) < MAX_RECORDED_EVENTS:
                    events.append({"step": step.index, **event.to_dict()})
            status.safety_events += len(step.info["safety_events"])
            success = success or bool(step.info["success"])
            status.step = step.index + 1
            status.hz = loop.hz
            if on_update:
                on_update(status)
            if step.done:
                break
        if cfg.robot.kind != "sim":
            env.robot.hold()  # the episode is over: the arm stops now, while the operator decides
    except RobotFault:
        episode.discard()  # the faulted episode is never stored
        raise
    if decision is None and not loop.scripted:  # every episode end, a time limit included, asks the operator
        ended = "time limit" if episode.length >= cfg.task.max_steps else "ended"
        outcome = "success" if success else f"failed ({ended})"
        status.last = f"episode {episode.index} over: {outcome} - press k to keep, x to discard"
        if on_update:
            on_update(status)
    if decision is None:
        decision = success if loop.scripted else loop.decide(lambda _: None, status.last)
    if decision and episode.length > 0:
        extra = {
            "safety_events": events,
            "teleop": cfg.teleop.kind,
            "authority": loop.authority.to_records(),
            "initial_gripper": GRIPPER_AT_HOME,
            "shadow": shadow,
            "interventions": loop.interventions,
            "reset": resets.log,
        }
        index = episode.commit(success=success, extra=extra)
        return {"index": index, "seed": seed, "kept": True, "success": success, "length": episode.length}
    length = episode.length
    episode.discard()
    return {"index": None, "seed": seed, "kept": False, "success": success, "length": length}
