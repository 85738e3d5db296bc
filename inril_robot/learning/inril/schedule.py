"""Which objective the next actor optimiser step belongs to: m RL steps, then `il_steps` IL steps, repeated.

One "update" is one actor optimiser step (the paper leaves the granularity open; see docs/inril.md). m = 0 means
RL-only (the paper's m = infinity): the schedule never answers "il". m comes from a rule: `FixedM` (what the paper ran)
or `AdaptiveM`, which measures how the IL and RL gradients relate and picks m from that (docs/inril.md derives it).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

Update = Literal["rl", "il"]


class FixedM:
    """A constant m (m = 0: RL only)."""

    every_k: int | None = None  # never asks for gradient observations

    def __init__(self, m: int) -> None:
        if m < 0:
            raise ValueError(f"m must be >= 0, got {m}")
        self.m = m

    def observe(self, g_rl: Tensor, g_il: Tensor) -> None:
        """Nothing to learn."""

    def state_dict(self) -> dict[str, Any]:
        return {"m": self.m}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.m = int(state["m"])


class AdaptiveM:
    """m from EMAs of the IL/RL gradient cosine c and norm ratio r = ||g_il|| / ||g_rl||:

        m = clip(round(m_ref * r_hat * (1 - c_hat)), m_min, m_max)

    more conflict (lower c) and a larger IL/RL norm ratio both give a larger m (docs/inril.md: the IL step's harm to
    the RL objective, in units of one RL step, is bounded by r (1 - c)/2 at first order, and m is chosen so that it
    stays a fixed fraction of a cycle's RL progress). `m_ref` is m for orthogonal gradients of equal norm (c = 0,
    r = 1); it absorbs the IL/RL step-size ratio and the tolerated fraction, and defaults to the paper's robust range.
    Until the first observation m = clip(m_ref). Call `observe` with flattened gradients (N,) every `every_k` steps.
    """

    def __init__(
        self, m_min: int = 2, m_max: int = 30, ema_decay: float = 0.9, every_k: int = 10, m_ref: float = 10.0
    ) -> None:
        if not 1 <= m_min <= m_max:
            raise ValueError(f"need 1 <= m_min <= m_max, got {m_min}, {m_max}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if every_k < 1 or m_ref <= 0:
            raise ValueError(f"need every_k >= 1 and m_ref > 0, got {every_k}, {m_ref}")
        self.m_min, self.m_max, self.ema_decay, self.every_k, self.m_ref = m_min, m_max, ema_decay, every_k, m_ref
        self.cos_hat = 0.0  # EMA of cosine(g_rl, g_il)
        self.ratio_hat = 1.0  # EMA of ||g_il|| / ||g_rl||
        self.n_obs = 0
        self.m = self._clip(m_ref)

    def _clip(self, value: float) -> int:
        return int(min(max(round(value), self.m_min), self.m_max))

    @property
    def rho_hat(self) -> float:
        """Estimated rho = <g_il, g_rl>/||g_rl||^2 = c * r (the paper's coefficient relating the two gradients)."""
        return self.cos_hat * self.ratio_hat

    @torch.no_grad()
    def observe(self, g_rl: Tensor, g_il: Tensor) -> None:
        """Update the EMAs from one pair of flattened gradients (N,), then m. A zero gradient carries no direction and
        is skipped."""
        g_rl, g_il = g_rl.detach().double(), g_il.detach().double()
        n_rl, n_il = g_rl.norm().item(), g_il.norm().item()
        if not (n_rl > 0 and n_il > 0 and math.isfinite(n_rl) and math.isfinite(n_il)):
            return
        cos = max(-1.0, min(1.0, torch.dot(g_rl, g_il).item() / (n_rl * n_il)))
        ratio = n_il / n_rl
        if self.n_obs == 0:  # no bias towards the arbitrary initial values
            self.cos_hat, self.ratio_hat = cos, ratio
        else:
            d = self.ema_decay
            self.cos_hat = d * self.cos_hat + (1 - d) * cos
            self.ratio_hat = d * self.ratio_hat + (1 - d) * ratio
        self.n_obs += 1
        self.m = self._clip(self.m_ref * self.ratio_hat * (1.0 - self.cos_hat))

    def state_dict(self) -> dict[str, Any]:
        return {"cos_hat": self.cos_hat, "ratio_hat": self.ratio_hat, "n_obs": self.n_obs, "m": self.m}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cos_hat, self.ratio_hat = float(state["cos_hat"]), float(state["ratio_hat"])
        self.n_obs, self.m = int(state["n_obs"]), int(state["m"])


class InterleaveSchedule:
    """Counts actor optimiser steps and says which objective takes the next one.

    `next_update()` gives m "rl" then `il_steps` "il", repeated; m is read from the rule at every call, so an adaptive
    m takes effect within the current cycle. The caller computes both flattened gradients and calls `observe` when
    `wants_observation()` is true (only for an `AdaptiveM`, every `every_k` steps).
    """

    def __init__(self, rule: FixedM | AdaptiveM | int, il_steps: int = 1) -> None:
        if il_steps < 1:
            raise ValueError(f"il_steps must be >= 1, got {il_steps}")
        self.rule = FixedM(rule) if isinstance(rule, int) else rule
        self.il_steps = il_steps
        self.step = 0  # actor optimiser steps so far
        self.n_rl = 0
        self.n_il = 0
        self._rl_in_cycle = 0
        self._il_in_cycle = 0

    @property
    def m(self) -> int:
        return self.rule.m

    def next_update(self) -> Update:
        """The objective of the next actor step (and count it)."""
        self.step += 1
        if self.m == 0 or self._rl_in_cycle < self.m:
            self._rl_in_cycle += 1
            self.n_rl += 1
            return "rl"
        self._il_in_cycle += 1
        self.n_il += 1
        if self._il_in_cycle >= self.il_steps:
            self._rl_in_cycle = self._il_in_cycle = 0
        return "il"

    def undo_rl(self) -> None:
        """Take back the "rl" the last `next_update()` gave: the learner stopped the update instead of stepping."""
        if self._rl_in_cycle == 0 or self._il_in_cycle != 0:
            raise RuntimeError("undo_rl() must follow a next_update() that answered 'rl'")
        self.step -= 1
        self.n_rl -= 1
        self._rl_in_cycle -= 1

    def wants_observation(self) -> bool:
        """Whether the caller should measure both gradients and `observe` them before the next step."""
        k = self.rule.every_k
        return k is not None and self.step % k == 0

    def observe(self, g_rl: Tensor, g_il: Tensor) -> None:
        self.rule.observe(g_rl, g_il)

    def state_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.state_dict(),
            "il_steps": self.il_steps,
            "step": self.step,
            "n_rl": self.n_rl,
            "n_il": self.n_il,
            "rl_in_cycle": self._rl_in_cycle,
            "il_in_cycle": self._il_in_cycle,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rule.load_state_dict(state["rule"])
        self.il_steps, self.step = int(state["il_steps"]), int(state["step"])
        self.n_rl, self.n_il = int(state["n_rl"]), int(state["n_il"])
        self._rl_in_cycle, self._il_in_cycle = int(state["rl_in_cycle"]), int(state["il_in_cycle"])
