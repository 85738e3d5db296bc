"""Build a policy from its configuration: the one place that maps `policy.kind` to a class."""

from __future__ import annotations

from inril_robot.config import PolicyConfig
from inril_robot.learning.policies.base import Policy
from inril_robot.learning.policies.diffusion import DiffusionPolicy
from inril_robot.learning.policies.gaussian import GaussianPolicy
from inril_robot.learning.policies.idql import IDQLPolicy
from inril_robot.learning.policies.normalizer import Normalizer
from inril_robot.learning.policies.residual import ResidualPolicy

POLICY_CLASSES: dict[str, type[Policy]] = {"gaussian": GaussianPolicy, "diffusion": DiffusionPolicy}


def make_policy(
    cfg: PolicyConfig, normalizer: Normalizer, obs_shapes: dict[str, tuple[int, ...]], action_dim: int
) -> Policy:
    """A freshly initialised policy of kind `cfg.kind`; with `cfg.residual` set, a `ResidualPolicy` (frozen base)
    over it, as residual RL fine-tuning exports it; with `cfg.idql` set, IDQL's implicit policy (critics choosing
    among the diffusion policy's candidates), as IDQL fine-tuning exports it."""
    if cfg.kind not in POLICY_CLASSES:
        raise ValueError(f"unknown policy.kind {cfg.kind!r}; known: {', '.join(POLICY_CLASSES)}")
    if cfg.idql is not None:
        diffusion = DiffusionPolicy(cfg.model_copy(update={"idql": None}), normalizer, obs_shapes, action_dim)
        return IDQLPolicy(diffusion, cfg.idql)
    if cfg.residual is not None:
        base = POLICY_CLASSES[cfg.kind](cfg.model_copy(update={"residual": None}), normalizer, obs_shapes, action_dim)
        return ResidualPolicy.from_config(base, cfg.residual)
    return POLICY_CLASSES[cfg.kind](cfg, normalizer, obs_shapes, action_dim)
