"""Held-out success (HELDOUT seeds) of a diffusion checkpoint and, for an IDQL run, of its implicit policy.

usage: python heldout_idql.py RUN_YAML CHECKPOINT [TRAIN_PT] EPISODES OUT_JSON
  RUN_YAML: an IDQL run's run.yaml (task/env/finetune settings); CHECKPOINT: a diffusion last.pt (EMA weights);
  TRAIN_PT: the run's last.train.pt (critics) -> also the implicit policy.
Modes: diffusion_det = the diffusion policy alone, DDIM eta 0 (what `inril-robot eval` runs);
diffusion_sto = the diffusion policy alone, eta 1 (how IDQL's candidates are drawn while exploring);
idql_det = highest-Q of N eta-0 candidates (what the bench / the in-run evaluation reported until idql_lift2);
idql_explore = one of N eta-1 candidates drawn by expectile weight (the policy that collected the data).
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
from inril_robot.learning.inril.offpolicy import VecEnv, ckpt, make_algo, value_range
from inril_robot.learning.policies.idql import choose


def main() -> None:
    args = sys.argv[1:]
    run_yaml, checkpoint = Path(args[0]), Path(args[1])
    train_pt = Path(args[2]) if len(args) == 5 else None
    episodes, out = int(args[-2]), Path(args[-1])
    cfg = load_config(robot="sim", config_file=run_yaml)
    f = cfg.finetune
    torch.set_num_threads(1)
    device = torch.device("cpu")
    policy = ckpt.load_checkpoint(checkpoint, use_ema=True).policy.to(device)
    modes = {
        "diffusion_det": lambda o, g: policy.predict_normalized(o, deterministic=True, generator=g),
        "diffusion_sto": lambda o, g: policy.predict_normalized(o, deterministic=False, generator=g),
    }
    if train_pt is not None:
        algo = make_algo(policy, f, value_range(cfg)).to(device)
        algo.load_state_dict(ckpt.safe_torch_load(train_pt)["learner"]["algo"])
        n, tau = f.offpolicy.idql_candidates, f.offpolicy.idql_expectile
        modes["idql_det"] = lambda o, g: choose(policy, algo.critic, algo.value, o, n, tau, 0.0, "argmax", g)
        modes["idql_explore"] = lambda o, g: choose(policy, algo.critic, algo.value, o, n, tau, 1.0, "expectile", g)
    results = {
        "checkpoint": str(checkpoint),
        "train_pt": str(train_pt),
        "episodes": episodes,
        "seed": HELDOUT_SEED_BASE,
    }
    with VecEnv(cfg, f.num_envs, list(policy.obs_shapes), policy.cfg.n_obs_steps, subprocess=f.subprocess_envs) as vec:
        for name, act in modes.items():
            t = time.perf_counter()
            r = evaluate(vec, policy, episodes, device, HELDOUT_SEED_BASE, act)
            r.pop("per_episode", None)
            r["wall_s"] = round(time.perf_counter() - t, 1)
            results[name] = r
            s = r["success"]
            print(f"{name}: {s['successes']}/{s['trials']} [{s['ci95_low']:.2f}, {s['ci95_high']:.2f}]", flush=True)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
