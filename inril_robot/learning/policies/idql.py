"""IDQL's implicit policy (Hansen-Estruch et al. 2023) as one deployable `Policy`: the diffusion actor with the Q
ensemble and V that choose among its candidates (`rl.idql` trains them). `policy.idql` (`IDQLActConfig`) says how it
acts; `predict(deterministic=True)` is what `eval`, the server, the bench and the in-run evaluation all run."""

from __future__ import annotations

import torch
from torch import Tensor

from inril_robot.config import IDQLActConfig, IDQLRule
from inril_robot.learning.policies.base import Obs, Policy
from inril_robot.learning.policies.critics import QEnsemble, ValueNet, executed
from inril_robot.learning.policies.diffusion import DiffusionPolicy
from inril_robot.learning.policies.encoders import ObsEncoder


@torch.no_grad()
def choose(
    policy: DiffusionPolicy,
    critic: QEnsemble,
    value: ValueNet,
    obs: Obs,
    candidates: int,
    tau: float,
    eta: float,
    rule: IDQLRule,
    generator: torch.Generator | None = None,
) -> Tensor:
    """IDQL's implicit policy: (B, H, A) normalised chunks, one of `candidates` DDIM samples (this `eta`) per state,
    chosen by `rule` (see `IDQLActConfig`)."""
    batch = next(iter(obs.values())).shape[0]
    repeated = {k: v.repeat_interleave(candidates, dim=0) for k, v in obs.items()}  # (B*N, To, ...)
    chunks = policy.sample_normalized(repeated, eta, generator)  # (B*N, H, A)
    q = critic(repeated, executed(policy, chunks)).min(dim=0).values.view(batch, candidates)  # (B, N)
    if rule == "expectile":
        v = value(obs)[:, None]  # (B, 1)
        weights = torch.where(q < v, 1.0 - tau, tau)  # (B, N) expectile weights
        pick = torch.multinomial(weights, 1, generator=generator).squeeze(-1)  # (B,)
    else:
        pick = q.argmax(dim=-1)  # (B,)
    chosen = chunks.view(batch, candidates, *chunks.shape[1:])  # (B, N, H, A)
    return chosen[torch.arange(batch, device=chosen.device), pick]  # (B, H, A)


class IDQLPolicy(Policy):
    """IDQL's implicit policy as one deployable `Policy` (`policy.idql` set): the diffusion actor, the Q ensemble and
    V, acting by `cfg.idql` (`predict(deterministic=True)`: eval, the server, in-run evaluation) or exploring
    (eta-1 candidates by expectile weight). Its checkpoint is what `eval` and `serve` load; IL is the actor's loss."""

    def __init__(self, diffusion: DiffusionPolicy, act: IDQLActConfig) -> None:
        super().__init__(
            diffusion.cfg.model_copy(update={"idql": act}),
            diffusion.normalizer,
            diffusion.obs_shapes,
            diffusion.action_dim,
        )
        c = diffusion.cfg
        self.diffusion = diffusion
        self.critic = QEnsemble(
            ObsEncoder(diffusion.normalizer, diffusion.obs_shapes, c),
            c.act_steps * diffusion.action_dim,
            act.critic_hidden,
            act.critic_ensemble,
        )
        self.value = ValueNet(ObsEncoder(diffusion.normalizer, diffusion.obs_shapes, c), act.critic_hidden)

    @property
    def act_cfg(self) -> IDQLActConfig:
        assert self.cfg.idql is not None
        return self.cfg.idql

    def loss(self, obs: Obs, actions: Tensor) -> Tensor:
        return self.diffusion.loss(obs, actions)

    def predict_normalized(
        self, obs: Obs, deterministic: bool = True, generator: torch.Generator | None = None
    ) -> Tensor:
        a = self.act_cfg
        eta, rule = (a.eta, a.rule) if deterministic else (1.0, "expectile")
        return choose(self.diffusion, self.critic, self.value, obs, a.candidates, a.expectile, eta, rule, generator)
