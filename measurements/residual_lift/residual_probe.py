"""Mean residual (normalised units, and as a fraction of scale) of a residual-SAC checkpoint at demo states."""

import sys

import numpy as np
import torch

from inril_robot.data.store import Dataset
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.pretrain import DemoWindows

torch.set_num_threads(1)
pol = ckpt.load_checkpoint(sys.argv[1]).policy
demos = Dataset(sys.argv[2])
c = pol.cfg
obs_np, _ = DemoWindows(demos, list(pol.obs_shapes), c.n_obs_steps, c.horizon).sample(2048, np.random.default_rng(0))
obs = {k: torch.from_numpy(v) for k, v in obs_np.items()}
with torch.no_grad():
    base = pol.base.predict_normalized(obs)
    full = pol.predict_normalized(obs)
r = (full - base).reshape(len(base), -1)
closed = base.reshape(len(base), -1)[:, -1] > 0
print("scale", pol.scale, "log_std", pol.log_std.detach().numpy().round(2))
for name, m in (("all", torch.ones_like(closed)), ("open", ~closed), ("closed", closed)):
    rr = r[m]
    print(
        name,
        int(m.sum()),
        "signed",
        rr.mean(0).numpy().round(4),
        "abs/scale",
        (rr.abs().mean(0) / pol.scale).numpy().round(2),
    )
