"""How far SAC actor steps move the BC lift policy's commanded actions (critic trained on the demos only).

PYTHONPATH=. python3 measurements/actor_drift.py   (after `python3 measurements/prep_lift.py measurements/lift_qs`)
"""

import numpy as np
import torch

from inril_robot.config import load_config
from inril_robot.data.store import Dataset
from inril_robot.learning.inril.offpolicy import demo_replay
from inril_robot.learning.inril.offpolicy_learner import OffPolicyLearner, make_algo
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.pretrain import DemoWindows

torch.set_num_threads(1)
ROOT = "measurements/lift_qs"
overrides = [
    "finetune.algo=sac",
    "finetune.inril.il_every=0",
    "finetune.offpolicy.critic_warmup_updates=200",
    "finetune.offpolicy.actor_lr=5e-6",
    "finetune.offpolicy.actor_every=4",
]
cfg = load_config(robot="sim", task="lift", overrides=overrides).finetune
policy = ckpt.load_checkpoint(f"{ROOT}/pretrain/last.pt").policy
demos = Dataset(f"{ROOT}/demos")
algo = make_algo(policy, cfg, (0.0, 1.0))
replay = demo_replay(demos, policy)
learner = OffPolicyLearner(algo, cfg, replay, replay, None)
obs_np, _ = DemoWindows(demos, list(policy.obs_shapes), 1, 1).sample(512, np.random.default_rng(0))
obs = {k: torch.from_numpy(v) for k, v in obs_np.items()}
with torch.no_grad():
    before = policy.predict(obs)  # (B, 1, A) raw
learner.update(200)  # critic warm-up
for _ in range(4):
    stats = learner.update(400)
    with torch.no_grad():
        moved = (policy.predict(obs) - before).abs()  # (B, 1, A)
    mm = moved[..., :3] * 1000
    print(
        f"actor steps {learner.actor_steps}: mean |d translation| {float(mm.mean()):.2f} mm, "
        f"max {float(mm.max()):.1f} mm, gripper {float(moved[..., 6].mean()):.3f}; q_mean {stats['q_mean']:.3f}"
    )
