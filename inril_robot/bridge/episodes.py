"""Turn the messages one robot sends into what the learner learns from.

Per robot, the server remembers each chunk it sent (the observation history it was sampled from, the actor's record
and log-probability) until the robot's transition for that chunk arrives with the executed actions and rewards.
Chunks the policy was in control of become an `rl.rollouts.EpisodeTrace` segment, exactly what the in-process loop
builds; a chunk a human took over (an intervention) ends the segment there (truncated: the critic bootstraps from
that observation) and its executed actions become an imitation pair for the IL side (`InterventionDemos`). A robot
that reconnects mid-episode, or a server that restarts, simply starts a new segment at the next chunk it serves.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from inril_robot.bridge.protocol import EpisodeEndReason, is_terminal
from inril_robot.learning.inril.learner import DemoSource
from inril_robot.learning.rl.rollouts import EpisodeTrace
from inril_robot.learning.rl.vec_env import History


@dataclass
class ServedChunk:
    history: History
    kept: dict[str, Tensor]


@dataclass
class EpisodeAssembler:
    """One robot's open episode segment and the chunks it was served but has not reported yet."""

    horizon: int
    interventions: InterventionDemos | None = None
    served: dict[tuple[int, int], ServedChunk] = field(default_factory=dict)
    segment: EpisodeTrace | None = None
    episode: int = -1
    last_served: bool = True  # whether the last transition was for a chunk served here (else it was ignored)

    def served_chunk(self, episode: int, chunk: int, history: History, kept: dict[str, Tensor]) -> None:
        if len(self.served) > 64:  # a robot that never reports: forget the oldest
            self.served.pop(next(iter(self.served)))
        self.served[(episode, chunk)] = ServedChunk(history, kept)

    def transition(
        self,
        episode: int,
        chunk: int,
        executed: np.ndarray,
        rewards: np.ndarray,
        intervention: bool,
        safety_events: int,
        **flags: Any,
    ) -> EpisodeTrace | None:
        """Account one executed chunk; returns a finished segment when an intervention cut it. (`flags`: the
        transition's `end` and `policy_version`, which the off-policy `TransitionAssembler` reads.)"""
        served = self.served.pop((episode, chunk), None)
        self.last_served = served is not None
        if served is None:
            return None  # served by an earlier server or connection (or never): nothing to learn from here
        if episode != self.episode:
            self.segment, self.episode = None, episode  # a new episode; an unfinished segment is dropped
        if intervention:
            if self.interventions is not None and len(executed) >= self.horizon:
                self.interventions.add(served.history, executed[: self.horizon])
            cut, self.segment = self.segment, None
            if cut is not None and cut.obs:
                cut.final_obs = served.history
                return cut
            return None
        if self.segment is None:
            self.segment = EpisodeTrace(seed=episode)
        s = self.segment
        s.obs.append(served.history)
        s.kept.append(served.kept)
        s.rewards.append(float(np.sum(rewards)))
        s.steps += len(executed)
        s.safety_events += safety_events
        return None

    def abandon(self) -> None:
        """Forget the open segment and the chunks awaiting transitions (the learner stopped waiting for them)."""
        self.segment, self.served = None, {}

    def episode_end(
        self, episode: int, success: bool, end: EpisodeEndReason, final_obs: History | None
    ) -> EpisodeTrace | None:
        """The episode's segment, ended as the robot says: a success is terminated, a safety stop stopped (both
        terminal, as in the in-process loop), anything else bootstrapped from `final_obs`."""
        segment, self.segment = self.segment, None
        self.served = {k: v for k, v in self.served.items() if k[0] != episode}
        if segment is None or episode != self.episode or not segment.obs:
            return None
        segment.success, segment.final_obs = success, final_obs
        segment.terminated = is_terminal(end) and end != "safety_stop"
        segment.stopped = end == "safety_stop"
        return segment


class InterventionDemos:
    """The newest (observation history, executed chunk) pairs of human interventions, mixed into IL batches."""

    def __init__(self, capacity: int = 4096, fraction: float = 0.25) -> None:
        self.pairs: deque[tuple[History, np.ndarray]] = deque(maxlen=capacity)
        self.fraction = fraction
        self.lock = threading.Lock()
        self.total = 0

    def add(self, history: History, actions: np.ndarray) -> None:
        with self.lock:
            self.pairs.append(({k: np.array(v) for k, v in history.items()}, np.asarray(actions, np.float32)))
            self.total += 1

    def wrap(self, demos: DemoSource) -> DemoSource:
        """A demo source whose batches hold up to `fraction` intervention pairs (while there are any)."""

        def sample(batch_size: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
            with self.lock:
                n = min(len(self.pairs), round(batch_size * self.fraction))
                picked = [self.pairs[i] for i in rng.integers(0, len(self.pairs), n)] if n else []
            obs, actions = demos(batch_size - n, rng)
            if not picked:
                return obs, actions
            obs = {k: np.concatenate([v, np.stack([p[0][k] for p in picked]).astype(v.dtype)]) for k, v in obs.items()}
            return obs, np.concatenate([actions, np.stack([p[1] for p in picked])])

        return sample
