"""How well an IDQL checkpoint's critics rank its candidates by what they actually achieve (issue 18).

For each of STATES held-out seeds: N environments (N = the checkpoint's `idql.candidates`) reset with the same seed
act in lockstep with the same chunks (the policy acting as deployed on environment 0's observation, asserted
identical across environments) for DECISION chunks; at chunk DECISION the N candidates the deployed rule draws from
(eta `idql.eta`) are scored by min-Q and V, environment i executes candidate i, and every environment then continues
acting as deployed (its own sampling noise) to the end of the episode. Reported: per-state Q, V and success of each
candidate; pooled within-state ranking accuracy (for pairs of candidates from the same state where one succeeded and
the other failed, the fraction where Q ranks the successful one higher: 0.5 = chance); success of the argmax-Q
candidate, of the expectile-weighted draw (expected) and of a uniformly random candidate.

usage: python critic_ranking.py CHECKPOINT STATES DECISION OUT_JSON
"""

import json
import sys
import time
from pathlib import Path

import torch

import inril_robot.drivers.sim  # noqa: F401
from inril_robot.config import load_config
from inril_robot.core.seeds import HELDOUT_SEED_BASE
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.policies.critics import executed
from inril_robot.learning.policies.idql import IDQLPolicy
from inril_robot.learning.rl.rollouts import run_episodes
from inril_robot.learning.rl.vec_env import VecEnv


def branch(vec: VecEnv, policy: IDQLPolicy, seed: int, decision: int) -> dict | None:
    """One state: the candidates' Q, V and success (None when the episode ended before the decision chunk)."""
    act = policy.act_cfg
    n = act.candidates
    g_prefix, g_cand, g_cont = (torch.Generator().manual_seed(seed + i) for i in range(3))
    calls = 0
    scored: dict = {}

    def lockstep(obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        assert next(iter(obs.values())).shape[0] == n, "an environment ended early"
        assert all(torch.equal(v, v[:1].expand_as(v)) for v in obs.values()), "environments not in lockstep"
        return {key: v[:1] for key, v in obs.items()}

    def choose(obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        nonlocal calls
        c, calls = calls, calls + 1
        if c < decision:
            return policy.predict_normalized(lockstep(obs), True, g_prefix).expand(n, -1, -1), {}
        if c == decision:
            one = lockstep(obs)
            chunks = policy.diffusion.sample_normalized(obs, act.eta, g_cand)  # (N, H, A): candidate i -> env i
            scored["q"] = policy.critic(obs, executed(policy.diffusion, chunks)).min(dim=0).values.tolist()  # (N,)
            scored["v"] = float(policy.value(one)[0])
            return chunks, {}
        return policy.predict_normalized(obs, True, g_cont), {}

    traces = run_episodes(vec, [seed] * n, policy, choose)
    if "q" not in scored:
        return None
    return {"seed": seed, **scored, "success": [float(t.success) for t in traces]}


def main() -> None:
    checkpoint, states, decision, out = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    torch.set_num_threads(1)
    loaded = ckpt.load_checkpoint(checkpoint)
    policy = loaded.policy
    assert isinstance(policy, IDQLPolicy)
    cfg = load_config(robot="sim", task=loaded.run_cfg.task.name)
    rows = []
    started = time.perf_counter()
    n, keys = policy.act_cfg.candidates, list(policy.obs_shapes)
    with VecEnv(cfg, n, keys, policy.cfg.n_obs_steps, subprocess=False) as vec:
        for k in range(states):
            row = branch(vec, policy, HELDOUT_SEED_BASE + k, decision)
            if row is None:
                print(f"state {k}: the episode ended before chunk {decision}; skipped", flush=True)
                continue
            rows.append(row)
            q = row["q"]
            print(f"state {k}: {sum(row['success']):.0f}/{len(q)} succeed, q [{min(q):.3f}, {max(q):.3f}]", flush=True)
    result = {"checkpoint": str(checkpoint), "decision_chunk": decision, **summary(rows, policy.act_cfg.expectile)}
    result.update(states=rows, wall_s=round(time.perf_counter() - started, 1))
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "states"}), flush=True)


def summary(rows: list[dict], tau: float) -> dict:
    right = pairs = 0.0
    argmax, weighted, uniform = [], [], []
    for r in rows:
        q, s = torch.tensor(r["q"]), torch.tensor(r["success"])
        for i in range(len(q)):
            for j in range(len(q)):
                if s[i] > s[j]:
                    pairs += 1
                    right += float(q[i] > q[j]) + 0.5 * float(q[i] == q[j])
        argmax.append(float(s[q.argmax()]))
        w = torch.where(q < r["v"], 1.0 - tau, tau)
        weighted.append(float((w * s).sum() / w.sum()))
        uniform.append(float(s.mean()))
    mean = lambda xs: sum(xs) / max(len(xs), 1)  # noqa: E731
    return {
        "states_used": len(rows),
        "ranking_accuracy": right / pairs if pairs else None,
        "discordant_pairs": int(pairs),
        "success_argmax_q": mean(argmax),
        "success_expectile_weighted": mean(weighted),
        "success_uniform_candidate": mean(uniform),
        "states_with_mixed_outcomes": sum(1 for r in rows if 0 < sum(r["success"]) < len(r["success"])),
    }


if __name__ == "__main__":
    main()
