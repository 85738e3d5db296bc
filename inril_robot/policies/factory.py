"""Build a policy from its configuration: the one place that maps `policy.kind` to a class."""

from __future__ import annotations

from inril_robot.config import PolicyConfig
from inril_robot.policies.base import Policy
from inril_robot.policies.diffusion import DiffusionPolicy
from inril_robot.policies.gaussian import GaussianPolicy
from inril_robot.policies.normalizer import Normalizer

POLICY_CLASSES: dict[str, type[Policy]] = {"gaussian": GaussianPolicy, "diffusion": DiffusionPolicy}


def make_policy(cfg: PolicyConfig, normalizer: Normalizer, obs_shapes: dict[str, tuple[int, ...]],
                action_dim: int) -> Policy:
    """A freshly initialised policy of kind `cfg.kind` (wrap it in `ResidualPolicy` for residual RL)."""
    if cfg.kind not in POLICY_CLASSES:
        raise ValueError(f"unknown policy.kind {cfg.kind!r}; known: {', '.join(POLICY_CLASSES)}")
    return POLICY_CLASSES[cfg.kind](cfg, normalizer, obs_shapes, action_dim)
