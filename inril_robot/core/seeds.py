"""Seed bases: the disjoint seed ranges of demonstrations, training, in-run evaluation and held-out evaluation.

Torch-free on purpose: the robot-PC agent seeds its episodes with `train_seed` and must not load the learner.

- demonstrations: `collect` seeds episode k with `seed + 1000 * k + attempt` (small seeds);
- training episode k of a fine-tuning run: TRAIN_SEED_BASE + 10^7 * cfg.seed + k;
- in-run evaluation episode i: EVAL_SEED_BASE + i (a small base such as 10_000 would replay demonstration 10's
  scene; 10^9 is out of reach of any real dataset);
- held-out evaluation after a run (quickstart, bench): HELDOUT_SEED_BASE + i, which none of the above ever uses.
"""

from __future__ import annotations

TRAIN_SEED_BASE = 500_000_000
EVAL_SEED_BASE = 1_000_000_000
HELDOUT_SEED_BASE = 1_500_000_000


def train_seed(run_seed: int, episode: int) -> int:
    """The seed of training episode `episode` of a run configured with `seed: run_seed`."""
    return TRAIN_SEED_BASE + 10_000_000 * run_seed + episode
