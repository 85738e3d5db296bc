"""The off-policy IN-RIL learner (SAC in the RLPD recipe, IDQL): critic updates from replay, actor steps interleaved
with IL steps by the same `InterleaveSchedule` and separated by the same gradient surgery as the PPO learner.

`update(n)` runs n critic updates, read top to bottom:

    for each of n updates:
        batch = demo_fraction of demos + the rest online                    (RLPD symmetric sampling)
        critic step (SAC: ensemble TD; IDQL: expectile V, then Q on V(s')) + Polyak of the target critics
        after `critic_warmup_updates` critic updates, every `actor_every` of them, one actor optimiser step:
            next = schedule.next_update()                                   m "rl" steps, then `il_steps` "il"
            "rl": the algorithm's actor loss on the batch  -> grads -> separate from IL's -> clip -> rl optimiser
                  (SAC: + sac_bc_coef x the IL loss on a demo batch, the BC anchor; then its temperature step)
            "il": the imitation loss on a demonstration batch -> grads -> separate from RL's -> clip -> il optimiser

One "RL update" is one actor optimiser step, so m counts exactly what the paper's m counts (tested). The reference for
PCGrad / orthogonal is the other objective's gradient fresh at the current weights (the IL loss on a fresh demo batch
for an RL step, the RL loss on a fresh replay batch for an IL step: no state carried between updates, so a resumed run
continues exactly).
"""

from __future__ import annotations

import copy
import json
import math
from collections import defaultdict
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from inril_robot.config import FinetuneConfig, IDQLActConfig, OffPolicyConfig
from inril_robot.learning.inril.learner import DemoSource, make_schedule
from inril_robot.learning.inril.separation import separate
from inril_robot.learning.policies.base import Obs, Policy
from inril_robot.learning.policies.diffusion import DiffusionPolicy
from inril_robot.learning.policies.encoders import ObsEncoder
from inril_robot.learning.policies.gaussian import GaussianPolicy
from inril_robot.learning.policies.idql import IDQLPolicy
from inril_robot.learning.policies.residual import ResidualPolicy
from inril_robot.learning.rl import idql, sac
from inril_robot.learning.rl.replay import Batch, ReplayBuffer, sample_mixed

Objective = Literal["rl", "il"]


# ------------------------------------------------------------------------------------------------ the algorithms
def q_ensemble(policy: Policy, o: OffPolicyConfig) -> tuple[sac.QEnsemble, sac.QEnsemble]:
    """The Q ensemble over the policy's observations and executed actions, and its frozen target copy."""
    c = policy.cfg
    critic = sac.QEnsemble(
        ObsEncoder(policy.normalizer, policy.obs_shapes, c),
        c.act_steps * policy.action_dim,
        o.critic_hidden,
        o.critic_ensemble,
    )
    return critic, copy.deepcopy(critic).requires_grad_(False)


class SACAlgo:
    """RLPD's SAC: tanh-Gaussian actor around the BC Gaussian (`sac`) or a bounded residual on a frozen or IL-trained
    base (`residual-sac`), LayerNorm Q ensemble, auto-tuned temperature."""

    def __init__(self, actor: sac.Actor, cfg: FinetuneConfig, value_range: tuple[float, float] | None) -> None:
        o = cfg.offpolicy
        self.cfg, self.value_range = o, value_range
        self.actor = actor
        policy = actor.policy
        self.policy: Policy = policy
        self.residual = isinstance(actor, sac.ResidualSACActor)
        c = policy.cfg
        self.critic, self.target = q_ensemble(policy, o)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=o.critic_lr)
        self.log_alpha = torch.tensor(math.log(o.init_temperature), requires_grad=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=o.temperature_lr)
        per_dim = o.target_entropy
        if per_dim is None:  # the noise the actor starts with: the residual's initial std, or BC's exploration std
            if self.residual:
                log_std = cfg.residual.init_log_std
            else:
                log_std = cfg.exploration_log_std if cfg.exploration_log_std is not None else cfg.max_log_std
            per_dim = sac.default_target_entropy(log_std, 1)
        self.target_entropy = per_dim * c.act_steps * policy.action_dim

    def to(self, device: torch.device) -> SACAlgo:
        """Critics and temperature on `device` (call before the first update: the temperature's optimiser is
        rebuilt around the moved tensor)."""
        self.critic.to(device)
        self.target.to(device)
        self.log_alpha = self.log_alpha.detach().to(device).requires_grad_(True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=self.cfg.temperature_lr)
        return self

    def critic_step(self, batch: Batch, generator: torch.Generator) -> dict[str, float]:
        o = self.cfg
        alpha = self.log_alpha.exp().detach()
        loss, stats = sac.critic_loss(
            self.critic,
            self.target,
            self.actor,
            batch,
            o.gamma,
            o.critic_subsample,
            alpha,
            o.backup_entropy,
            self.value_range,
            generator,
            o.time_limit_bootstrap,
        )
        _descend(self.critic_opt, loss, self.critic.parameters(), o.max_grad_norm)
        sac.polyak(self.target, self.critic, o.tau)
        return stats

    def rl_loss(self, batch: Batch, generator: torch.Generator) -> tuple[Tensor, dict[str, Any]]:
        loss, log_prob, stats = sac.actor_loss(self.critic, self.actor, batch, self.log_alpha.exp(), generator)
        return loss, {**stats, "_log_prob": log_prob}

    def after_rl(self, extra: dict[str, Any]) -> dict[str, float]:
        """The temperature step on the actor step's log-probabilities."""
        loss = sac.temperature_loss(self.log_alpha, extra["_log_prob"], self.target_entropy)
        self.alpha_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.alpha_opt.step()
        return {"alpha": float(self.log_alpha.detach().exp())}

    def il_loss(self, obs: Obs, actions: Tensor) -> Tensor:
        return self.actor.il_loss(obs, actions)

    @torch.no_grad()
    def act(self, obs: Obs, explore: bool, generator: torch.Generator | None) -> Tensor:
        return self.actor.sample(obs, generator)[0] if explore else self.actor.deterministic(obs)

    def after_step(self) -> None:
        self.actor.clamp_log_std()

    def state_dict(self) -> dict[str, Any]:
        return {
            "critic": self.critic.state_dict(),
            "target": self.target.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "alpha_opt": self.alpha_opt.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.critic.load_state_dict(state["critic"])
        self.target.load_state_dict(state["target"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])


class IDQLAlgo:
    """IDQL: diffusion behaviour actor on the replay, expectile V, Q ensemble on V(s'), Q-selected candidates."""

    def __init__(
        self,
        policy: DiffusionPolicy,
        cfg: FinetuneConfig,
        value_range: tuple[float, float] | None,
        deployable: IDQLPolicy | None = None,
    ) -> None:
        """`deployable`: an IDQL checkpoint's policy to continue from (its critics); else fresh critics."""
        o = self.cfg = cfg.offpolicy
        self.value_range = value_range
        self.policy: Policy = policy
        self.diffusion = policy
        act = IDQLActConfig(
            candidates=o.idql_candidates,
            eta=o.idql_act_eta,
            rule=o.idql_act_rule,
            expectile=o.idql_expectile,
            critic_hidden=o.critic_hidden,
            critic_ensemble=o.critic_ensemble,
        )
        if deployable is None:
            deployable = IDQLPolicy(policy, act)
        else:  # its networks as they are; how it acts from this run's settings
            kept = deployable.act_cfg
            act = act.model_copy(update={"critic_hidden": kept.critic_hidden, "critic_ensemble": kept.critic_ensemble})
            deployable.cfg = deployable.cfg.model_copy(update={"idql": act})
        # what `last.pt` holds, what the run evaluates and what it explores with (`act`)
        self.deployable = deployable
        self.critic, self.value = deployable.critic, deployable.value
        self.target = copy.deepcopy(self.critic).requires_grad_(False)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=o.critic_lr)
        self.value_opt = torch.optim.Adam(self.value.parameters(), lr=o.critic_lr)

    def to(self, device: torch.device) -> IDQLAlgo:
        for net in (self.critic, self.target, self.value):
            net.to(device)
        return self

    def critic_step(self, batch: Batch, generator: torch.Generator) -> dict[str, float]:
        o = self.cfg
        v_loss = idql.value_loss(self.value, self.target, self.diffusion, batch, o.idql_expectile)
        _descend(self.value_opt, v_loss, self.value.parameters(), o.max_grad_norm)
        loss = idql.q_loss(
            self.critic, self.value, self.diffusion, batch, o.gamma, self.value_range, o.time_limit_bootstrap
        )
        _descend(self.critic_opt, loss, self.critic.parameters(), o.max_grad_norm)
        sac.polyak(self.target, self.critic, o.tau)
        return {"critic_loss": loss.item(), "value_loss": v_loss.item()}

    def rl_loss(self, batch: Batch, generator: torch.Generator) -> tuple[Tensor, dict[str, Any]]:
        self.diffusion.train()
        try:
            loss = idql.actor_loss(self.diffusion, batch)
        finally:
            self.diffusion.eval()
        return loss, {"actor_loss": loss.item()}

    def after_rl(self, extra: dict[str, Any]) -> dict[str, float]:
        return {}

    def il_loss(self, obs: Obs, actions: Tensor) -> Tensor:
        return self.diffusion.loss(obs, actions)

    @torch.no_grad()
    def act(self, obs: Obs, explore: bool, generator: torch.Generator | None) -> Tensor:
        return self.deployable.predict_normalized(obs, deterministic=not explore, generator=generator)

    def after_step(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {
            "critic": self.critic.state_dict(),
            "target": self.target.state_dict(),
            "value": self.value.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "value_opt": self.value_opt.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.critic.load_state_dict(state["critic"])
        self.target.load_state_dict(state["target"])
        self.value.load_state_dict(state["value"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.value_opt.load_state_dict(state["value_opt"])


Algo = SACAlgo | IDQLAlgo


def make_algo(policy: Policy, cfg: FinetuneConfig, value_range: tuple[float, float] | None) -> Algo:
    if cfg.algo == "sac":
        if not isinstance(policy, GaussianPolicy) or policy.log_std_head is not None:
            raise TypeError(
                "--algo sac fine-tunes a Gaussian policy with a learned per-dimension log-std "
                f"(the checkpoint holds a {policy.cfg.kind} policy; diffusion: --algo idql)"
            )
        with torch.no_grad():
            if cfg.exploration_log_std is not None:
                policy.log_std.fill_(cfg.exploration_log_std)
            policy.log_std.clamp_(cfg.min_log_std, cfg.max_log_std)
        return SACAlgo(sac.TanhGaussianActor(policy, (cfg.min_log_std, cfg.max_log_std)), cfg, value_range)
    if cfg.algo == "residual-sac":
        if isinstance(policy, ResidualPolicy | IDQLPolicy):
            raise TypeError(
                f"--algo residual-sac puts a residual on a BC checkpoint; this one holds a {type(policy).__name__} "
                "(fine-tune its base checkpoint instead)"
            )
        # IN-RIL's network separation trains the base with IL; residual RL alone (m = 0) keeps it frozen
        residual = ResidualPolicy.from_config(policy, cfg.residual, freeze_base=cfg.inril.il_every == 0, squash=True)
        return SACAlgo(sac.ResidualSACActor(residual, cfg.offpolicy.residual_squashed_entropy), cfg, value_range)
    if cfg.algo == "idql":
        if isinstance(policy, IDQLPolicy):
            return IDQLAlgo(policy.diffusion, cfg, value_range, deployable=policy)
        if not isinstance(policy, DiffusionPolicy):
            raise TypeError(
                f"--algo idql fine-tunes a diffusion policy; the checkpoint holds a {policy.cfg.kind} policy "
                "(Gaussian: --algo sac)"
            )
        return IDQLAlgo(policy, cfg, value_range)
    raise ValueError(f"{cfg.algo!r} is not an off-policy algorithm")


def _descend(opt: torch.optim.Optimizer, loss: Tensor, params: Any, max_norm: float) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(params, max_norm)
    opt.step()


# ------------------------------------------------------------------------------------------------ the learner
class OffPolicyLearner:
    def __init__(
        self,
        algo: Algo,
        cfg: FinetuneConfig,
        online: ReplayBuffer,
        demo_replay: ReplayBuffer | None,
        demos: DemoSource | None,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> None:
        self.algo, self.cfg, self.online, self.demo_replay, self.demos = algo, cfg, online, demo_replay, demos
        self.device = torch.device(device)
        self.schedule = make_schedule(cfg)
        self.rl_only = self.schedule.m == 0 and cfg.inril.il_every != "auto"
        if cfg.inril.il_every == "auto":
            raise ValueError("il_every=auto is implemented for the PPO learner only; give the off-policy learner an m")
        if not self.rl_only and demos is None:
            raise ValueError("IN-RIL interleaves IL steps (il_every != 0) and needs demonstrations (--demos)")
        # SAC's BC anchor; a residual actor has none (its bound is its anchor)
        self.anchored = isinstance(algo, SACAlgo) and not algo.residual and cfg.offpolicy.sac_bc_coef > 0
        if self.anchored and demos is None:
            raise ValueError(
                "offpolicy.sac_bc_coef > 0 anchors SAC's actor to the demonstrations: pass --demos (or set it to 0)"
            )
        if cfg.offpolicy.demo_fraction > 0 and demo_replay is None:
            raise ValueError("offpolicy.demo_fraction > 0 mixes demonstrations into RL batches: pass --demos")
        policy = algo.policy
        rl_lr = cfg.offpolicy.actor_lr
        if isinstance(policy, ResidualPolicy):  # network separation: RL trains the residual, IL the base
            self.params: dict[Objective, list[nn.Parameter]] = {
                "rl": policy.residual_parameters(),
                "il": [p for p in policy.base_parameters() if p.requires_grad],
            }
            rl_lr = cfg.offpolicy.residual_actor_lr
        else:
            if cfg.inril.separation == "residual" and not self.rl_only:
                raise ValueError("residual separation needs a residual policy (--algo residual-sac)")
            shared = [p for p in policy.parameters() if p.requires_grad]
            self.params = {"rl": shared, "il": shared}
        if not self.rl_only and not self.params["il"]:
            raise ValueError("IN-RIL's IL steps need trainable parameters (a frozen residual base?)")
        il_lr = rl_lr * cfg.inril.il_lr_ratio if cfg.inril.il_lr_ratio else cfg.inril.il_lr
        self.optimizers: dict[Objective, torch.optim.Optimizer] = {
            "rl": torch.optim.Adam(self.params["rl"], lr=rl_lr),
            "il": torch.optim.Adam(self.params["il"] or self.params["rl"], lr=il_lr),
        }
        self.critic_updates = 0
        # batches, target subsets, actor noise; on the learner's device (SAC's noise is drawn there)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.demo_rng = np.random.default_rng(seed)  # IL demonstration batches

    @property
    def actor_steps(self) -> int:
        return self.schedule.step

    def update(self, n_updates: int) -> dict[str, Any]:
        """`n_updates` critic updates with their actor and IL steps; mean statistics."""
        o = self.cfg.offpolicy
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)

        def log(values: dict[str, Any]) -> None:
            for key, value in values.items():
                if not key.startswith("_"):
                    sums[key] += float(value)
                    counts[key] += 1

        self.algo.policy.eval()
        for _ in range(n_updates):
            batch = self._rl_batch()
            log(self.algo.critic_step(batch, self.generator))
            self.critic_updates += 1
            if self.critic_updates <= o.critic_warmup_updates or self.critic_updates % o.actor_every:
                continue
            if self.schedule.next_update() == "rl":
                loss, extra = self._rl_loss(batch)
                log(extra)
                log(self._step("rl", loss))
                log(self.algo.after_rl(extra))
            else:
                loss = self._il_loss()
                log({"il_loss": loss.item(), **self._step("il", loss)})
        out: dict[str, Any] = {k: sums[k] / counts[k] for k in sums}
        out.update(
            m=self.schedule.m,
            rl_steps=self.schedule.n_rl,
            il_steps=self.schedule.n_il,
            critic_updates=self.critic_updates,
            actor_lr=self.optimizers["rl"].param_groups[0]["lr"],
            il_lr=self.optimizers["il"].param_groups[0]["lr"],
        )
        return out

    def _rl_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Any]]:
        """The RL objective of one actor step: the algorithm's actor loss, plus SAC's BC anchor on a demo batch."""
        loss, extra = self.algo.rl_loss(batch, self.generator)
        if self.anchored:
            bc = self._il_loss()
            loss = loss + self.cfg.offpolicy.sac_bc_coef * bc
            extra = {**extra, "bc_loss": bc.item()}
        return loss, extra

    def _il_loss(self) -> Tensor:
        assert self.demos is not None
        obs_np, actions_np = self.demos(self.cfg.inril.il_batch_size, self.demo_rng)
        obs = {k: torch.from_numpy(v).to(self.device) for k, v in obs_np.items()}
        return self.algo.il_loss(obs, torch.from_numpy(actions_np).to(self.device))

    def _step(self, objective: Objective, loss: Tensor) -> dict[str, float]:
        """Gradient of `loss`, separated from the other objective's fresh gradient (pcgrad / orthogonal), clipped,
        stepped by the objective's own optimiser."""
        params = self.params[objective]
        grads = list(torch.autograd.grad(loss, params, allow_unused=True))
        stats: dict[str, float] = {}
        if not self.rl_only and self.cfg.inril.separation in ("pcgrad", "orthogonal"):
            reference = self._reference("il" if objective == "rl" else "rl")
            grads, cos = separate(grads, reference, self.cfg.inril.separation)
            if cos is not None:
                stats[f"{objective}_cos_ref"] = cos
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        stats[f"{objective}_grad_norm"] = float(nn.utils.clip_grad_norm_(params, self.cfg.offpolicy.max_grad_norm))
        self.optimizers[objective].step()
        self.optimizers[objective].zero_grad(set_to_none=True)
        self.algo.after_step()
        return stats

    def _reference(self, other: Objective) -> list[Tensor | None] | None:
        loss = self._il_loss() if other == "il" else self._rl_loss(self._rl_batch())[0]
        return list(torch.autograd.grad(loss, self.params[other], allow_unused=True))

    def _rl_batch(self) -> Batch:
        o = self.cfg.offpolicy
        return sample_mixed(self.online, self.demo_replay, o.batch_size, o.demo_fraction, self.generator)

    # ------------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.algo.policy.state_dict(),
            "algo": self.algo.state_dict(),
            "rl_opt": self.optimizers["rl"].state_dict(),
            "il_opt": self.optimizers["il"].state_dict(),
            "schedule": self.schedule.state_dict(),
            "critic_updates": self.critic_updates,
            "generator": self.generator.get_state(),
            "demo_rng": json.dumps(self.demo_rng.bit_generator.state),
            "online": self.online.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.algo.policy.load_state_dict(state["policy"])
        self.algo.load_state_dict(state["algo"])
        self.optimizers["rl"].load_state_dict(state["rl_opt"])
        self.optimizers["il"].load_state_dict(state["il_opt"])
        self.schedule.load_state_dict(state["schedule"])
        self.critic_updates = int(state["critic_updates"])
        self.generator.set_state(state["generator"])
        self.demo_rng.bit_generator.state = json.loads(state["demo_rng"])
        self.online.load_state_dict(state["online"])
