"""How lift's success depends on a constant per-step offset of the BC policy's commanded z translation (the
direction the SAC actor drifted): the deterministic BC policy + offset, on the in-run evaluation seeds.

PYTHONPATH=. python3 measurements/sac_lift/offset_sensitivity.py DATA [EPISODES] [OFFSETS_MM ...]"""

import json
import sys

import torch

import inril_robot.drivers.sim  # noqa: F401
from inril_robot.bench.sample_efficiency import arm_config
from inril_robot.learning.inril.offpolicy import evaluate_with
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.rl.vec_env import VecEnv

torch.set_num_threads(1)
data, episodes = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 30
offsets = [float(x) for x in sys.argv[3:]] or [0.0, 0.3, 0.6, 1.0, -0.6]
cfg = arm_config("lift", "rlpd", 0, 10_000, [])
policy = ckpt.load_checkpoint(f"{data}/pretrain/last.pt", use_ema=True).policy
span = (policy.normalizer.action_max - policy.normalizer.action_min)[2].item()  # m per 2 normalised units
with VecEnv(cfg, 2, list(policy.obs_shapes), policy.cfg.n_obs_steps, subprocess=False) as vec:
    for mm in offsets:
        shift = torch.zeros(policy.action_dim)
        shift[2] = 2 * mm / 1000 / span  # normalised units

        def act(obs, g, shift=shift):
            return (policy.predict_normalized(obs) + shift).clamp(-1, 1)

        r = evaluate_with(vec, policy, act, episodes, torch.device("cpu"))
        print(
            json.dumps(
                {
                    "z_offset_mm_per_step": mm,
                    "success": r["success"]["rate"],
                    "episodes": episodes,
                    "mean_length": r["mean_length"],
                }
            ),
            flush=True,
        )
