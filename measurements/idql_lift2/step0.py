"""The policy an IDQL run acts with at 0 env steps (the BC diffusion actor with freshly initialised critics), built
exactly as `finetune --algo idql --seed SEED` builds it (torch.manual_seed(seed), then `make_algo`), saved as a
deployable checkpoint: the "before" of a run, evaluated the same way as its `last.pt` (heldout.py).

usage: python step0.py BC_CHECKPOINT SEED OUT_PT
"""

import sys
from pathlib import Path

import torch

from inril_robot.config import load_config
from inril_robot.learning.inril.common import value_range
from inril_robot.learning.inril.offpolicy import deployable
from inril_robot.learning.inril.offpolicy_learner import make_algo
from inril_robot.learning.policies import checkpoint as ckpt

bc, seed, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
cfg = load_config(robot="sim", task="lift", overrides=["finetune.algo=idql", f"seed={seed}"])
loaded = ckpt.load_checkpoint(bc, use_ema=True)
cfg = cfg.model_copy(update={"policy": loaded.policy.cfg})
torch.manual_seed(cfg.seed)
algo = make_algo(loaded.policy, cfg.finetune, value_range(cfg))
ckpt.save_checkpoint(
    out, deployable(algo), contract=loaded.contract, run_cfg=cfg, step=0, extra={"finetuned_from": str(bc)}
)
print("step-0 IDQL policy ->", out)
