"""Off-policy learning on the policy server: the actor-learner split (SERL), the server side.

With an off-policy algorithm (`finetune.algo` in `OFFPOLICY_ALGOS`) the server never parks a robot and never waits
for an update. The serving loop samples chunks from the newest weights it received; every executed chunk becomes a
transition (observation history, executed action, summed reward, terminal vs time limit, intervention flag, next
observation history) that goes to the learner process (`offpolicy_learner.py`), which appends it to the crash-safe
replay log (`data/replay.py`), adds it to the algorithm's buffer and trains continuously, publishing versioned
weights every `publish_every` updates. Human interventions are transitions too (flagged) and also go to the IL side
as (history, executed chunk) pairs, as with the on-policy learners.

The algorithm behind `--algo` is anything that follows `OffPolicyAlgo`; `OFFPOLICY_ALGOS` names the factories.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from inril_robot.bridge.episodes import InterventionDemos
from inril_robot.bridge.learner_process import LearnerSpec, Message
from inril_robot.bridge.learning import ServerLearner
from inril_robot.bridge.protocol import EndReason, EpisodeEndReason, is_terminal
from inril_robot.config import RunConfig
from inril_robot.data.store import Dataset
from inril_robot.learning.inril.finetune import FinetuneError
from inril_robot.learning.rl.actor import Actor
from inril_robot.learning.rl.vec_env import History


class OffPolicyAlgo(Protocol):
    """What the server's asynchronous learner needs from an off-policy algorithm.

    `actor` is what the server samples from (`Actor.sample`: normalised chunks (B, H, A)); its `state_dict()` is
    what is published. `add` takes flat numpy transitions (`obs/<k>`, `next_obs/<k>` (n, n_obs_steps, ...), `action`
    (n, horizon, A) normalised, `reward`, `terminated`, `truncated`, `intervention`, `steps` (n,)); `update` is one
    RL update (one actor optimiser step with its critic steps; IL steps interleaved as the algorithm's schedule
    says) and returns its metrics; `state_dict` holds everything `--resume` needs except the buffer (weights,
    optimisers, schedule, counters, generators): the buffer is rebuilt from the replay log. An algorithm may also
    have `deployable`, the policy `last.pt` holds when it is not `actor.policy` (IDQL: the actor with its critics)."""

    actor: Actor

    def modules(self) -> list[torch.nn.Module]: ...
    def add(self, transitions: dict[str, np.ndarray]) -> None: ...
    def add_intervention(self, history: History, actions: np.ndarray) -> None: ...
    def can_update(self) -> bool: ...
    def update(self) -> dict[str, Any]: ...
    def buffer_size(self) -> int: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


# algo name -> the module that provides it: `make_server_algo(cfg, policy, demos, contract, device) -> OffPolicyAlgo`
# (the learner process) and `make_serving_actor(cfg, policy) -> Actor` (the serving process: only what acting reads)
OFFPOLICY_ALGOS: dict[str, str] = {
    "sac": "inril_robot.bridge.offpolicy_algos",
    "residual-sac": "inril_robot.bridge.offpolicy_algos",
    "idql": "inril_robot.bridge.offpolicy_algos",
}


def algo_module(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise FinetuneError(f"this build has no off-policy learner module {name} ({e})") from e


def is_offpolicy(cfg: RunConfig) -> bool:
    return cfg.finetune.algo in OFFPOLICY_ALGOS


# ---------------------------------------------------------------------------------------------- transitions
@dataclass
class _Pending:
    episode: int
    chunk: int
    step: int
    history: History
    transition: dict[str, Any]


@dataclass
class TransitionAssembler:
    """One robot's chunks -> transitions for the off-policy learner (the counterpart of `EpisodeAssembler`, with
    the same calls from the serving loop). A transition is complete when its next observation is known: the next
    chunk's served observation, or the episode's final observation."""

    robot: str
    horizon: int
    act_steps: int
    forward: Callable[[Message], None]
    interventions: InterventionDemos | None = None
    served: dict[tuple[int, int], tuple[History, np.ndarray | None]] = field(default_factory=dict)
    pending: _Pending | None = None
    steps: dict[int, int] = field(default_factory=dict)  # episode -> executed steps so far
    last_served: bool = True

    def served_chunk(self, episode: int, chunk: int, history: History, kept: dict[str, Any]) -> None:
        if len(self.served) > 64:
            self.served.pop(next(iter(self.served)))
        sampled = kept.get("chunk")  # the whole normalised chunk the serving actor sampled (H, A)
        self.served[(episode, chunk)] = (history, None if sampled is None else np.asarray(sampled, np.float32))
        p = self.pending
        if p is not None and (p.episode, p.chunk + 1) == (episode, chunk):
            self._complete(history)

    def transition(
        self,
        episode: int,
        chunk: int,
        executed: np.ndarray,
        rewards: np.ndarray,
        intervention: bool,
        safety_events: int,
        *,
        end: EndReason = "none",
        policy_version: int = -1,
    ) -> None:
        """One executed chunk; `end`: why the episode ended with it ("none": it goes on)."""
        served = self.served.pop((episode, chunk), None)
        self.last_served = served is not None
        self.pending = None  # a pending transition whose next chunk was never served: its next observation is lost
        if served is None:
            return
        history, sampled = served
        if intervention and self.interventions is not None and len(executed) >= self.horizon:
            self.interventions.add(history, executed[: self.horizon])
        k = len(executed)
        # a chunk of the policy's length (H): the executed steps, then the last one repeated (`steps` says how many
        # ran); the learner replaces the repeats with the rest of the sampled chunk when the policy was in control
        padded = np.concatenate([executed, np.repeat(executed[-1:], self.horizon - k, axis=0)]).astype(np.float32)
        step = self.steps.get(episode, 0)
        self.steps = {episode: step + k}
        self.pending = _Pending(
            episode,
            chunk,
            step,
            history,
            {
                "executed": padded,
                "steps": k,
                "reward": float(np.sum(rewards)),
                "terminated": is_terminal(end),
                "truncated": end != "none" and not is_terminal(end),
                "intervention": bool(intervention),
                "step": step,
                "policy_version": int(policy_version),
                "sampled": None if intervention else sampled,
            },
        )

    def _complete(self, next_history: History) -> None:
        p, self.pending = self.pending, None
        assert p is not None
        self.forward(("transition", self.robot, p.episode, p.history, {**p.transition, "next_obs": next_history}))

    def abandon(self) -> None:
        self.pending, self.served = None, {}

    def episode_end(self, episode: int, success: bool, end: EpisodeEndReason, final_obs: History | None) -> None:
        p = self.pending
        if p is not None and p.episode == episode:
            t = p.transition
            if not (t["terminated"] or t["truncated"]):  # the episode ended after its last chunk was reported
                t["terminated"], t["truncated"] = is_terminal(end), not is_terminal(end)
            if final_obs is not None:
                self._complete(final_obs)
            elif p.transition["terminated"]:  # no bootstrap: the next observation is never read
                self._complete(p.history)
        self.pending = None
        self.served = {k: v for k, v in self.served.items() if k[0] != episode}
        self.steps.pop(episode, None)
        self.forward(("episode_end", self.robot, episode))
        return None


# ------------------------------------------------------------------------------------------- the server side
class OffPolicyServerLearner(ServerLearner):
    """`ServerLearner` for off-policy algorithms: always asynchronous (the learner process trains continuously);
    the serving loop forwards transitions and swaps in published weights between inference batches."""

    def __init__(
        self,
        cfg: RunConfig,
        checkpoint: Path,
        demos: Dataset | None,
        out: Path,
        *,
        resume: bool = False,
        algo: str | None = None,
        start_timeout_s: float = 300.0,
        stop_timeout_s: float = 300.0,
    ) -> None:
        """`algo`: the module providing the algorithm (default: `OFFPOLICY_ALGOS[cfg.finetune.algo]`)."""
        loaded = self._prepare(cfg, checkpoint, out, "async", stop_timeout_s)
        cfg = self.cfg
        module = algo or OFFPOLICY_ALGOS[cfg.finetune.algo]
        self.actor: Actor | None = algo_module(module).make_serving_actor(cfg, loaded.policy).to(self.device).eval()
        self.policy = self.actor.policy
        self._spare: Actor = copy.deepcopy(self.actor).eval()
        self.sampler = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        payload = self._start(
            LearnerSpec(cfg, self.checkpoint, demos.root if demos else None, self.out, resume, module),
            start_timeout_s,
            target="inril_robot.bridge.offpolicy_learner:run",
        )
        self.episodes = int(payload["episodes"])
        self._serving = (0, self.actor)
        self._take(payload)

    def new_assembler(self, robot: str) -> TransitionAssembler:
        c = self.policy.cfg
        assert self.process is not None
        return TransitionAssembler(robot, c.horizon, c.act_steps, self.process.send, self.interventions)

    def add_episode(self, trace: Any, finished_episode: bool) -> None:
        with self.lock:
            self.episodes += int(finished_episode)

    def update_ready(self) -> bool:
        return False

    def _take(self, progress: dict[str, Any]) -> None:
        super()._take(progress)
        self.episodes = max(self.episodes, int(progress.get("episodes", 0)))


def make_server_learner(
    cfg: RunConfig, checkpoint: Path, demos: Dataset | None, out: Path, *, mode: str, resume: bool
) -> ServerLearner:
    """The server's learner for `cfg.finetune.algo`: off-policy algorithms always learn asynchronously."""
    if mode != "off" and is_offpolicy(cfg):
        return OffPolicyServerLearner(cfg, checkpoint, demos, out, resume=resume)
    return ServerLearner(cfg, checkpoint, demos, out, mode=mode, resume=resume)
