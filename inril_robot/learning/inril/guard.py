"""A guard between a freshly updated policy and the robot: limit how much one update may change behaviour.

Why: in on-robot RL+IL fine-tuning the learner hands a new set of weights to the runner every few episodes. One bad
gradient step (a huge advantage, a corrupted batch, an exploding denoiser) can turn a policy that was placing cubes
into one that slams the arm into the table, and the first sign of it would be the robot doing so. SERL and
FurnitureBench had no such guard; their updates went straight to the arm. `UpdateGuard` instead compares the
*deterministic* actions of the live and the candidate policy on a batch of recently seen observations and:

- accepts the update when the commanded actions moved by no more than the configured bounds (translation [m],
  rotation [rad], gripper), on the chosen statistic over the batch ("max", or "p95" for a little robustness);
- otherwise (mode "scale") moves the candidate only part of the way: the weights become
  `theta_live + alpha * (theta_candidate - theta_live)` with the largest `alpha` in (0, 1] found by bisection that keeps
  the action change inside the bounds (alpha = 0 is the live policy, always inside), or rejects the update when even
  `min_alpha` of it is too much;
- in mode "reject" refuses any out-of-bounds update outright.

A rejected candidate has its weights reset to the live policy's, so whatever holds the candidate may deploy it safely.
Both policies sample with the same freshly seeded generator, so a diffusion policy's initial noise is identical and the
comparison measures the weights, not the noise.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from inril_robot.config import GuardConfig
from inril_robot.learning.policies.base import Obs, Policy

log = logging.getLogger(__name__)
__all__ = ["GuardConfig", "GuardDecision", "UpdateGuard", "interpolate"]

StateDict = dict[str, Tensor]


@dataclass(frozen=True)
class GuardDecision:
    """What the guard did. `translation`/`rotation`/`gripper` are the action changes of the weights finally applied
    to the candidate (alpha = 1: the update as proposed; rejected: those of the full, refused update)."""

    accepted: bool
    alpha: float
    translation: float
    rotation: float
    gripper: float
    reason: str

    def to_dict(self) -> dict[str, bool | float | str]:
        return asdict(self)


@dataclass(frozen=True)
class ActionChange:
    translation: float
    rotation: float
    gripper: float


class UpdateGuard:
    def __init__(self, cfg: GuardConfig | None = None) -> None:
        self.cfg = cfg or GuardConfig()

    # ------------------------------------------------------------------------------------------------- measuring
    @torch.no_grad()
    def _actions(self, policy: Policy, obs: Obs) -> Tensor:
        """Deterministic raw action chunk (B, H, A), in eval mode, with a freshly seeded generator."""
        device = next(iter(obs.values())).device
        generator = torch.Generator(device=device).manual_seed(self.cfg.seed)
        was_training = policy.training
        policy.eval()
        try:
            return policy.predict(obs, deterministic=True, generator=generator)
        finally:
            policy.train(was_training)

    def _reduce(self, per_sample: Tensor) -> float:
        if self.cfg.statistic == "max":
            return per_sample.max().item()
        return torch.quantile(per_sample.double(), 0.95).item()

    def measure(self, live_actions: Tensor, candidate_actions: Tensor) -> ActionChange:
        """Per sample: the largest change over the chunk of ||d xyz||, ||d rotvec|| and |d gripper|; then the
        configured statistic over the batch."""
        if live_actions.shape[-1] < 7:
            raise ValueError(f"expected actions (B, H, 7) = dxyz, rotvec, gripper; got {tuple(live_actions.shape)}")
        delta = (candidate_actions - live_actions).double()  # (B, H, A)
        translation = delta[..., 0:3].norm(dim=-1).amax(dim=-1)  # (B,)
        rotation = delta[..., 3:6].norm(dim=-1).amax(dim=-1)  # (B,)
        gripper = delta[..., 6].abs().amax(dim=-1)  # (B,)
        return ActionChange(self._reduce(translation), self._reduce(rotation), self._reduce(gripper))

    def within_bounds(self, change: ActionChange) -> bool:
        return (
            change.translation <= self.cfg.max_translation
            and change.rotation <= self.cfg.max_rotation
            and change.gripper <= self.cfg.max_gripper
        )

    # -------------------------------------------------------------------------------------------------- deciding
    def check(self, live: Policy, candidate: Policy, obs_batch: Obs) -> GuardDecision:
        """Accept, scale (in place) or reject (candidate reset to live) the update `live -> candidate`."""
        live_actions = self._actions(live, obs_batch)
        live_sd = _detached(live.state_dict())
        candidate_sd = _detached(candidate.state_dict())
        full = self.measure(live_actions, self._actions(candidate, obs_batch))
        if self.within_bounds(full):
            return self._log(GuardDecision(True, 1.0, full.translation, full.rotation, full.gripper, "within bounds"))
        if self.cfg.mode == "reject":
            candidate.load_state_dict(live_sd)
            return self._log(
                GuardDecision(
                    False,
                    0.0,
                    full.translation,
                    full.rotation,
                    full.gripper,
                    f"update out of bounds ({self._describe(full)}); mode=reject",
                )
            )

        lo, hi, best = 0.0, 1.0, None  # invariant: alpha = lo is inside the bounds (0 is the live policy)
        for _ in range(self.cfg.bisection_steps):
            mid = (lo + hi) / 2
            candidate.load_state_dict(interpolate(live_sd, candidate_sd, mid))
            change = self.measure(live_actions, self._actions(candidate, obs_batch))
            if self.within_bounds(change):
                lo, best = mid, change
            else:
                hi = mid
        if best is None or lo < self.cfg.min_alpha:
            candidate.load_state_dict(live_sd)
            return self._log(
                GuardDecision(
                    False,
                    0.0,
                    full.translation,
                    full.rotation,
                    full.gripper,
                    f"update out of bounds ({self._describe(full)}) and alpha={lo:.4g} < "
                    f"min_alpha={self.cfg.min_alpha}",
                )
            )
        candidate.load_state_dict(interpolate(live_sd, candidate_sd, lo))
        return self._log(
            GuardDecision(
                True,
                lo,
                best.translation,
                best.rotation,
                best.gripper,
                f"update out of bounds ({self._describe(full)}); scaled by alpha={lo:.4g}",
            )
        )

    def _describe(self, change: ActionChange) -> str:
        c = self.cfg
        return (
            f"translation {change.translation:.4g}/{c.max_translation} m, rotation {change.rotation:.4g}/"
            f"{c.max_rotation} rad, gripper {change.gripper:.4g}/{c.max_gripper}"
        )

    @staticmethod
    def _log(decision: GuardDecision) -> GuardDecision:
        level = logging.INFO if decision.accepted and decision.alpha == 1.0 else logging.WARNING
        log.log(level, "update guard: %s (accepted=%s, alpha=%.4g)", decision.reason, decision.accepted, decision.alpha)
        return decision


def _detached(state_dict: StateDict) -> StateDict:
    return {k: v.detach().clone() for k, v in state_dict.items()}


def interpolate(live: StateDict, candidate: StateDict, alpha: float) -> StateDict:
    """`live + alpha * (candidate - live)` for every floating-point entry (parameters and buffers alike); other
    entries (integer counters, masks) are taken from the candidate."""
    if live.keys() != candidate.keys():
        raise ValueError(f"state dicts differ in keys: {sorted(live.keys() ^ candidate.keys())}")
    return {
        k: torch.lerp(live[k], candidate[k], alpha) if candidate[k].is_floating_point() else candidate[k].clone()
        for k in candidate
    }
