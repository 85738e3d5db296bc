"""`PolicyRunner`: a `Policy` (tensors, chunks, observation history) as the per-step callable a rollout calls.

Per control step the runner appends the observation to a history of `n_obs_steps` (at the start of an episode the
history is filled with copies of the first observation), and when its queue of actions is empty it asks the policy
for a chunk of `horizon` actions and queues the first `act_steps` of them. Each call returns one action (numpy,
float64, raw units, gripper clipped to [0, 1]); the caller passes it through the safety envelope.

An episode starts with `reset(seed)` (`run_policy(..., on_reset=runner.reset)`); a runner that was not told also
notices a new episode by `env.steps == 0`. Sampling noise comes from a `torch.Generator` seeded per episode, so a
rollout is reproducible for a seed.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch

from inril_robot.core.contract import Contract, ContractMismatch
from inril_robot.learning.policies.base import Policy
from inril_robot.runtime.obs_history import ObsHistory


class PolicyRunner:
    def __init__(
        self,
        policy: Policy,
        contract: Contract,
        device: str | torch.device = "cpu",
        *,
        deterministic: bool = True,
        seed: int = 0,
    ) -> None:
        self.policy = policy
        self.contract = contract
        self.device = torch.device(device)
        self.deterministic = deterministic
        self.seed = seed
        self.keys = list(policy.obs_shapes)
        for key in self.keys:
            spec = contract.observations.get(key)
            if spec is None:
                raise ContractMismatch(f"observations.{key}", "present", "missing", "policy input")
            if tuple(spec.shape) != tuple(policy.obs_shapes[key]):
                raise ContractMismatch(
                    f"observations.{key}.shape", tuple(policy.obs_shapes[key]), spec.shape, "policy input"
                )
        self.n_obs_steps = policy.cfg.n_obs_steps
        self.act_steps = policy.cfg.act_steps
        self.generator = torch.Generator(device=self.device)
        self.history = ObsHistory(self.keys, self.n_obs_steps)
        self.queue: deque[np.ndarray] = deque()
        self.predictions = 0  # policy calls so far (each one yields `act_steps` actions)
        self._episodes = 0
        self._calls_this_episode = 0
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        """Start an episode: empty history and queue, reseed the sampling generator (`seed`, else base + episode)."""
        self.generator.manual_seed(self.seed + self._episodes if seed is None else seed)
        self._episodes += 1
        self.history.clear()
        self.queue.clear()
        self._calls_this_episode = 0

    def __call__(self, env: Any, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The `rollout.Policy` callable: one action for the observation `env` just returned."""
        if getattr(env, "steps", None) == 0 and self._calls_this_episode > 0:
            self.reset()  # a new episode the runner was not told about
        return self.act(obs)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        frame = {}
        for key in self.keys:
            value = np.asarray(obs[key])
            spec = self.contract.observations[key]
            if value.shape != spec.shape or value.dtype != np.dtype(spec.dtype):
                raise ContractMismatch(
                    f"observations.{key}",
                    f"{spec.dtype}{list(spec.shape)}",
                    f"{value.dtype}{list(value.shape)}",
                    "observation",
                )
            frame[key] = value
        self.history.push(frame)
        if not self.queue:
            self.queue.extend(self._predict_chunk())
        self._calls_this_episode += 1
        return self.queue.popleft()

    def _predict_chunk(self) -> list[np.ndarray]:
        obs = {
            key: torch.from_numpy(v)[None].to(self.device) for key, v in self.history.stacked().items()
        }  # key -> (1, To, *shape)
        with torch.inference_mode():
            chunk = self.policy.predict(obs, deterministic=self.deterministic, generator=self.generator)
        self.predictions += 1
        if (
            chunk.ndim != 3
            or chunk.shape[0] != 1
            or chunk.shape[1] < self.act_steps
            or chunk.shape[2] != self.contract.action_dim
        ):
            raise ContractMismatch(
                "action_dim",
                f"(1, >={self.act_steps}, {self.contract.action_dim})",
                tuple(chunk.shape),
                "predicted chunk",
            )
        actions = chunk[0, : self.act_steps].detach().cpu().double().numpy().copy()
        actions[:, -1] = np.clip(actions[:, -1], 0.0, 1.0)  # the gripper command is the last dimension
        return list(actions)
