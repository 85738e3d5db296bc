"""How far a fine-tuned checkpoint's commanded actions moved from the BC checkpoint's, on 2,048 demonstration states:
mean signed and mean absolute change per action dimension (translation in mm, rotation in mrad, gripper x1000).

PYTHONPATH=. python3 measurements/sac_lift/action_change.py BC.pt DEMOS RUN/last.pt [...]"""

import json
import sys

import numpy as np
import torch

from inril_robot.data.store import Dataset
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.pretrain import DemoWindows

torch.set_num_threads(1)
bc = ckpt.load_checkpoint(sys.argv[1], use_ema=True).policy
windows = DemoWindows(Dataset(sys.argv[2]), list(bc.obs_shapes), bc.cfg.n_obs_steps, bc.cfg.horizon)
obs_np, _ = windows.sample(2048, np.random.default_rng(0))
obs = {k: torch.from_numpy(v) for k, v in obs_np.items()}
for path in sys.argv[3:]:
    tuned = ckpt.load_checkpoint(path, use_ema=True).policy
    with torch.no_grad():
        d = (tuned.predict(obs) - bc.predict(obs))[:, 0] * 1000  # (B, A)
    print(
        json.dumps(
            {
                "checkpoint": path,
                "signed": d.mean(0).round(decimals=3).tolist(),
                "abs": d.abs().mean(0).round(decimals=3).tolist(),
            }
        )
    )
