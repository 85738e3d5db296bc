"""Why SAC/RLPD collapses on lift: step-0 equivalence, critic-only, the actor's steps, measured in-process.

PYTHONPATH=. python3 measurements/sac_lift/diagnose.py DATA [--set key=value ...]
DATA holds demos/ and pretrain/last.pt (the quickstart's lift BC, `measurements/prep_lift.py`).
Prints one JSON line per stage."""

import argparse
import copy
import json
import time

import numpy as np
import torch

import inril_robot.drivers.sim  # noqa: F401
from inril_robot.bench.sample_efficiency import arm_config
from inril_robot.core.seeds import train_seed
from inril_robot.data.store import Dataset
from inril_robot.learning.inril.common import summarize, value_range
from inril_robot.learning.inril.offpolicy import demo_replay, deterministic_act, evaluate_with, trace_transitions
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
ap.add_argument("--collect", type=int, default=24, help="exploring episodes before the critic is trained")
ap.add_argument("--eval", type=int, default=30)
ap.add_argument("--blocks", default="25,25,50,100,200", help="actor steps per block")
args = ap.parse_args()
torch.set_num_threads(1)
t0 = time.time()


def say(**kw):
    print(json.dumps({"t": round(time.time() - t0, 1), **kw}), flush=True)


cfg = arm_config("lift", args.arm, 0, 10_000, args.set)
f = cfg.finetune
policy = ckpt.load_checkpoint(f"{args.data}/pretrain/last.pt", use_ema=True).policy
bc = copy.deepcopy(policy)
algo = make_algo(policy, f, value_range(cfg))
demos = Dataset(f"{args.data}/demos")
pc = policy.cfg
windows = DemoWindows(demos, list(policy.obs_shapes), pc.n_obs_steps, pc.horizon)
learner = OffPolicyLearner(
    algo,
    f,
    ReplayBuffer(f.offpolicy.capacity),
    demo_replay(demos, policy) if f.offpolicy.demo_fraction else None,
    windows.sample,
    seed=0,
)
sampler = torch.Generator().manual_seed(1)
dobs_np, dact = windows.sample(1024, np.random.default_rng(0))
dobs = {k: torch.from_numpy(v) for k, v in dobs_np.items()}


def action_change(obs):
    """raw per-dim mean |change| and mean signed change of the deterministic action vs BC (translation in mm)."""
    with torch.no_grad():
        d = (policy.predict(obs) - bc.predict(obs))[:, 0]  # (B, A)
    scale = torch.tensor([1000, 1000, 1000, 1, 1, 1, 1.0])
    return {
        "abs": (d.abs().mean(0) * scale).round(decimals=3).tolist(),
        "signed": (d.mean(0) * scale).round(decimals=3).tolist(),
    }


with VecEnv(cfg, f.num_envs, list(policy.obs_shapes), pc.n_obs_steps, subprocess=False) as vec:
    det = deterministic_act(algo)
    r = evaluate_with(vec, policy, det, args.eval, torch.device("cpu"))
    say(stage="a: deterministic (checkpointed policy) at step 0", success=r["success"]["rate"], n=args.eval)
    r = evaluate_with(vec, policy, lambda o, g: algo.actor.deterministic(o), args.eval, torch.device("cpu"))
    say(stage="a: SAC actor tanh(u_mean) at step 0", success=r["success"]["rate"], n=args.eval)

    def explore(obs):
        chunk = algo.act(obs, explore=True, generator=sampler)
        return chunk, {"action": chunk}

    seeds = [train_seed(0, i) for i in range(args.collect)]
    traces = run_episodes(vec, seeds, policy, explore, "cpu")
    learner.online.extend(t for tr in traces for t in trace_transitions(tr))
    say(
        stage="c: exploring policy success (before updates)",
        success=summarize(traces)["success"]["rate"],
        n=len(traces),
        transitions=len(learner.online),
        log_std=float(policy.log_std.mean()),
    )
    warm = f.offpolicy.critic_warmup_updates
    stats = learner.update(warm)
    say(stage="critic warm-up", updates=warm, **{k: stats[k] for k in ("q_mean", "target_mean", "critic_loss")})
    oobs = learner.online.sample(1024, torch.Generator().manual_seed(5)).obs

    # d: the Q gradient at the policy's action vs the direction to the demonstrated action
    with torch.no_grad():
        m = policy.distribution(dobs).mean
    a = m.clamp(-sac.SQUASH_LIMIT, sac.SQUASH_LIMIT).detach().requires_grad_(True)
    q = algo.critic(dobs, sac.executed(policy, a.view(-1, pc.horizon, policy.action_dim))).mean(0)
    (g,) = torch.autograd.grad(q.sum(), a)
    to_demo = policy.normalizer.normalize_action(torch.from_numpy(dact).float()).flatten(1) - m
    cos = torch.nn.functional.cosine_similarity(g, to_demo, dim=1)
    say(
        stage="d: dQ/da vs (demo - mean), demo states",
        cos_mean=float(cos.mean()),
        cos_pos=float((cos > 0).float().mean()),
        grad_abs_per_dim=g.abs().mean(0).tolist(),
        grad_signed_per_dim=g.mean(0).tolist(),
    )

    done = 0
    for n in [int(x) for x in args.blocks.split(",")]:
        # n actor steps = n * actor_every critic updates (after the warm-up every actor_every-th carries one)
        stats = learner.update(n * f.offpolicy.actor_every)
        done = learner.actor_steps
        r = evaluate_with(vec, policy, det, args.eval, torch.device("cpu"))
        explo = run_episodes(vec, [train_seed(0, 1000 + done + i) for i in range(args.eval)], policy, explore, "cpu")
        say(
            stage="after actor steps",
            actor_steps=done,
            det_success=r["success"]["rate"],
            explore_success=summarize(explo)["success"]["rate"],
            demo_states=action_change(dobs),
            online_states=action_change(oobs),
            log_std=float(policy.log_std.mean()),
            **{
                k: round(stats[k], 4)
                for k in ("q_mean", "actor_loss", "entropy", "alpha", "rl_grad_norm")
                if k in stats
            },
        )
