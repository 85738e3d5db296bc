"""The IN-RIL learner: PPO updates on a batch of episodes with IL steps interleaved, read top to bottom in `update`.

One call of `update(buffer)` (a batch of whole episodes, in simulation or from the robot):

    returns: GAE with successes and safety stops terminal; the time limit bootstrapped only by the trust rule
    for each epoch, for each minibatch of transitions:
        critic step on 0.5 (V - R)^2                                    (always; alone during critic warm-up)
        if the schedule asks: measure both (Adam-preconditioned) steps, update adaptive m
        next = schedule.next_update()                                   m "rl" steps, then `il_steps` "il" steps
        "rl": stop the update if this minibatch's RL KL > kl_stop_factor * target_kl; else PPO clipped surrogate
              (+ bc_coef * IL loss)                     -> grads on rl_parameters -> separate -> clip -> rl_opt
        "il": imitation loss on a demonstration batch     -> grads on il_parameters -> separate -> clip -> il_opt
    RL KL of the whole update on the whole batch -> adapt the actor lr; IL lr = il_lr_ratio * actor lr
    update guard: the new weights' actions on recent observations vs the old ones; scale back or reject

KL accounting. log pi_now - log pi_behaviour is a sum of per-step log-ratio changes, so the part IL steps caused is
measured exactly: around every IL step the learner re-evaluates the batch's log-probabilities and accumulates the
change (`il_shift`, (P, K)). The RL KL (early stop, step-size rule) is the k3 estimate on the log-ratio minus
`il_shift`; the IL KL is reported apart (`il_kl`). The PPO ratio itself stays pi_now / pi_behaviour (the importance
weight of the collected data).

Separation (`inril.separation`): "pcgrad" / "orthogonal" project the stepping objective's gradient against the other
objective's gradient, fresh at the current weights (`reference: fresh`) or its EMA (`ema`); "residual" needs the
residual actor, whose IL and RL parameters are disjoint; "none" leaves gradients alone. m = 0 (`il_every: 0`) is RL
only, i.e. plain PPO. IL and RL keep separate Adam optimisers, as the paper prescribes; the log-std trains in its own
group of the RL optimiser (`log_std_lr`), projected into the configured floor and ceiling after every step.
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
from inril_robot.learning.inril.guard import UpdateGuard
from inril_robot.learning.inril.schedule import AdaptiveM, FixedM, InterleaveSchedule
from inril_robot.learning.inril.separation import GradientEMA, aligned, separate
from inril_robot.learning.policies.base import Obs
from inril_robot.learning.rl.actor import Actor
from inril_robot.learning.rl.buffer import RolloutBatch, RolloutBuffer
from inril_robot.learning.rl.ppo import Critic, clipped_surrogate, value_loss

Objective = Literal["rl", "il"]
# (batch_size, rng) -> (obs key -> (B, To, ...) raw numpy, actions (B, H, A) raw numpy): `pretrain.DemoWindows.sample`
DemoSource = Callable[[int, np.random.Generator], tuple[dict[str, np.ndarray], np.ndarray]]


def make_schedule(cfg: FinetuneConfig) -> InterleaveSchedule:
    m = cfg.inril.il_every
    if m == "auto":
        a = cfg.inril.adaptive
        return InterleaveSchedule(AdaptiveM(a.m_min, a.m_max, a.ema_decay, a.every_k, a.m_ref), cfg.inril.il_steps)
    return InterleaveSchedule(FixedM(int(m)), cfg.inril.il_steps)


# The scalars `InrilLearner.update` reports, as metrics.csv columns: every trainer that runs the learner (fine-tuning
# in sim, the policy server) logs these.
UPDATE_METRICS = (
    "m",
    "rl_steps",
    "il_steps",
    "policy_loss",
    "value_loss",
    "il_loss",
    "bc_loss",
    "approx_kl",
    "update_kl",
    "update_rl_kl",
    "il_kl",
    "clip_fraction",
    "entropy",
    "epochs_run",
    "actor_lr",
    "il_lr",
    "log_std_mean",
    "rl_cos_ref",
    "il_cos_ref",
    "cos_hat",
    "ratio_hat",
    "guard_alpha",
    "guard_accepted",
    "value_min",
    "value_max",
    "value_mean",
    "return_max",
    "critic_ev",
)


class InrilLearner:
    def __init__(
        self,
        actor: Actor,
        critic: Critic,
        cfg: FinetuneConfig,
        demos: DemoSource | None,
        device: torch.device | str = "cpu",
        seed: int = 0,
        value_range: tuple[float, float] | None = None,
    ) -> None:
        """`value_range`: the feasible discounted returns (from the task's rewards); bootstrap values are clamped
        into it and the critic's values are reported against it."""
        self.actor, self.critic, self.cfg, self.demos = actor, critic, cfg, demos
        self.device = torch.device(device)
        self.value_range = value_range
        self.schedule = make_schedule(cfg)
        self.rl_only = self.schedule.m == 0 and cfg.inril.il_every != "auto"
        if not self.rl_only and demos is None:
            raise ValueError("IN-RIL interleaves IL steps (il_every != 0) and needs demonstrations (--demos)")
        if cfg.inril.bc_coef > 0 and demos is None:
            raise ValueError("BC-regularised RL (inril.bc_coef > 0) needs demonstrations (--demos)")
        self.separation = cfg.inril.separation
        self.params: dict[Objective, list[nn.Parameter]] = {"rl": actor.rl_parameters(), "il": actor.il_parameters()}
        if not self.params["rl"]:
            raise ValueError("the actor has no trainable RL parameters")
        if not self.rl_only and not self.params["il"]:
            raise ValueError("the actor has no trainable IL parameters (a frozen residual base?)")
        if (
            not self.rl_only
            and self.separation in ("pcgrad", "orthogonal")
            and not _same(self.params["rl"], self.params["il"])
        ):
            raise ValueError(
                f"separation {self.separation!r} projects gradients of the same parameters; this actor "
                "splits them (use separation 'residual')"
            )
        rl_lr = cfg.residual.actor_lr if cfg.algo == "residual-ppo" else cfg.ppo.actor_lr
        std_ids = {id(p) for p in actor.std_parameters()} & {id(p) for p in self.params["rl"]}
        self.std_params = [p for p in self.params["rl"] if id(p) in std_ids]
        groups: list[dict[str, Any]] = [{"params": [p for p in self.params["rl"] if id(p) not in std_ids], "lr": rl_lr}]
        if self.std_params and cfg.log_std_lr > 0:
            groups.append({"params": self.std_params, "lr": cfg.log_std_lr})
        self.optimizers: dict[Objective, torch.optim.Optimizer] = {
            "rl": torch.optim.Adam(groups, lr=rl_lr),
            "il": torch.optim.Adam(self.params["il"] or self.params["rl"], lr=cfg.inril.il_lr),
        }
        self._sync_il_lr()
        self.critic_opt = torch.optim.Adam(critic.parameters(), lr=cfg.ppo.critic_lr)
        self.references: dict[Objective, GradientEMA] = {
            "rl": GradientEMA(cfg.inril.reference_ema_decay),
            "il": GradientEMA(cfg.inril.reference_ema_decay),
        }
        self.guard = UpdateGuard(cfg.guard) if cfg.guard.enabled else None
        self.critic_trusted = False  # the time-limit bootstrap's trust rule (PPOConfig), from the previous batch
        self._last_rl_batch: RolloutBatch | None = None  # the fresh RL reference an IL step projects against
        self.iterations = 0
        self.generator = torch.Generator().manual_seed(seed)  # minibatch order
        self.demo_rng = np.random.default_rng(seed)  # demonstration batches

    # ------------------------------------------------------------------------------------------------ update
    def update(self, buffer: RolloutBuffer) -> dict[str, Any]:
        ppo = self.cfg.ppo
        bootstrap = ppo.time_limit_bootstrap == "trusted" and self.critic_trusted
        buffer.compute_returns(ppo.gamma, ppo.gae_lambda, bootstrap, self.value_range)
        critic_stats = self._critic_stats(buffer)
        self.critic_trusted = critic_stats["critic_ev"] >= ppo.trusted_critic_ev
        warmup = self.iterations < ppo.critic_warmup_iterations
        live = copy.deepcopy(self.actor.policy) if self.guard is not None and not warmup else None
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)

        def log(values: dict[str, float]) -> None:
            for key, value in values.items():
                sums[key] += value
                counts[key] += 1

        self.actor.policy.eval()  # log-probabilities are recomputed in the mode the episodes were collected in
        il_shift = torch.zeros_like(buffer.log_probs)  # (P, K) log-ratio change caused by IL steps
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
                    stats = self._rl_step(batch, il_shift[idx.to(il_shift.device)])
                    if stats is None:
                        self.schedule.undo_rl()
                        stopped = True
                        break
                    log(stats)
                else:
                    before = self._batch_log_probs(buffer)
                    log(self._il_step())
                    il_shift += self._batch_log_probs(buffer) - before
            if stopped:
                break

        out: dict[str, Any] = {k: sums[k] / counts[k] for k in sums}
        out.update(critic_stats)
        out.update(
            iteration=self.iterations,
            critic_warmup=warmup,
            epochs_run=epochs_run,
            early_stopped=stopped,
            m=self.schedule.m,
            rl_steps=self.schedule.n_rl,
            il_steps=self.schedule.n_il,
            transitions=buffer.size,
            bootstrapped_time_limit=bootstrap,
        )
        if not warmup:
            log_ratio = self._batch_log_probs(buffer) - buffer.log_probs  # (P, K)
            out.update(update_kl=_k3(log_ratio), update_rl_kl=_k3(log_ratio - il_shift), il_kl=_k3(il_shift))
            if ppo.lr_schedule == "kl" and ppo.target_kl is not None and counts.get("approx_kl"):
                self._adapt_actor_lr(out["update_rl_kl"])
        if self.std_params:
            out["log_std_mean"] = float(torch.cat([p.detach().flatten() for p in self.std_params]).mean())
        out["actor_lr"] = float(self.optimizers["rl"].param_groups[0]["lr"])
        out["il_lr"] = float(self.optimizers["il"].param_groups[0]["lr"])
        if isinstance(self.schedule.rule, AdaptiveM):
            out.update(cos_hat=self.schedule.rule.cos_hat, ratio_hat=self.schedule.rule.ratio_hat)
        if live is not None and self.guard is not None:
            decision = self.guard.check(
                live, self.actor.policy, buffer.recent_observations(self.cfg.guard.observations)
            )
            out["guard"] = decision.to_dict()
        self.iterations += 1
        return out

    def _adapt_actor_lr(self, kl: float) -> float:
        """The step-size rule: keep the RL KL of whole updates (measured after them, on the whole batch) within
        [target / 1.5, 1.5 target]: lr / 1.5 above, lr * 1.5 below (bounded by actor_lr_min / actor_lr_max).
        The IL lr follows (il_lr_ratio)."""
        ppo = self.cfg.ppo
        assert ppo.target_kl is not None
        group = self.optimizers["rl"].param_groups[0]
        if kl > 1.5 * ppo.target_kl:
            group["lr"] = max(group["lr"] / 1.5, ppo.actor_lr_min)
        elif kl < ppo.target_kl / 1.5:
            group["lr"] = min(group["lr"] * 1.5, ppo.actor_lr_max)
        self._sync_il_lr()
        return float(group["lr"])

    def _sync_il_lr(self) -> None:
        ratio = self.cfg.inril.il_lr_ratio
        if ratio is not None:
            lr = ratio * self.optimizers["rl"].param_groups[0]["lr"]
            for group in self.optimizers["il"].param_groups:
                group["lr"] = lr

    @torch.no_grad()
    def _batch_log_probs(self, buffer: RolloutBuffer, chunk: int = 2048) -> Tensor:
        """The buffer's recorded samples' log-probabilities under the current weights, (P, K)."""
        parts = []
        for idx in torch.arange(buffer.size).split(chunk):
            batch = buffer.batch(idx)
            parts.append(self.actor.evaluate(batch.obs, batch.record)[0])
        return torch.cat(parts)

    @torch.no_grad()
    def _critic_stats(self, buffer: RolloutBuffer) -> dict[str, float]:
        """The collection-time values against the returns they predict: range and explained variance."""
        v, r = buffer.values, buffer.returns
        var = float(r.var()) if r.numel() > 1 else 0.0
        ev = 1.0 - float((r - v).var()) / var if var > 1e-12 else 0.0
        return {
            "value_min": float(v.min()),
            "value_max": float(v.max()),
            "value_mean": float(v.mean()),
            "return_max": float(r.max()),
            "critic_ev": ev,
        }

    def _rl_step(self, batch: RolloutBatch, il_shift: Tensor) -> dict[str, float] | None:
        """One PPO step; None (and no step) when the RL part of the policy change already exceeds the stop bound."""
        ppo = self.cfg.ppo
        log_prob, entropy = self.actor.evaluate(batch.obs, batch.record)  # (B, K)
        rl_kl = _k3((log_prob.detach() - batch.log_probs) - il_shift)
        if ppo.target_kl is not None and rl_kl > ppo.kl_stop_factor * ppo.target_kl:
            return None
        loss, stats = clipped_surrogate(log_prob, batch, ppo, entropy, getattr(self.actor, "decision_weights", None))
        stats["approx_kl"] = rl_kl  # the RL part only (the total is `update_kl`)
        if self.cfg.inril.bc_coef > 0:
            bc = self._il_loss()
            loss = loss + self.cfg.inril.bc_coef * bc
            stats["bc_loss"] = bc.item()
        self._last_rl_batch = batch
        stats.update(self._step("rl", loss, apply=self.cfg.inril.apply_rl))
        return stats

    def _il_loss(self) -> Tensor:
        obs, actions = self._demo_batch()
        self.actor.policy.train()  # image augmentation, as in pre-training
        try:
            return self.actor.il_loss(obs, actions)
        finally:
            self.actor.policy.eval()

    def _il_step(self) -> dict[str, float]:
        loss = self._il_loss()
        return {"il_loss": loss.item(), **self._step("il", loss)}

    def _demo_batch(self) -> tuple[Obs, Tensor]:
        assert self.demos is not None
        obs_np, actions_np = self.demos(self.cfg.inril.il_batch_size, self.demo_rng)
        obs = {k: torch.from_numpy(v).to(self.device) for k, v in obs_np.items()}
        return obs, torch.from_numpy(actions_np).to(self.device)

    def _step(self, objective: Objective, loss: Tensor, apply: bool = True) -> dict[str, float]:
        """Gradient of `loss` on the objective's parameters, separated from the other objective, clipped, stepped
        (`apply` false: everything but the step, for the IL-only control)."""
        params = self.params[objective]
        grads = list(torch.autograd.grad(loss, params, allow_unused=True))
        stats: dict[str, float] = {}
        if self.separation in ("pcgrad", "orthogonal") and not self.rl_only:
            other = self._reference(objective)
            if self.cfg.inril.reference == "ema":
                self.references[objective].update(grads)  # the raw gradient: the objective's own direction
            grads, cos = separate(grads, other, self.separation)
            if cos is not None:
                stats[f"{objective}_cos_ref"] = cos
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        stats[f"{objective}_grad_norm"] = float(nn.utils.clip_grad_norm_(params, self.cfg.ppo.max_grad_norm))
        if apply:
            self.optimizers[objective].step()
        self.optimizers[objective].zero_grad(set_to_none=True)
        bounds = self.actor.log_std_bounds
        if objective == "rl" and self.std_params and bounds is not None:
            with torch.no_grad():
                for p in self.std_params:
                    p.clamp_(*bounds)
        return stats

    def _reference(self, objective: Objective) -> list[Tensor | None] | None:
        """The other objective's gradient to separate from: fresh at the current weights, or its EMA."""
        other: Objective = "il" if objective == "rl" else "rl"
        if self.cfg.inril.reference == "ema":
            return self.references[other].value()
        if other == "il":
            loss = self._il_loss()
        elif self._last_rl_batch is not None:
            b = self._last_rl_batch
            log_prob, entropy = self.actor.evaluate(b.obs, b.record)
            loss, _ = clipped_surrogate(
                log_prob, b, self.cfg.ppo, entropy, getattr(self.actor, "decision_weights", None)
            )
        else:
            return None
        return list(torch.autograd.grad(loss, self.params[other], allow_unused=True))

    def _observe(self, batch: RolloutBatch) -> None:
        """Both objectives' steps on the fine-tuned parameters, no step: what adaptive m learns from. Each gradient
        is preconditioned by its own Adam (the step it would take, lr included), so the norm ratio compares step
        lengths, not the two losses' arbitrary scales (the IL NLL carries 1/sigma^2)."""
        params = _union(self.params["rl"], self.params["il"])
        log_prob, entropy = self.actor.evaluate(batch.obs, batch.record)
        rl_loss, _ = clipped_surrogate(
            log_prob, batch, self.cfg.ppo, entropy, getattr(self.actor, "decision_weights", None)
        )
        g_rl = self._preconditioned("rl", params, torch.autograd.grad(rl_loss, params, allow_unused=True))
        g_il = self._preconditioned("il", params, torch.autograd.grad(self._il_loss(), params, allow_unused=True))
        g_rl_vec, g_il_vec, _ = aligned(g_rl, g_il)
        self.schedule.observe(g_rl_vec, g_il_vec)

    def _preconditioned(
        self, objective: Objective, params: list[nn.Parameter], grads: tuple[Tensor | None, ...]
    ) -> list[Tensor | None]:
        """lr * g / (sqrt(v_hat) + eps) with the optimiser's second moments; lr * sign(g) before its first step."""
        opt = self.optimizers[objective]
        group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
        out: list[Tensor | None] = []
        for p, g in zip(params, grads, strict=True):
            group = group_of.get(id(p))
            if g is None or group is None:
                out.append(None)
                continue
            state = opt.state.get(p, {})
            if "exp_avg_sq" in state:
                step = float(state["step"])
                v_hat = state["exp_avg_sq"] / (1.0 - group["betas"][1] ** step)
                out.append(group["lr"] * g / (v_hat.sqrt() + group["eps"]))
            else:
                out.append(group["lr"] * g / (g.abs() + group["eps"]))
        return out

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
            "critic_trusted": self.critic_trusted,
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
        self.critic_trusted = bool(state.get("critic_trusted", False))
        self._sync_il_lr()
        self.generator.set_state(state["generator"])
        self.demo_rng.bit_generator.state = json.loads(state["demo_rng"])


def _k3(log_ratio: Tensor) -> float:
    """Schulman's k3 estimate of KL(old || new) from log(new / old): mean((r - 1) - log r). Log-ratios are capped at
    50 so that a runaway update reports a huge finite KL instead of inf."""
    capped = log_ratio.double().clamp(max=50.0)
    return float(((capped.exp() - 1.0) - capped).mean()) if log_ratio.numel() else 0.0


def _same(a: list[nn.Parameter], b: list[nn.Parameter]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _union(a: list[nn.Parameter], b: list[nn.Parameter]) -> list[nn.Parameter]:
    seen = {id(p) for p in a}
    return a + [p for p in b if id(p) not in seen]
