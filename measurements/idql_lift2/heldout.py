"""Held-out success (100 episodes on the HELDOUT seeds, the bench's vectorised evaluation `common.evaluate`) of a
checkpoint acting as deployed, and of the other ways it can act (`checkpoint.set_acting`, no weights changed).

usage: python heldout.py CHECKPOINT EPISODES OUT_JSON [MODE ...]
MODE (default: deployed):
  deployed            predict(deterministic=True) with the checkpoint's own settings: what eval / serve / the bench run
  diffusion_eta0/1    the diffusion actor alone, DDIM eta 0 / 1 (an IDQL checkpoint's actor without its critics)
  argmax_eta0/1       IDQL: the highest-Q of the candidates, drawn with eta 0 / 1
  expectile_eta1      IDQL: one eta-1 candidate drawn by expectile weight (the default deployed rule; = exploring)
"""

import json
import sys
import time
from pathlib import Path

import torch

import inril_robot.drivers.sim  # noqa: F401
from inril_robot.config import load_config
from inril_robot.core.seeds import HELDOUT_SEED_BASE
from inril_robot.learning.inril.common import evaluate
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.rl.vec_env import VecEnv

SETTINGS = {
    "deployed": {},
    "diffusion_eta0": {"diffusion.eta": 0.0},
    "diffusion_eta1": {"diffusion.eta": 1.0},
    "argmax_eta0": {"idql.rule": "argmax", "idql.eta": 0.0},
    "argmax_eta1": {"idql.rule": "argmax", "idql.eta": 1.0},
    "expectile_eta1": {"idql.rule": "expectile", "idql.eta": 1.0},
}


def main() -> None:
    checkpoint, episodes, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    modes = sys.argv[4:] or ["deployed"]
    torch.set_num_threads(1)
    payload = ckpt.read_checkpoint(checkpoint)
    cfg = load_config(robot="sim", task=payload["run_config"]["task"]["name"])
    f = cfg.finetune
    device = torch.device("cpu")
    results: dict = {"checkpoint": str(checkpoint), "episodes": episodes, "seed": HELDOUT_SEED_BASE}
    for mode in modes:
        loaded = ckpt.load_checkpoint(checkpoint, use_ema=True, payload=payload)
        policy = loaded.policy
        if mode.startswith("diffusion_") and hasattr(policy, "diffusion"):
            policy = policy.diffusion  # the actor alone
        ckpt.set_acting(policy, SETTINGS[mode])
        results.setdefault("policy", {})[mode] = policy.cfg.model_dump(mode="json", include={"diffusion", "idql"})
        t = time.perf_counter()
        with VecEnv(cfg, f.num_envs, list(policy.obs_shapes), policy.cfg.n_obs_steps, subprocess=False) as vec:
            r = evaluate(vec, policy, episodes, device, HELDOUT_SEED_BASE)
        r.pop("per_episode", None)
        r["wall_s"] = round(time.perf_counter() - t, 1)
        results[mode] = r
        s = r["success"]
        print(f"{mode}: {s['successes']}/{s['trials']} [{s['ci95_low']:.2f}, {s['ci95_high']:.2f}]", flush=True)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
