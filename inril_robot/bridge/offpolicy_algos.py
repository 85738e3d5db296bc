"""`--algo sac | residual-sac | idql` behind the server's asynchronous learner: the in-process off-policy learner
(`inril.offpolicy_learner.OffPolicyLearner`: RLPD's SAC, on the policy or as a residual, or IDQL, IL steps
interleaved by the IN-RIL schedule with gradient separation) seen through `bridge.offpolicy.OffPolicyAlgo`.

One `update()` is one critic update of `OffPolicyLearner.update(1)`, with the actor step (RL or IL, as the schedule
says) that falls due with it, so the server's update-to-data ratio counts what the in-process loop's `utd` counts.
Human interventions reach the IL side (a share of every IL batch, `InterventionDemos`) and the replay (flagged).
The buffer is not part of `state_dict`: `--resume` refills it from the replay log.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from inril_robot.bridge.episodes import InterventionDemos
from inril_robot.config import RunConfig
from inril_robot.core.contract import Contract
from inril_robot.data.store import Dataset
from inril_robot.learning.inril.finetune import FinetuneError, value_range
from inril_robot.learning.policies.base import Obs, Policy
from inril_robot.learning.pretrain import DemoWindows, check_dataset_fits
from inril_robot.learning.rl.actor import Actor, ActorSample


class ServingActor(Actor):
    """What the serving process samples exploring chunks from: SAC's tanh-Gaussian around the policy (or its bounded
    residual on the base), or IDQL's diffusion candidates chosen by its critics. Its `state_dict` is what the learner
    publishes."""

    def __init__(self, cfg: RunConfig, algo: Any) -> None:
        super().__init__(algo.policy)  # SAC: the Gaussian or the ResidualPolicy; IDQL: the diffusion actor
        self.algo_name = cfg.finetune.algo
        self.offpolicy = cfg.finetune.offpolicy
        if self.algo_name != "idql":
            self.tanh = algo.actor  # sac.TanhGaussianActor / sac.ResidualSACActor around `self.policy`
        else:
            self.critic, self.value = algo.critic, algo.value

    @torch.no_grad()
    def sample(self, obs: Obs, generator: torch.Generator | None = None) -> ActorSample:
        if self.algo_name != "idql":
            chunk, log_prob = self.tanh.sample(obs, generator)
        else:
            from inril_robot.learning.policies.idql import choose

            o = self.offpolicy  # exploring: eta-1 candidates drawn by expectile weight, as in-process
            chunk = choose(
                self.policy,
                self.critic,
                self.value,
                obs,
                o.idql_candidates,
                o.idql_expectile,
                1.0,
                "expectile",
                generator,
            )
            log_prob = torch.zeros(len(chunk), device=chunk.device)
        return ActorSample(chunk, {"chunk": chunk}, log_prob.reshape(-1, 1))  # the chunk: its unexecuted tail

    def evaluate(self, obs: Obs, record: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError("the off-policy serving actor only samples; its learner lives in another process")


def _algo(cfg: RunConfig, policy: Policy, device: torch.device) -> Any:
    from inril_robot.learning.inril.offpolicy_learner import make_algo

    try:
        return make_algo(policy.to(device), cfg.finetune, value_range(cfg)).to(device)
    except TypeError as e:
        raise FinetuneError(str(e)) from e


def make_serving_actor(cfg: RunConfig, policy: Policy) -> Actor:
    return ServingActor(cfg, _algo(cfg, policy, next(policy.parameters()).device))


class ServerAlgo:
    def __init__(
        self, cfg: RunConfig, policy: Policy, demos: Dataset | None, contract: Contract, device: torch.device
    ) -> None:
        from inril_robot.learning.inril.offpolicy import demo_replay, deployable
        from inril_robot.learning.inril.offpolicy_learner import OffPolicyLearner
        from inril_robot.learning.rl.replay import ReplayBuffer

        f, o = cfg.finetune, cfg.finetune.offpolicy
        self.algo = _algo(cfg, policy, device)
        self.interventions = InterventionDemos()
        source, demo_rb = None, None
        if demos is not None:
            check_dataset_fits(demos, contract)
            c = policy.cfg
            source = self.interventions.wrap(
                DemoWindows(demos, list(policy.obs_shapes), c.n_obs_steps, c.horizon).sample
            )
            demo_rb = demo_replay(demos, policy, device=device) if o.demo_fraction > 0 else None
        try:
            self.learner = OffPolicyLearner(
                self.algo, f, ReplayBuffer(o.capacity, device), demo_rb, source, device, seed=cfg.seed
            )
        except ValueError as e:
            raise FinetuneError(str(e)) from e
        self.actor = ServingActor(cfg, self.algo)
        self.deployable = deployable(self.algo)
        self.learning_starts = max(o.learning_starts, 1)

    def modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.algo.policy, getattr(self.algo, "critic", None)) if m is not None]

    def add(self, transitions: dict[str, np.ndarray]) -> None:
        from inril_robot.learning.rl.replay import log_transitions

        self.learner.online.extend(log_transitions(transitions))

    def add_intervention(self, history: dict[str, np.ndarray], actions: np.ndarray) -> None:
        self.interventions.add(history, actions)

    def can_update(self) -> bool:
        return len(self.learner.online) >= self.learning_starts

    def update(self) -> dict[str, Any]:
        return self.learner.update(1)

    def buffer_size(self) -> int:
        return len(self.learner.online)

    def state_dict(self) -> dict[str, Any]:
        state = self.learner.state_dict()
        state.pop("online")  # the replay log is the buffer's durable copy
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict({**state, "online": self.learner.online.state_dict()})


def make_server_algo(
    cfg: RunConfig, policy: Policy, demos: Dataset | None, contract: Contract, device: torch.device
) -> ServerAlgo:
    return ServerAlgo(cfg, policy, demos, contract, device)
