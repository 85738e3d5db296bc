"""The robot agent: the control loop on the robot PC, talking to the policy server.

Per chunk: send the observation history, wait for the chunk, then at each tick of the control loop
(`runtime.loop.ControlLoop`: pacing, the operator's keys, authority, e-stop, the recording hook) pass the next
action through `RobotEnv.step` (the safety envelope is applied there, always), record the step in the episode store,
and after the chunk send the executed actions, rewards and flags back. Safety when things fail:

- watchdog: no action within `watchdog_periods` control periods of asking (default 2) -> `robot.hold()` every period
  until one arrives; never a stale action (replies are matched to the observation's seq);
- stale camera frames (`StaleFrameError`) -> hold and re-read, ending the episode if they stay stale;
- a silent server (nothing heard for `reconnect_after_s`, heartbeats included) -> reconnect with exponential
  back-off, still holding, then resend the current observation and carry on with the episode;
- a refusal (schema, contract, task, CURVE key) stops the agent with the reason; an operator e-stop stops the arm;
- an arm fault (`RobotFault`: reflex, user stop, control error) drops the open episode (not stored; no
  `episode_end`, so the server drops its segment), pauses with the reason, and after the operator's confirmation
  recovers and homes the arm (`runtime.faults`); the run goes on with the next episode.

Every episode ends with `robot.hold()` on a real arm (it stops now, before the operator's reset prompt). In shadow
mode (a real robot without --execute) nothing is executed: steps are stored with control "none", episodes marked
``shadow``, and transitions are sent with control "none", which the server refuses to learn from.

Episodes: between them the reset phase runs (`runtime.resets`: open, retreat, the operator resets the scene with
the teleop moving the arm, home, randomised start pose, confirm; scripted in simulation), with heartbeats all along.
Reward is the task's success detector in simulation; on the real robot the operator's keep
key marks success and discard a failure. Teleop `intervene` hands control to the human for that step: the chunk is
flagged and the server feeds it to the IL side; a step is the human's only while the operator commands motion (the
latched toggle with an idle teleop leaves the policy in control: no zero-action "demonstrations").
Achieved Hz, per-stage times, overruns, holds and reconnects go to
`on_status` (the CLI's live table) and to `agent_log.csv`.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inril_robot.bridge import protocol as p
from inril_robot.bridge.client import BridgeClient, BridgeError, Refusal
from inril_robot.bridge.security import ClientKeys
from inril_robot.config import RunConfig
from inril_robot.core.seeds import train_seed
from inril_robot.data.store import DatasetWriter
from inril_robot.hardware import EmergencyStop, RobotFault, StaleFrameError, Teleop
from inril_robot.runtime.env import RobotEnv
from inril_robot.runtime.faults import pause_and_recover
from inril_robot.runtime.loop import ControlLoop, Step, store_recorder
from inril_robot.runtime.obs_history import ObsHistory
from inril_robot.runtime.resets import ResetPhase
from inril_robot.runtime.shadow import ShadowRobot

StatusFn = Callable[[dict[str, Any]], None]
LOG_FIELDS = (
    "episode",
    "seed",
    "steps",
    "success",
    "return",
    "interventions",
    "policy_version",
    "hz",
    "overruns",
    "watchdog_holds",
    "reconnects",
    "stale_frames",
    "round_trip_p50_ms",
    "round_trip_p99_ms",
    "step_p50_ms",
    "step_p99_ms",
    "record_p50_ms",
    "late_max_ms",
    "round_trip_max_ms",
    "step_max_ms",
    "wall_s",
)


@dataclass
class AgentOptions:
    server: str
    robot_id: str = "robot0"
    episodes: int | None = None  # stop after this many episodes (None: after env_steps)
    env_steps: int | None = None  # stop after this many executed steps (None: cfg.finetune.env_steps)
    speed: float = 1.0  # control rate multiplier; 0: as fast as the simulation runs (sim only)
    watchdog_periods: float = 2.0
    reconnect_after_s: float = 1.0
    backoff_s: tuple[float, float] = (0.1, 2.0)
    give_up_s: float | None = None  # stop reconnecting after this long (None: keep trying)
    stale_frames_s: float = 1.0
    connect_timeout_s: float = 5.0
    record: Path | None = None  # episode store folder (None: not recorded)
    log: Path | None = None  # agent_log.csv
    keys: ClientKeys | None = None
    seed_offset: int = 0  # added to the episode index for simulation seeds (robots of one run differ)


@dataclass
class AgentResult:
    robot: str
    episodes: int = 0
    successes: int = 0
    env_steps: int = 0
    watchdog_holds: int = 0
    reconnects: int = 0
    overruns: int = 0
    stale_frames: int = 0
    interventions: int = 0
    wall_s: float = 0.0
    hz: float = 0.0
    policy_versions: list[int] = field(default_factory=list)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    hold_events: list[dict[str, float]] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    faulted_episodes: int = 0  # dropped after an arm fault (recovered and homed)
    stopped: str | None = None
    run_over: str | None = None  # the server's learner spent its budget: the run ended after that episode

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def end_reason(step: Step) -> p.EndReason:
    """Why the episode ended with `step` ("none": it goes on). The operator's verdict first (it ends the episode on
    a hold step), then a safety stop (the env stopped the arm; a step that also succeeded is a success), then the
    env's success and time limit."""
    if step.verdict is not None:
        return "operator_success" if step.verdict else "operator_failure"
    if step.terminated:
        return "success"
    if step.info.get("stopped"):
        return "safety_stop"
    return "time_limit" if step.truncated else "none"


def config_hash(cfg: RunConfig) -> str:
    return hashlib.sha256(json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


class RobotAgent:
    def __init__(
        self,
        cfg: RunConfig,
        env: RobotEnv,
        options: AgentOptions,
        teleop: Teleop | None = None,
        prompt: Callable[[str], None] | None = None,
        on_status: StatusFn | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg, self.env, self.opt, self.teleop = cfg, env, options, teleop
        self.prompt = prompt
        self.on_status = on_status
        self.say = say or (lambda _: None)
        self.sim = cfg.robot.kind == "sim"
        self.shadow = isinstance(env.robot, ShadowRobot)
        if options.speed <= 0 and not self.sim:
            raise ValueError("--speed 0 (unpaced) is for simulation only: a real robot runs at control_hz")
        self.period = 1.0 / cfg.robot.control_hz
        self.tick_period = self.period / options.speed if options.speed > 0 else 0.0
        self.watchdog_s = options.watchdog_periods * (self.tick_period or self.period)
        hello = p.Hello(
            contract=env.contract.to_json_dict(),
            task=cfg.task.name,
            config_hash=config_hash(cfg),
            robot_kind=cfg.robot.kind,
            agent_version=_version(),
        )
        self.client = BridgeClient(options.server, options.robot_id, hello, options.keys)
        # the one control loop (pacing, operator, authority, recording, e-stop); heartbeats keep the server's session
        # alive through every prompt of the reset phase
        self.loop = ControlLoop(
            env,
            teleop,
            mode="takeover",
            period=self.tick_period,
            verdict_step=True,
            verdicts=not self.sim,
            heartbeat=lambda: self._send(p.Heartbeat(state="reset")),
            prompt=prompt,
        )
        self.resets = ResetPhase(self.loop, self.say, operator=not self.sim)
        self.scheduler, self.times = self.loop.scheduler, self.loop.times
        self.result = AgentResult(options.robot_id)
        self.policy_version = -1
        self.writer: DatasetWriter | None = None
        self._last_status = 0.0

    # ------------------------------------------------------------------------------------------- the run
    def run(self) -> AgentResult:
        started = time.perf_counter()
        budget = self.opt.env_steps if self.opt.env_steps is not None else self.cfg.finetune.env_steps
        try:
            self._connect()
            if self.opt.record is not None:
                self.writer = DatasetWriter(
                    self.opt.record,
                    self.env.contract,
                    task=self.cfg.task.name,
                    robot=self.cfg.robot.model_dump(mode="json"),
                )
            index = self.writer.next_index() if self.writer is not None else 0
            while (
                (self.opt.episodes is None or self.result.episodes < self.opt.episodes)
                and self.result.env_steps < budget
                and self.result.run_over is None
            ):
                try:
                    row = self.run_episode(index)
                except RobotFault as e:
                    self._after_fault(index, e)
                    index += 1  # a new episode number: the server never joins it to the dropped one
                    continue
                index += 1
                self._log_row(row)
        except (Refusal, EmergencyStop, BridgeError) as e:
            self.result.stopped = str(e)
            self.say(str(e))
        finally:
            self.result.wall_s = time.perf_counter() - started
            self.result.stages = self.times.summary()
            self.result.overruns = self.scheduler.overruns
            if self.writer is not None:
                self.writer.close()
            self.client.close()
        return self.result

    def run_episode(self, index: int) -> dict[str, Any]:
        seed = train_seed(self.cfg.seed, index + self.opt.seed_offset)
        _freeze_heap()
        obs, _ = self._reset(seed, index)
        welcome = self.client.welcome
        assert welcome is not None
        history = ObsHistory(welcome.obs_keys, welcome.n_obs_steps)
        history.push(obs)
        episode = (
            self.writer.begin_episode(
                seed=seed, notes=f"robot {self.opt.robot_id}, fine-tuning through {self.opt.server}"
            )
            if self.writer is not None
            else None
        )
        record = store_recorder(episode, self.shadow) if episode is not None else None
        chunk = steps = interventions = events = 0
        success = False
        end: p.EndReason = "none"
        ret = 0.0
        reason = ""
        versions: set[int] = set()
        holds0, reconnects0, stale0 = self.result.watchdog_holds, self.result.reconnects, self.result.stale_frames
        try:
            tick0 = time.perf_counter()
            self.loop.scheduler.restart()
            self.scheduler.reset_peak()
            self.times.reset_peaks()
            while end == "none":
                actions = self._request(history, index, chunk, steps)
                versions.add(self.policy_version)
                executed_chunk, rewards, intervened, chunk_events = [], [], False, 0
                for proposed in actions:
                    try:
                        step = self.loop.step(proposed, record)
                    except StaleFrameError as e:
                        fresh = self._recover_frames(str(e))
                        if fresh is None:
                            end, reason = "stale_frames", "camera frames stayed stale"
                            break
                        history.push(fresh, replace_last=True)
                        self.loop.replace_obs(fresh)
                        break  # re-plan from the fresh observation
                    if step.verdict is not None:  # the operator's verdict ends the episode on a hold step
                        reason = "operator: success" if step.verdict else "operator: failure"
                    history.push(step.next_obs)
                    executed_chunk.append(step.executed)
                    rewards.append(step.reward)
                    intervened = intervened or step.intervention
                    chunk_events += len(step.info["safety_events"])
                    steps += 1
                    ret += step.reward
                    end = end_reason(step)
                    success = success or bool(step.info["success"])
                    if step.info["stopped"]:
                        reason = step.info["stopped"]
                    self._status(index, steps)
                    if step.done:
                        break
                if executed_chunk:
                    sent_control = "none" if self.shadow else "human" if intervened else "policy"
                    self._send(
                        p.Transition(
                            episode=index,
                            chunk=chunk,
                            policy_version=self.policy_version,
                            success=success,
                            end=end,
                            intervention=intervened,
                            control=sent_control,
                            safety_events=chunk_events,
                        ),
                        {
                            "executed": np.asarray(executed_chunk, np.float64),
                            "rewards": np.asarray(rewards, np.float32),
                        },
                    )
                    chunk += 1
                interventions += int(intervened)
                events += chunk_events
                if end == "none" and steps >= self.cfg.task.max_steps:
                    end = "time_limit"
            if not self.sim:
                self.env.robot.hold()  # the episode is over: the arm stops now, before the reset phase
        except RobotFault:
            if episode is not None:
                episode.discard()  # the faulted episode is never stored
            raise
        end_msg = p.EpisodeEnd(
            episode=index,
            steps=steps,
            success=success,
            end=end,
            interventions=interventions,
            reason=reason,
        )
        self._send(end_msg, history.stacked("obs/"))
        if episode is not None:
            if episode.length:
                episode.commit(
                    success=success,
                    extra={
                        "policy_versions": sorted(versions),
                        "server": self.opt.server,
                        "interventions": interventions,
                        "safety_event_count": events,
                        "robot": self.opt.robot_id,
                        "reason": reason,
                        "shadow": self.shadow,
                        "intervention_steps": self.loop.interventions,
                        "authority": self.loop.authority.to_records(),
                        "reset": self.resets.log,
                    },
                )
            else:
                episode.discard()
        r = self.result
        r.episodes += 1
        r.successes += int(success)
        r.env_steps += steps
        r.interventions += interventions
        r.policy_versions.append(self.policy_version)
        r.hz = self.loop.hz
        stages = self.times.summary()
        self._send(
            p.Stats(
                values={
                    "hz": r.hz,
                    "overruns": self.scheduler.overruns,
                    "holds": r.watchdog_holds,
                    "reconnects": r.reconnects,
                    "episodes": r.episodes,
                    "successes": r.successes,
                }
            )
        )
        return {
            "episode": index,
            "seed": seed,
            "steps": steps,
            "success": int(success),
            "return": round(ret, 4),
            "interventions": interventions,
            "policy_version": self.policy_version,
            "hz": round(r.hz, 2),
            "overruns": self.scheduler.overruns,
            "watchdog_holds": r.watchdog_holds - holds0,
            "reconnects": r.reconnects - reconnects0,
            "stale_frames": r.stale_frames - stale0,
            "round_trip_p50_ms": stages.get("round_trip", {}).get("p50_ms"),
            "round_trip_p99_ms": stages.get("round_trip", {}).get("p99_ms"),
            "step_p50_ms": stages.get("step", {}).get("p50_ms"),
            "step_p99_ms": stages.get("step", {}).get("p99_ms"),
            "record_p50_ms": stages.get("record", {}).get("p50_ms"),
            # this episode's worst: how late a tick started, and the longest round trip and control step
            "late_max_ms": round(self.scheduler.late_max * 1e3, 2),
            "round_trip_max_ms": self.times.peaks.get("round_trip"),
            "step_max_ms": self.times.peaks.get("step"),
            "wall_s": round(time.perf_counter() - tick0, 3),
        }

    # --------------------------------------------------------------------------------------- the watchdog
    def _request(self, history: ObsHistory, episode: int, chunk: int, steps: int) -> np.ndarray:
        """Ask for a chunk and wait for it, holding the robot whenever it is late; reconnects a silent server."""
        sent_at = time.monotonic()
        seq = self._send(
            p.Observation(episode=episode, chunk=chunk, step=steps),
            history.stacked("obs/"),
            t_capture=max(self.env.last_capture_times.values(), default=0.0),
        )
        holding, next_hold, last_beat = False, sent_at + self.watchdog_s, 0.0
        while True:
            now = time.monotonic()
            wait = max(0.0, (next_hold - now) if not holding else min(next_hold - now, 0.05))
            msg = self.client.poll(wait)
            now = time.monotonic()
            if msg is not None:
                if msg.type == "action" and msg.body.obs_seq == seq:
                    self.times.add("round_trip", now - sent_at)
                    self.policy_version = msg.body.policy_version
                    if msg.body.run_over and self.result.run_over is None:
                        self.result.run_over = (
                            f"the server's learner spent its env-step budget (policy version {self.policy_version} "
                            "is final): the run ends after this episode"
                        )
                        self.say(self.result.run_over)
                    if holding:
                        self.loop.scheduler.restart()
                    return np.asarray(msg.arrays["actions"])
                if msg.type == "heartbeat":
                    self.policy_version = max(self.policy_version, msg.body.policy_version)
                elif msg.type == "error" and msg.body.code == "not_welcomed":
                    self._reconnect("the server no longer knows this robot")
                    return self._request(history, episode, chunk, steps)
                elif msg.type == "error" and msg.body.ref_seq == seq:
                    raise BridgeError(f"the server rejected our observation: {msg.body.reason}")
                continue
            if now >= next_hold:
                # at an episode's first chunk the arm is at home: a late answer is the server parking it while the
                # learner updates (or waiting for a dead robot to time out), held like any other wait, not a fault
                if not holding and chunk > 0:
                    self.result.watchdog_holds += 1
                    self.result.hold_events.append(
                        {"after_request_s": now - sent_at, "time": time.time(), "episode": episode, "chunk": chunk}
                    )
                    self.say(
                        f"watchdog: no action {1e3 * (now - sent_at):.0f} ms after asking (limit "
                        f"{1e3 * self.watchdog_s:.0f} ms): holding the robot"
                    )
                holding = True
                self.env.robot.hold()
                next_hold = now + (self.tick_period or self.period)
                self._status(episode, steps, holding=True)
            if holding and now - last_beat > 0.25:
                self._send(p.Heartbeat(state="waiting"))
                last_beat = now
            if now - self.client.last_heard > self.opt.reconnect_after_s and now - sent_at > self.opt.reconnect_after_s:
                self._reconnect(f"nothing heard from the server for {now - self.client.last_heard:.1f} s")
                obs = self.env.observe()
                history.push(obs, replace_last=True)
                self.loop.replace_obs(obs)
                return self._request(history, episode, chunk, steps)

    def _after_fault(self, index: int, fault: RobotFault) -> None:
        """Pause, the operator confirms, recover, home (`runtime.faults`); ends the run without an operator."""
        self.result.faults.append(f"episode {index}: {fault}")
        self.result.faulted_episodes += 1
        if self.prompt is None:
            raise EmergencyStop(
                f"the arm faulted in episode {index} ({fault}) and there is no operator to confirm its recovery"
            )
        self.loop.beat(force=True)
        pause_and_recover(self.env.robot, fault, lambda text: self.loop.confirm(self.say, text), self.say)

    def _recover_frames(self, why: str) -> dict[str, np.ndarray] | None:
        self.result.stale_frames += 1
        self.say(f"stale camera frames ({why}): holding")
        deadline = time.monotonic() + self.opt.stale_frames_s
        while time.monotonic() < deadline:
            self.env.robot.hold()
            try:
                return self.env.observe()
            except StaleFrameError:
                time.sleep(self.tick_period or self.period)
        return None

    # ---------------------------------------------------------------------------------------- connection
    def _connect(self) -> None:
        welcome = self.client.connect(self.opt.connect_timeout_s)
        self.policy_version = welcome.policy_version
        unprovided = [k for k in welcome.obs_keys if k not in self.env.contract.observations]
        if unprovided:  # a server that welcomed what this robot cannot observe: refuse here, before any motion
            raise Refusal("contract", p.unprovided_reason(unprovided), f"observations.{unprovided[0]}")
        if welcome.control_hz != self.cfg.robot.control_hz:
            raise Refusal(
                "contract", f"server control_hz {welcome.control_hz} != robot {self.cfg.robot.control_hz}", "control_hz"
            )
        self.say(
            f"connected to {self.opt.server} as {self.opt.robot_id!r}: policy version {welcome.policy_version}, "
            f"chunks of {welcome.act_steps}, learner {welcome.learner}"
        )

    def _reconnect(self, why: str) -> None:
        """Back-off reconnects, holding the robot each control period meanwhile."""
        self.result.faults.append(why)
        self.say(f"{why}: reconnecting (holding the robot)")
        delay, lo_hi = self.opt.backoff_s[0], self.opt.backoff_s
        started = time.monotonic()
        while True:
            try:
                self.client.connect(min(delay, self.opt.connect_timeout_s) + 0.2)
                self.result.reconnects += 1
                self.policy_version = self.client.welcome.policy_version if self.client.welcome else -1
                self.say(f"reconnected: policy version {self.policy_version}")
                self.loop.scheduler.restart()
                return
            except Refusal:
                raise
            except BridgeError:
                pass
            if self.opt.give_up_s is not None and time.monotonic() - started > self.opt.give_up_s:
                raise BridgeError(f"the server at {self.opt.server} did not come back within {self.opt.give_up_s} s")
            end = time.monotonic() + delay
            while time.monotonic() < end:
                self.env.robot.hold()
                time.sleep(max(0.0, min(self.period, end - time.monotonic())))
            delay = min(delay * 2, lo_hi[1])

    def _send(self, body: Any, arrays: dict[str, np.ndarray] | None = None, t_capture: float = 0.0) -> int:
        return self.client.send(body, arrays, t_capture)

    # -------------------------------------------------------------------------------------------- episodes
    def _reset(self, seed: int, index: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The reset phase (`inril_robot.runtime.resets`): open, retreat, the operator resets the scene (scripted in
        simulation), home, start pose, confirm; heartbeats all along."""
        if not self.sim and self.prompt is None and self.teleop is None:
            raise EmergencyStop("a real robot needs an operator to reset the scene between episodes")
        return self.resets.run(seed if self.sim else None, index)

    def _status(self, episode: int, steps: int, holding: bool = False) -> None:
        now = time.monotonic()
        if self.on_status is None or (now - self._last_status < 0.2 and not holding):
            return
        self._last_status = now
        r = self.result
        self.on_status(
            {
                "robot": self.opt.robot_id,
                "episode": episode,
                "step": steps,
                "episodes": r.episodes,
                "successes": r.successes,
                "env_steps": r.env_steps + steps,
                "hz": self.loop.hz,
                "target_hz": (1.0 / self.tick_period) if self.tick_period else None,
                "overruns": self.scheduler.overruns,
                "holds": r.watchdog_holds,
                "reconnects": r.reconnects,
                "holding": holding,
                "policy_version": self.policy_version,
                "stages": self.times.summary(),
            }
        )

    def _log_row(self, row: dict[str, Any]) -> None:
        if self.opt.log is None:
            return
        new = not self.opt.log.exists()
        self.opt.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.opt.log, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)


def _version() -> str:
    from inril_robot.core.version import package_version

    return package_version()


def _freeze_heap() -> None:
    """Collect everything now, between episodes (the arm holds), then hide every object alive from the cyclic
    collector (`gc.freeze`): a full collection of the agent's ~90k start-up objects takes 40-50 ms on a quiet core
    (more on a busy one), a pause that landed inside 100 ms control periods as late ticks; after the freeze the
    episode's collections scan only what it makes. Unfrozen first, so cycles that died since the last freeze go."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
