"""Gradient separation for IN-RIL: keep the IL and the RL updates from undoing each other.

Gradients are lists with one entry per parameter, `None` for a parameter that received no gradient (the same convention
as `[p.grad for p in params]`). All functions are pure: they return new tensors and never touch `.grad`.

Modes (`SEPARATION_MODES`):
- "none": plain interleaving, gradients untouched;
- "pcgrad": gradient surgery (Yu et al. 2020) -- only when the two gradients conflict (<g, h> < 0), remove from each
  the component along the other;
- "orthogonal": the stricter "orthogonal subspaces" reading -- always remove the component along the other;
- "residual": network separation -- IL updates only the base of a `ResidualPolicy`, RL only its residual head
  (`param_groups_for`); gradients are not projected.

Interleaved case (`project_step`): IN-RIL steps one objective at a time, so when the RL actor steps there is no IL
gradient at hand (and vice versa). Computing one would need a fresh batch and a second backward pass of the other
objective on every step, roughly doubling the learner's cost per step, while the PCGrad variant must cost at most
1.3x RL-only. The reference gradient of the other objective is therefore an exponential moving average of its own
recent gradients (`GradientEMA`), updated for free whenever that objective steps; the projection itself costs a few
dot products over the parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from inril_robot.learning.policies.residual import ResidualPolicy

Grads = Sequence[Tensor | None]
SEPARATION_MODES = ("none", "pcgrad", "orthogonal", "residual")
SeparationMode = Literal["none", "pcgrad", "orthogonal", "residual"]


# ------------------------------------------------------------------------------------------------ flat vectors
def flatten(grads: Grads) -> Tensor:
    """Concatenate the non-None gradients into one vector (N,), N = total number of their elements."""
    parts = [g.reshape(-1) for g in grads if g is not None]
    if not parts:
        return torch.zeros(0)
    return torch.cat(parts)


def unflatten(vec: Tensor, like: Grads) -> list[Tensor | None]:
    """Inverse of `flatten`: split `vec` (N,) into tensors shaped like the non-None entries of `like` (None stays)."""
    needed = sum(ref.numel() for ref in like if ref is not None)
    if needed != vec.numel():
        raise ValueError(f"vector has {vec.numel()} elements, `like` needs {needed}")
    out: list[Tensor | None] = []
    offset = 0
    for ref in like:
        if ref is None:
            out.append(None)
            continue
        n = ref.numel()
        out.append(vec[offset : offset + n].view_as(ref))
        offset += n
    return out


def aligned(a: Grads, b: Grads) -> tuple[Tensor, Tensor, list[Tensor | None]]:
    """Both lists as flat vectors over the same parameters: a None facing a tensor becomes zeros of its shape;
    parameters None in both are skipped. Returns (a_vec (N,), b_vec (N,), shapes-template for `unflatten`)."""
    if len(a) != len(b):
        raise ValueError(f"gradient lists differ in length: {len(a)} vs {len(b)}")
    like: list[Tensor | None] = []
    a_parts: list[Tensor] = []
    b_parts: list[Tensor] = []
    for x, y in zip(a, b, strict=True):
        if x is None and y is None:
            like.append(None)
            continue
        ref = x if x is not None else y
        assert ref is not None
        like.append(ref)
        a_parts.append((x if x is not None else torch.zeros_like(ref)).reshape(-1))
        b_parts.append((y if y is not None else torch.zeros_like(ref)).reshape(-1))
    if not a_parts:
        return torch.zeros(0), torch.zeros(0), like
    return torch.cat(a_parts), torch.cat(b_parts), like


def _remove_component(g: Tensor, h: Tensor, only_if_conflict: bool) -> Tensor:
    """g - <g, h>/||h||^2 h for flat vectors (N,); g unchanged when h is (numerically) zero, or when
    `only_if_conflict` and <g, h> >= 0."""
    dot = torch.dot(g, h)
    denom = torch.dot(h, h)
    if denom <= torch.finfo(h.dtype).tiny or (only_if_conflict and dot >= 0):
        return g.clone()
    return g - (dot / denom) * h


def cosine(a: Grads, b: Grads) -> float:
    """Cosine between two gradient lists over the same parameters (a None counts as zeros); 0 if either is zero."""
    x, y, _ = aligned(a, b)
    return _flat_cosine(x, y)


def _flat_cosine(x: Tensor, y: Tensor) -> float:
    denom = (x.norm() * y.norm()).item()
    return torch.dot(x, y).item() / denom if denom > 0 else 0.0


# ------------------------------------------------------------------------------------------------ projections
def pcgrad(g_rl: Grads, g_il: Grads) -> tuple[list[Tensor | None], list[Tensor | None]]:
    """PCGrad: if <g_rl, g_il> < 0, each gradient loses its component along the ORIGINAL other one:
    g_rl' = g_rl - <g_rl, g_il>/||g_il||^2 g_il and g_il' = g_il - <g_il, g_rl>/||g_rl||^2 g_rl; else both unchanged.
    Afterwards <g_rl', g_il'> = -<g_rl, g_il> (1 - cos^2) >= 0."""
    a, b, like = aligned(g_rl, g_il)
    return (unflatten(_remove_component(a, b, True), like), unflatten(_remove_component(b, a, True), like))


def orthogonal(g_rl: Grads, g_il: Grads) -> tuple[list[Tensor | None], list[Tensor | None]]:
    """Always remove from each gradient its component along the ORIGINAL other: <g_rl', g_il> = <g_il', g_rl> = 0."""
    a, b, like = aligned(g_rl, g_il)
    return (unflatten(_remove_component(a, b, False), like), unflatten(_remove_component(b, a, False), like))


def project_step(g: Grads, reference: Grads | None, mode: SeparationMode) -> list[Tensor | None]:
    """The gradient of the objective stepping now, separated from the other objective's `reference` gradient
    (its `GradientEMA`, see the module docstring). "none" and "residual" return `g` as is (residual separation is done
    by the parameter groups); so does any mode while there is no reference yet."""
    return separate(g, reference, mode)[0]


def separate(g: Grads, reference: Grads | None, mode: SeparationMode) -> tuple[list[Tensor | None], float | None]:
    """`project_step`, plus the cosine between `g` and the reference over the parameters `g` updates (None without a
    reference or a projection), measured on the flat vectors the projection builds anyway."""
    if mode not in SEPARATION_MODES:
        raise ValueError(f"unknown separation mode {mode!r}; expected one of {SEPARATION_MODES}")
    if mode in ("none", "residual") or reference is None:
        return list(g), None
    # project within the parameters this step updates: a parameter without a gradient stays without one, and the
    # update that is actually applied is then exactly separated from the reference
    ref = [None if gi is None else ri for gi, ri in zip(g, reference, strict=True)]
    a, b, like = aligned(g, ref)
    return unflatten(_remove_component(a, b, only_if_conflict=mode == "pcgrad"), like), _flat_cosine(a, b)


class GradientEMA:
    """Exponential moving average of one objective's gradients, the reference the other objective projects against.

    ema <- decay * ema + (1 - decay) * g per parameter (a None gradient counts as zero once the slot exists), with
    Adam-style bias correction so the first updates are not shrunk towards zero. Detached copies, no autograd.
    """

    def __init__(self, decay: float = 0.9) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.n_updates = 0
        self.avg: list[Tensor | None] = []

    @torch.no_grad()
    def update(self, grads: Grads) -> None:
        if not self.avg:
            self.avg = [None] * len(grads)
        if len(grads) != len(self.avg):
            raise ValueError(f"expected {len(self.avg)} gradients, got {len(grads)}")
        for i, g in enumerate(grads):
            slot = self.avg[i]
            if slot is None:
                if g is not None:
                    # an EMA that was zero so far: decay^n * 0 + ... equals (1 - decay) g after the update
                    self.avg[i] = (1.0 - self.decay) * g.detach().clone()
            else:
                slot.mul_(self.decay)
                if g is not None:
                    slot.add_(g.detach(), alpha=1.0 - self.decay)
        self.n_updates += 1

    def value(self) -> list[Tensor | None] | None:
        """The bias-corrected average, None before the first update."""
        if self.n_updates == 0:
            return None
        correction = 1.0 - self.decay**self.n_updates
        return [None if a is None else a / correction for a in self.avg]

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "n_updates": self.n_updates,
            "avg": [None if a is None else a.clone() for a in self.avg],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.n_updates = int(state["n_updates"])
        self.avg = [None if a is None else a.clone() for a in state["avg"]]


# ------------------------------------------------------------------------------------------------ network separation
def param_groups_for(policy: nn.Module, objective: Literal["il", "rl"]) -> list[nn.Parameter]:
    """The parameters `objective` may update under "residual" separation: the base for IL, the residual head
    (its encoder, head and log-std) for RL."""
    if not isinstance(policy, ResidualPolicy):
        raise TypeError(
            f"separation 'residual' needs a ResidualPolicy (policy.kind with a residual head), "
            f"got {type(policy).__name__}; use 'none', 'pcgrad' or 'orthogonal' for other policies"
        )
    if objective == "il":
        if policy.freeze_base:
            raise ValueError(
                "the residual policy's base is frozen (freeze_base=True), IL could not update it; "
                "build it with freeze_base=False for IN-RIL's network separation"
            )
        return policy.base_parameters()
    if objective == "rl":
        return policy.residual_parameters()
    raise ValueError(f"objective must be 'il' or 'rl', got {objective!r}")
