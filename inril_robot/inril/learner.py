"""The IN-RIL learner: PPO updates on a batch of episodes with IL steps interleaved, read top to bottom in `update`.

One call of `update(buffer)` (a batch of whole episodes, in simulation or from the robot):

    for each epoch, for each minibatch of transitions:
        critic step on 0.5 (V - R)^2                                    (always; alone during critic warm-up)
        if the schedule asks: measure both gradients, update adaptive m
        next = schedule.next_update()                                   m "rl" steps, then `il_steps` "il" steps
        "rl": PPO clipped surrogate on the minibatch     -> grads on rl_parameters -> separate -> clip -> rl_opt
        "il": imitation loss on a demonstration batch     -> grads on il_parameters -> separate -> clip -> il_opt
        stop the update once an RL minibatch's approx KL exceeds target_kl
    update guard: the new weights' actions on recent observations vs the old ones; scale back or reject

Separation (`inril.separation`): "pcgrad" / "orthogonal" project the stepping objective's gradient against the EMA of
the other's recent gradients (docs/inril.md says why an EMA); "residual" needs the residual actor, whose IL and RL
parameters are disjoint; "none" leaves gradients alone. m = 0 (`il_every: 0`) is RL only, i.e. plain PPO.
IL and RL keep separate Adam optimisers (their own step sizes and moment estimates), as the paper prescribes.
"""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from inril_robot.config import FinetuneConfig
from inril_robot.inril.guard import UpdateGuard
from inril_robot.inril.schedule import AdaptiveM, FixedM, InterleaveSchedule
from inril_robot.inril.separation import GradientEMA, aligned, separate
from inril_robot.policies.base import Obs
from inril_robot.rl.actor import Actor
from inril_robot.rl.buffer import RolloutBatch, RolloutBuffer
from inril_robot.rl.ppo import Critic, clipped_surrogate, value_loss

Objective = Literal["rl", "il"]
# (batch_size, rng) -> (obs key -> (B, To, ...) raw numpy, actions (B, H, A) raw numpy): `pretrain.DemoWindows.sample`
DemoSource = Callable[[int, np.random.Generator], tuple[dict[str, np.ndarray], np.ndarray]]


def make_schedule(cfg: FinetuneConfig) -> InterleaveSchedule:
    m = cfg.inril.il_every
    if m == "auto":
        a = cfg.inril.adaptive
        return InterleaveSchedule(AdaptiveM(a.m_min, a.m_max, a.ema_decay, a.every_k, a.m_ref), cfg.inril.il_steps)
    return InterleaveSchedule(FixedM(int(m)), cfg.inril.il_steps)


class InrilLearner:
    def __init__(self, actor: Actor, critic: Critic, cfg: FinetuneConfig, demos: DemoSource | None,
                 device: torch.device | str = "cpu", seed: int = 0) -> None:
        self.actor, self.critic, self.cfg, self.demos = actor, critic, cfg, demos
        self.device = torch.device(device)
        self.schedule = make_schedule(cfg)
        self.rl_only = self.schedule.m == 0 and cfg.inril.il_every != "auto"
        if not self.rl_only and demos is None:
            raise ValueError("IN-RIL interleaves IL steps (il_every != 0) and needs demonstrations (--demos)")
        self.separation = cfg.inril.separation
        self.params: dict[Objective, list[nn.Parameter]] = {"rl": actor.rl_parameters(), "il": actor.il_parameters()}
        if not self.params["rl"]:
            raise ValueError("the actor has no trainable RL parameters")
        if not self.rl_only and not self.params["il"]:
            raise ValueError("the actor has no trainable IL parameters (a frozen residual base?)")
        if (not self.rl_only and self.separation in ("pcgrad", "orthogonal")
                and not _same(self.params["rl"], self.params["il"])):
            raise ValueError(f"separation {self.separation!r} projects gradients of the same parameters; this actor "
                             "splits them (use separation 'residual')")
        self.optimizers: dict[Objective, torch.optim.Optimizer] = {
            "rl": torch.optim.Adam(self.params["rl"], lr=cfg.ppo.actor_lr),
            "il": torch.optim.Adam(self.params["il"] or self.params["rl"], lr=cfg.inril.il_lr),
        }
        self.critic_opt = torch.optim.Adam(critic.parameters(), lr=cfg.ppo.critic_lr)
        self.references: dict[Objective, GradientEMA] = {
            "rl": GradientEMA(cfg.inril.reference_ema_decay), "il": GradientEMA(cfg.inril.reference_ema_decay)}
        self.guard = UpdateGuard(cfg.guard) if cfg.guard.enabled else None
        self.iterations = 0
        self.generator = torch.Generator().manual_seed(seed)  # minibatch order
        self.demo_rng = np.random.default_rng(seed)  # demonstration batches

    # ------------------------------------------------------------------------------------------------ update
    def update(self, buffer: RolloutBuffer) -> dict[str, Any]:
        ppo = self.cfg.ppo
        buffer.compute_returns(ppo.gamma, ppo.gae_lambda, ppo.bootstrap_on_truncation)
        warmup = self.iterations < ppo.critic_warmup_iterations
        live = copy.deepcopy(self.actor.policy) if self.guard is not None and not warmup else None
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)

        def log(values: dict[str, float]) -> None:
            for key, value in values.items():
                sums[key] += value
                counts[key] += 1

        self.actor.policy.eval()  # log-probabilities are recomputed in the mode the episodes were collected in
        epochs_run, stopped = 0, False
        for _ in range(ppo.epochs):
            epochs_run += 1
            for idx in buffer.minibatches(ppo.minibatch_size, self.generator):
                batch = buffer.batch(idx)
                v_loss = value_loss(self.critic, batch, ppo)
                self.critic_opt.zero_grad(set_to_none=True)
                (ppo.vf_coef * v_loss).backward()
                nn.utils.clip_grad_norm_(self.critic.parameters(), ppo.max_grad_norm)
                self.critic_opt.step()
                log({"value_loss": v_loss.item()})
                if warmup:
                    continue
                if self.schedule.wants_observation():
                    self._observe(batch)
                if self.schedule.next_update() == "rl":
                    stats = self._rl_step(batch)
                    log(stats)
                    if ppo.target_kl is not None and stats["approx_kl"] > ppo.target_kl:
                        stopped = True
                        break
                else:
                    log(self._il_step())
            if stopped:
                break

        out: dict[str, Any] = {k: sums[k] / counts[k] for k in sums}
        out.update(iteration=self.iterations, critic_warmup=warmup, epochs_run=epochs_run, early_stopped=stopped,
                   m=self.schedule.m, rl_steps=self.schedule.n_rl, il_steps=self.schedule.n_il,
                   transitions=buffer.size)
        if isinstance(self.schedule.rule, AdaptiveM):
            out.update(cos_hat=self.schedule.rule.cos_hat, ratio_hat=self.schedule.rule.ratio_hat)
        if ppo.lr_schedule == "kl" and ppo.target_kl is not None and "approx_kl" in out:
            out["actor_lr"] = self._adapt_actor_lr(out["approx_kl"])
        if live is not None and self.guard is not None:
            decision = self.guard.check(live, self.actor.policy,
                                        buffer.recent_observations(self.cfg.guard.observations))
            out["guard"] = decision.to_dict()
        self.iterations += 1
        return out

    def _adapt_actor_lr(self, kl: float) -> float:
        """KL-adaptive step size (the rl_games rule): keep the update's mean approx KL within [target/2, 2 target]."""
        ppo = self.cfg.ppo
        assert ppo.target_kl is not None
        group = self.optimizers["rl"].param_groups[0]
        if kl > 2.0 * ppo.target_kl:
            group["lr"] = max(group["lr"] / 1.5, ppo.actor_lr_min)
        elif kl < 0.5 * ppo.target_kl:
            group["lr"] = min(group["lr"] * 1.5, ppo.actor_lr_max)
        return float(group["lr"])

    def _rl_step(self, batch: RolloutBatch) -> dict[str, float]:
        log_prob, entropy = self.actor.evaluate(batch.obs, batch.record)  # (B, K)
        loss, stats = clipped_surrogate(log_prob, batch, self.cfg.ppo, entropy,
                                        getattr(self.actor, "decision_weights", None))
        stats.update(self._step("rl", loss))
        return stats

    def _il_step(self) -> dict[str, float]:
        obs, actions = self._demo_batch()
        self.actor.policy.train()  # image augmentation, as in pre-training
        try:
            loss = self.actor.il_loss(obs, actions)
        finally:
            self.actor.policy.eval()
        return {"il_loss": loss.item(), **self._step("il", loss)}

    def _demo_batch(self) -> tuple[Obs, Tensor]:
        assert self.demos is not None
        obs_np, actions_np = self.demos(self.cfg.inril.il_batch_size, self.demo_rng)
        obs = {k: torch.from_numpy(v).to(self.device) for k, v in obs_np.items()}
        return obs, torch.from_numpy(actions_np).to(self.device)

    def _step(self, objective: Objective, loss: Tensor) -> dict[str, float]:
        """Gradient of `loss` on the objective's parameters, separated from the other objective, clipped, stepped."""
        params = self.params[objective]
        grads = list(torch.autograd.grad(loss, params, allow_unused=True))
        stats: dict[str, float] = {}
        if self.separation in ("pcgrad", "orthogonal"):
            other = self.references["il" if objective == "rl" else "rl"].value()
            self.references[objective].update(grads)  # the raw gradient: the objective's own direction
            grads, cos = separate(grads, other, self.separation)
            if cos is not None:
                stats[f"{objective}_cos_ref"] = cos
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        stats[f"{objective}_grad_norm"] = float(nn.utils.clip_grad_norm_(params, self.cfg.ppo.max_grad_norm))
        self.optimizers[objective].step()
        self.optimizers[objective].zero_grad(set_to_none=True)
        return stats

    def _observe(self, batch: RolloutBatch) -> None:
        """Both gradients on the fine-tuned parameters, no step: what adaptive m learns from."""
        params = _union(self.params["rl"], self.params["il"])
        log_prob, entropy = self.actor.evaluate(batch.obs, batch.record)
        rl_loss, _ = clipped_surrogate(log_prob, batch, self.cfg.ppo, entropy,
                                       getattr(self.actor, "decision_weights", None))
        g_rl = torch.autograd.grad(rl_loss, params, allow_unused=True)
        obs, actions = self._demo_batch()
        g_il = torch.autograd.grad(self.actor.il_loss(obs, actions), params, allow_unused=True)
        g_rl_vec, g_il_vec, _ = aligned(g_rl, g_il)
        self.schedule.observe(g_rl_vec, g_il_vec)

    # ------------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.actor.policy.state_dict(),
            "critic": self.critic.state_dict(),
            "rl_opt": self.optimizers["rl"].state_dict(),
            "il_opt": self.optimizers["il"].state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "schedule": self.schedule.state_dict(),
            "references": {k: v.state_dict() for k, v in self.references.items()},
            "iterations": self.iterations,
            "generator": self.generator.get_state(),
            "demo_rng": json.dumps(self.demo_rng.bit_generator.state),  # 128-bit ints, exact
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.policy.load_state_dict(state["policy"])
        self.critic.load_state_dict(state["critic"])
        self.optimizers["rl"].load_state_dict(state["rl_opt"])
        self.optimizers["il"].load_state_dict(state["il_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.schedule.load_state_dict(state["schedule"])
        for key, ref in self.references.items():
            ref.load_state_dict(state["references"][key])
        self.iterations = int(state["iterations"])
        self.generator.set_state(state["generator"])
        self.demo_rng.bit_generator.state = json.loads(state["demo_rng"])


def _same(a: list[nn.Parameter], b: list[nn.Parameter]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _union(a: list[nn.Parameter], b: list[nn.Parameter]) -> list[nn.Parameter]:
    seen = {id(p) for p in a}
    return a + [p for p in b if id(p) not in seen]
