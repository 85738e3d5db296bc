"""Where the policy server's off-policy learner keeps its tensors, and how fast it updates, on a device (issue 18).

    PYTHONPATH=. python3 scripts/offpolicy_device_check.py --checkpoint PRE/last.pt --device cuda --updates 300 \
        [--demos DEMOS] [--set finetune.offpolicy.demo_fraction=0 ...] [--json OUT.json]

What `serve --set finetune.device=cuda --algo sac|idql` runs, in one process: the learner process's trainer
(`bridge.offpolicy_learner.OffPolicyTrainer`: run folder, replay log, the algorithm of `bridge.offpolicy_algos`) is
fed transitions the way the serving loop forwards them (observation histories of the checkpoint's shapes, random
values; images uint8; executed chunks in raw units, one episode after another), then runs `--updates` updates and
publishes as the server's learner does; the serving actor (`make_serving_actor`) samples one batch on the device.
Every tensor that is not on the device is listed: parameters, buffers, optimiser states, SAC's temperature, the
replay buffers, the generators, the served chunk. Exit status 1 when any is elsewhere or an update failed.
Prints one JSON object: the device, the misplaced tensors, updates/s, the replay's stored histories.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inril_robot.bridge.learner_process import LearnerSpec
from inril_robot.bridge.offpolicy import TransitionAssembler
from inril_robot.bridge.offpolicy_algos import make_serving_actor
from inril_robot.bridge.offpolicy_learner import OffPolicyTrainer
from inril_robot.config import load_config
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.pretrain import pick_device


def tensors(trainer: OffPolicyTrainer) -> dict[str, torch.Tensor]:
    """Every tensor the server's learner holds, by name."""
    server_algo: Any = trainer.algo
    learner, algo = server_algo.learner, server_algo.algo
    out: dict[str, torch.Tensor] = {}
    for i, module in enumerate(server_algo.modules()):
        out |= {f"module{i}.{n}": t for n, t in [*module.named_parameters(), *module.named_buffers()]}
    optimizers = {f"learner.{k}": o for k, o in learner.optimizers.items()}
    optimizers |= {f"algo.{k}": v for k, v in vars(algo).items() if isinstance(v, torch.optim.Optimizer)}
    for name, opt in optimizers.items():
        for j, state in enumerate(opt.state.values()):
            out |= {f"{name}.state{j}.{k}": v for k, v in state.items() if torch.is_tensor(v) and v.dim() > 0}
    if hasattr(algo, "log_alpha"):
        out["algo.log_alpha"] = algo.log_alpha
    for name, replay in (("online", learner.online), ("demos", learner.demo_replay)):
        if replay is not None:
            out |= {f"{name}.frames.{k}": v for k, v in replay.frames.items()}
            out |= {f"{name}.fields.{k}": v for k, v in replay.fields.items()}
            out[f"{name}.refs"] = replay.refs
    return out


def feed(trainer: OffPolicyTrainer, transitions: int, episode_chunks: int, rng: np.random.Generator) -> None:
    """Transitions through the serving loop's `TransitionAssembler` (served chunk, executed chunk, episode end), as
    the server forwards them to its learner process."""
    contract, c = trainer.contract, trainer.policy.cfg
    shapes = {
        k: ((c.n_obs_steps, *shape), contract.observations[k].dtype) for k, shape in trainer.policy.obs_shapes.items()
    }

    def history() -> dict[str, np.ndarray]:
        return {
            k: rng.integers(0, 256, s, dtype=np.uint8) if d == "uint8" else rng.normal(0, 0.1, s).astype(np.float32)
            for k, (s, d) in shapes.items()
        }

    def forward(message: tuple) -> None:
        if message[0] == "transition":
            trainer.transition(*message[1:])
        else:
            trainer.episode_end(*message[1:])

    assembler = TransitionAssembler("check", c.horizon, c.act_steps, forward)
    episode = chunk = 0
    for _ in range(transitions):
        last = chunk == episode_chunks - 1
        sampled = rng.uniform(-1, 1, (c.horizon, contract.action_dim)).astype(np.float32)
        assembler.served_chunk(episode, chunk, history(), {"chunk": torch.from_numpy(sampled)})
        executed = rng.uniform(-0.01, 0.01, (c.act_steps, contract.action_dim))
        executed[:, -1] = rng.uniform(0, 1, c.act_steps)
        rewards = np.full(c.act_steps, float(last) / c.act_steps, np.float32)
        assembler.transition(episode, chunk, executed, rewards, False, 0, end="success" if last else "none")
        chunk += 1
        if last:
            assembler.episode_end(episode, True, "success", history())
            episode, chunk = episode + 1, 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--algo", default=None, help="sac, residual-sac or idql (default: sac for a Gaussian, idql for diffusion)"
    )
    parser.add_argument("--demos", type=Path, default=None)
    parser.add_argument("--transitions", type=int, default=600)
    parser.add_argument("--episode-chunks", type=int, default=13, help="transitions per episode (lift: 100 / 8)")
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    loaded = ckpt.load_checkpoint(args.checkpoint)
    algo = args.algo or ("sac" if loaded.policy.cfg.kind == "gaussian" else "idql")
    cfg = load_config(
        robot="sim",
        task=loaded.run_cfg.task.name,
        overrides=[
            f"finetune.algo={algo}",
            f"finetune.device={args.device}",
            "finetune.offpolicy.learning_starts=1",
            f"finetune.offpolicy.critic_warmup_updates={args.updates // 3}",
            "finetune.async_learner.publish_every=20",
            f"finetune.offpolicy.demo_fraction={0.5 if args.demos else 0}",
            f"finetune.inril.il_every={5 if args.demos else 0}",
            *args.sets,
        ],
    )
    device = pick_device(args.device)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="inril-device-check-") as tmp:
        trainer = OffPolicyTrainer(LearnerSpec(cfg, args.checkpoint, args.demos, Path(tmp) / "srv", False))
        feed(trainer, args.transitions, args.episode_chunks, rng)
        if device.type == "cuda":
            torch.cuda.synchronize()
        started, failures = time.perf_counter(), []
        for _ in range(args.updates):
            if not trainer.can_update():
                failures.append("the learner could not update (budget, failure or too few transitions)")
                break
            trainer.step()
            if trainer.rollbacks:
                failures.append(str(trainer.last_stats.get("rolled_back")))
                break
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        held = tensors(trainer)
        serving = make_serving_actor(trainer.cfg, ckpt.load_checkpoint(args.checkpoint, map_location=device).policy)
        serving = serving.to(device).eval()
        learner = trainer.algo.learner  # type: ignore[attr-defined]
        obs = learner.online.sample(4, learner.generator).obs  # what the server batches: histories on the device
        chunk = serving.sample(obs, torch.Generator(device=device).manual_seed(0)).action
        held["serving.chunk"] = chunk
        held |= {f"serving.{n}": t for n, t in [*serving.named_parameters(), *serving.named_buffers()]}
        generators = {"learner.generator": learner.generator.device}
        trainer.close()
    misplaced = sorted(n for n, t in held.items() if t.device.type != device.type)
    misplaced += [n for n, d in generators.items() if d.type != device.type]
    result = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "algo": algo,
        "checkpoint": str(args.checkpoint),
        "tensors_checked": len(held) + len(generators),
        "misplaced": misplaced,
        "updates": trainer.updates,
        "updates_per_s": trainer.updates / seconds if seconds > 0 else None,
        "replay_transitions": trainer.replay.transitions,
        "stored_histories": learner.online.nbytes()["stored_histories"],
        "failures": failures,
        "torch_threads": torch.get_num_threads(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 1 if misplaced or failures else 0


if __name__ == "__main__":
    sys.exit(main())
