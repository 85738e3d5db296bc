"""IN-RIL (arXiv 2505.10442): interleaving IL updates into RL fine-tuning, with gradient separation.

- `separation`: PCGrad / orthogonal projection of gradient lists, the gradient EMA used as the other objective's
  reference, and the parameter split of network separation (residual policy);
- `schedule`: which objective the next actor optimiser step belongs to (m RL steps, then IL steps), with a fixed or an
  adaptive m.

See docs/inril.md.
"""
