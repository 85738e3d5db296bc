"""The critic's action gradient over critic-only training: does RLPD's demo mixing make dQ/da point one way in
every state (lift: z up), and does more critic training remove it? Collects exploring BC episodes once, then
trains the critic only, printing mean dQ/da per action dimension (signed and absolute) at online and demo states.

PYTHONPATH=. python3 measurements/sac_lift/critic_probe.py DATA [--set key=value ...] [--updates 6000]"""

import argparse
import json
import time

import torch

import inril_robot.drivers.sim  # noqa: F401
from inril_robot.bench.sample_efficiency import arm_config
from inril_robot.core.seeds import train_seed
from inril_robot.data.store import Dataset
from inril_robot.learning.inril.common import summarize, value_range
from inril_robot.learning.inril.offpolicy import demo_replay, trace_transitions
from inril_robot.learning.inril.offpolicy_learner import OffPolicyLearner, make_algo
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.pretrain import DemoWindows
from inril_robot.learning.rl import sac
from inril_robot.learning.rl.replay import ReplayBuffer
from inril_robot.learning.rl.rollouts import run_episodes
from inril_robot.learning.rl.vec_env import VecEnv

ap = argparse.ArgumentParser()
ap.add_argument("data")
ap.add_argument("--arm", default="rlpd")
ap.add_argument("--set", action="append", default=[])
ap.add_argument("--collect", type=int, default=48)
ap.add_argument("--updates", type=int, default=6000)
ap.add_argument("--every", type=int, default=1000)
args = ap.parse_args()
torch.set_num_threads(1)
t0 = time.time()
cfg = arm_config("lift", args.arm, 0, 10_000, [*args.set, "finetune.offpolicy.critic_warmup_updates=100000000"])
f = cfg.finetune
policy = ckpt.load_checkpoint(f"{args.data}/pretrain/last.pt", use_ema=True).policy
algo = make_algo(policy, f, value_range(cfg))
demos = Dataset(f"{args.data}/demos")
pc = policy.cfg
windows = DemoWindows(demos, list(policy.obs_shapes), pc.n_obs_steps, pc.horizon)
demo_rb = demo_replay(demos, policy)
learner = OffPolicyLearner(
    algo, f, ReplayBuffer(f.offpolicy.capacity), demo_rb if f.offpolicy.demo_fraction else None, windows.sample, seed=0
)
sampler = torch.Generator().manual_seed(1)
with VecEnv(cfg, 2, list(policy.obs_shapes), pc.n_obs_steps, subprocess=False) as vec:

    def explore(obs):
        chunk = algo.act(obs, explore=True, generator=sampler)
        return chunk, {"action": chunk}

    traces = run_episodes(vec, [train_seed(0, i) for i in range(args.collect)], policy, explore, "cpu")
learner.online.extend(t for tr in traces for t in trace_transitions(tr))
print(json.dumps({"collected": len(learner.online), "success": summarize(traces)["success"]["rate"]}), flush=True)
probe = {
    "online": learner.online.sample(2048, torch.Generator().manual_seed(5)).obs,
    "demo": demo_rb.sample(2048, torch.Generator().manual_seed(6)).obs,
}


def gradient(obs):
    with torch.no_grad():
        m = policy.distribution(obs).mean
    a = m.clamp(-sac.SQUASH_LIMIT, sac.SQUASH_LIMIT).requires_grad_(True)
    q = algo.critic(obs, sac.executed(policy, a.view(-1, pc.horizon, policy.action_dim))).mean(0)
    (g,) = torch.autograd.grad(q.sum(), a)
    return {"signed": [round(x, 4) for x in g.mean(0).tolist()], "abs": [round(x, 4) for x in g.abs().mean(0).tolist()]}


def by_phase(obs):
    """dQ/da_z and dQ/d(ee z) (observation, metres) at the policy's action, split by BC's gripper command: open
    (reaching, descending) vs closing/closed (grasping, lifting)."""
    obs = {k: v.clone().requires_grad_(k == "ee_pos") for k, v in obs.items()}
    with torch.no_grad():
        m = policy.distribution(obs).mean
    a = m.clamp(-sac.SQUASH_LIMIT, sac.SQUASH_LIMIT).requires_grad_(True)
    q = algo.critic(obs, sac.executed(policy, a.view(-1, pc.horizon, policy.action_dim))).mean(0)
    ga, go = torch.autograd.grad(q.sum(), [a, obs["ee_pos"]])
    closed = m[:, policy.action_dim - 1] > 0
    out = {}
    for name, mask in (("open", ~closed), ("closed", closed)):
        out[name] = {
            "n": int(mask.sum()),
            "dq_da_z": round(float(ga[mask, 2].mean()), 4),
            "dq_da_z_pos": round(float((ga[mask, 2] > 0).float().mean()), 3),
            "dq_dee_z": round(float(go[mask][..., 2].mean()), 3),
        }
    return out


for _ in range(args.updates // args.every):
    stats = learner.update(args.every)
    print(
        json.dumps(
            {
                "t": round(time.time() - t0),
                "critic_updates": learner.critic_updates,
                "q_mean": round(stats["q_mean"], 4),
                **{k: gradient(o) for k, o in probe.items()},
                "online_by_phase": by_phase(probe["online"]),
            }
        ),
        flush=True,
    )
