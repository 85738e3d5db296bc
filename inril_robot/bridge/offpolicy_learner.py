"""The asynchronous off-policy learner process (the learner half of SERL's actor-learner split).

It owns the replay log (`out/replay/`, `data/replay.py`) and the algorithm (`offpolicy.OffPolicyAlgo`). Its loop:
take in whatever the server sent (transitions are normalised, chained per episode and appended to the log, fsync'd,
when their episode ends or every `flush_every` transitions; then added to the algorithm's buffer), then run one
update if the algorithm can and the update-to-data cap allows, publishing the actor's weights every
`publish_every` updates (one metrics row each: updates/s, achieved update-to-data ratio) and checkpointing every
`checkpoint_every` publications. With nothing to train on it blocks on its inbox for at most 50 ms. Once the logged
transitions reach the budget (`finetune.env_steps`) it stops training, as the in-process loop does: the updates not yet
published become the final version, it checkpoints and answers "finished" (the server logs it and tells the robots
the run is over); transitions that still arrive are logged (the robot's record), not trained on.

The run folder is a `learning.runs.RunFolder` (`inril.common.open_run`), as for every trainer: run.yaml, metrics.csv
and TensorBoard events (one row per publication), last.pt / last.train.pt and the resume check (same configuration,
last.train.pt from the same point as last.pt). There is no best.pt: the server does not evaluate.

`last.train.pt` holds the algorithm's state (weights, optimisers, schedule, generators) and the counters, and names
the replay records it had learned from; `--resume` restores it exactly and refills the buffer from every record of
the log (the log may hold more records than the checkpoint saw: transitions are written as they arrive, the
checkpoint every few publications; nothing committed to the log is lost).
"""

from __future__ import annotations

import time
from collections import deque
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inril_robot.bridge.learner_process import LearnerSpec, torch_threads_for_two_processes
from inril_robot.bridge.learning import guarded_update
from inril_robot.bridge.offpolicy import OFFPOLICY_ALGOS, OffPolicyAlgo, algo_module
from inril_robot.data.replay import EpisodeChain, ReplaySpec, ReplayWriter, Step, load_arrays
from inril_robot.data.store import Dataset
from inril_robot.learning.inril.common import open_run, read_train_state
from inril_robot.learning.inril.finetune import FinetuneError
from inril_robot.learning.inril.learner import UPDATE_METRICS
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.pretrain import pick_device

STATE_VERSION = 1
ALGO_METRICS = ("critic_loss", "actor_loss", "alpha", "entropy_target", "q_mean", "q_std", "target_mean")
METRIC_FIELDS = (
    "step",
    "updates",
    "env_steps",
    "transitions",
    "episodes",
    "interventions",
    "buffer",
    "wall_s",
    "updates_per_s",
    "utd",
    "publish_ms",
    *ALGO_METRICS,
    *(k for k in UPDATE_METRICS if k not in ALGO_METRICS),
)


class _Guarded:
    """`guarded_update`'s view of an algorithm whose `update` takes no batch (it samples its own buffer)."""

    def __init__(self, algo: OffPolicyAlgo) -> None:
        self.algo = algo

    def update(self, _: None) -> dict[str, Any]:
        return self.algo.update()

    def state_dict(self) -> dict[str, Any]:
        return self.algo.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.algo.load_state_dict(state)


class OffPolicyTrainer:
    def __init__(self, spec: LearnerSpec, log: Any = None) -> None:
        cfg, out = spec.cfg, Path(spec.out)
        self.out, self.checkpoint = out, spec.checkpoint
        a = cfg.finetune.async_learner
        self.publish_every, self.checkpoint_every, self.utd_cap = a.publish_every, a.checkpoint_every, a.max_utd
        self.flush_every = a.flush_every
        self.budget = cfg.finetune.env_steps
        self.device = pick_device(cfg.finetune.device)
        torch.manual_seed(cfg.seed)
        loaded = ckpt.load_checkpoint(spec.checkpoint, use_ema=True, map_location=self.device)
        self.contract = loaded.contract
        self.cfg = cfg = cfg.model_copy(update={"policy": loaded.policy.cfg})
        self.run = open_run(out, cfg, spec.resume, METRIC_FIELDS)  # checks the folder (new: empty; resumed: same cfg)
        state = read_train_state(self.run)  # refused when last.train.pt is not from the same point as last.pt
        demos = Dataset(spec.demos) if spec.demos else None
        module = algo_module(spec.algo or OFFPOLICY_ALGOS[cfg.finetune.algo])
        self.algo: OffPolicyAlgo = module.make_server_algo(cfg, loaded.policy, demos, self.contract, self.device)
        self.policy = self.algo.actor.policy
        self.updates = self.version = self.episodes = self.interventions = self.rollbacks = 0
        self.env_steps = self.published_updates = 0
        self.failed = self.final = False
        self.last_stats: dict[str, Any] = {}
        self.update_stats: dict[str, Any] = {}
        self.chains: dict[tuple[str, int], EpisodeChain] = {}
        c = self.policy.cfg
        self.spec = ReplaySpec(
            {
                k: ((c.n_obs_steps, *shape), self.contract.observations[k].dtype)
                for k, shape in self.policy.obs_shapes.items()
            },
            (c.horizon, self.policy.action_dim),  # whole chunks: what the critics and a diffusion actor read
        )
        out.mkdir(parents=True, exist_ok=True)
        self.replay = ReplayWriter(out / "replay", self.spec, extra_info={"task": cfg.task.name}, log=log)
        if state is not None:
            if state.get("format_version") != STATE_VERSION or state.get("kind") != "serve-offpolicy":
                raise FinetuneError(f"cannot resume {out}: last.train.pt is not an off-policy server state")
            self.algo.load_state_dict(state["algo"])
            self.updates, self.version = int(state["updates"]), int(state["version"])
            self.episodes, self.interventions = int(state["episodes"]), int(state["interventions"])
            self.rollbacks = int(state["rollbacks"])
            self.published_updates = self.updates
        elif spec.resume and self.replay.records:
            raise FinetuneError(f"cannot resume {out}: it has a replay log but no last.train.pt")
        elif not spec.resume and self.replay.records:
            raise FinetuneError(f"{out / 'replay'} already holds transitions: use --resume or a new --out")
        self.restored = self._refill()
        self.run.start(cfg, up_to_step=self.version)  # run.yaml; metric rows after the resumed version dropped
        if state is None:
            self.save()  # a kill before the first checkpoint still leaves a state to resume from (version 0)
        self.started = time.perf_counter()
        self.window: deque[tuple[float, int]] = deque(maxlen=64)  # (time, updates) at each publication
        self.window.append((self.started, self.updates))

    @property
    def finished(self) -> bool:
        """The budget (`finetune.env_steps`) is spent: no more updates (transitions are still logged)."""
        return self.env_steps >= self.budget

    def _refill(self) -> dict[str, Any]:
        """The algorithm's buffer from every record of the replay log."""
        arrays, summary = load_arrays(self.out / "replay")
        if summary.transitions:
            self.algo.add(_learner_view(arrays))
        self.env_steps = int(arrays["steps"].sum())
        return {"records": summary.records, "transitions": summary.transitions, "checksum": summary.checksum}

    # ------------------------------------------------------------------------------------------- data
    def transition(self, robot: str, episode: int, history: dict[str, np.ndarray], t: dict[str, Any]) -> None:
        chain = self.chains.get((robot, episode))
        if chain is None:
            chain = self.chains[(robot, episode)] = EpisodeChain(
                robot, episode, self.replay.new_episode(), self.flush_every
            )
        with torch.no_grad():
            action = self.policy.normalizer.normalize_action(torch.from_numpy(t["executed"]).to(self.device))
        action = action.cpu().numpy()  # (H, A): executed steps, then the last one repeated
        if t.get("sampled") is not None:  # the policy's chunk: the steps it did not execute are its plan, as in-process
            action[t["steps"] :] = t["sampled"][t["steps"] :]
        chain.add(
            Step(
                obs=history,
                action=action,
                executed=t["executed"],
                reward=t["reward"],
                terminated=t["terminated"],
                truncated=t["truncated"],
                intervention=t["intervention"],
                step=t["step"],
                steps=t["steps"],
                policy_version=t["policy_version"],
                next_obs=t["next_obs"],
            )
        )
        self.interventions += int(t["intervention"])
        self._commit(chain, closing=False)

    def episode_end(self, robot: str, episode: int) -> None:
        chain = self.chains.pop((robot, episode), None)
        if chain is not None:
            self._commit(chain, closing=True)
        self.episodes += 1

    def _commit(self, chain: EpisodeChain, closing: bool) -> None:
        ready = chain.take(closing)
        for i, arrays in enumerate(ready):
            self.replay.append(
                arrays,
                robot=chain.robot,
                robot_episode=chain.robot_episode,
                episode=chain.episode,
                closed=closing and i == len(ready) - 1,
            )
            flat = {f"obs/{k[4:]}": v[:-1] for k, v in arrays.items() if k.startswith("obs/")}
            flat |= {f"next_obs/{k[4:]}": v[1:] for k, v in arrays.items() if k.startswith("obs/")}
            flat |= {k: v for k, v in arrays.items() if not k.startswith("obs/")}
            self.algo.add(_learner_view(flat))
            self.env_steps += int(arrays["steps"].sum())

    # ------------------------------------------------------------------------------------------- learning
    def can_update(self) -> bool:
        if self.failed or self.finished or not self.algo.can_update():
            return False
        return self.utd_cap <= 0 or self.updates < self.utd_cap * self.env_steps

    def step(self) -> bool:
        """One update; True when it published new weights."""
        stats, problem = guarded_update(_Guarded(self.algo), self.algo.modules(), lambda: None)
        if problem is not None:
            self.rollbacks += 1
            self.last_stats = {"step": self.version, "rolled_back": problem, "rollbacks": self.rollbacks}
            return False
        self.updates += 1
        self.last_stats = self.update_stats = stats
        if self.updates % self.publish_every:
            return False
        self._publish()
        if self.version % self.checkpoint_every == 0:
            self.save()
        return True

    def finish(self) -> bool:
        """Once the budget is spent: the updates not yet published become the final version, checkpointed (the
        in-process loop's end). True the one time it happens."""
        if self.final or not self.finished:
            return False
        self.final = True
        if self.updates > self.published_updates:
            self._publish()
        self.save()
        self.last_stats = {**self.last_stats, "finished": True}
        return True

    def _publish(self) -> None:
        """A new version: one metrics row (updates/s over the last publications, achieved update-to-data ratio)."""
        self.version += 1
        self.published_updates = self.updates
        now = time.perf_counter()
        t0, u0 = self.window[0]
        self.window.append((now, self.updates))
        row = {
            "step": self.version,
            "updates": self.updates,
            "env_steps": self.env_steps,
            "transitions": self.replay.transitions,
            "episodes": self.episodes,
            "interventions": self.interventions,
            "buffer": self.algo.buffer_size(),
            "wall_s": round(now - self.started, 3),
            "updates_per_s": round((self.updates - u0) / max(now - t0, 1e-9), 2),
            "utd": round(self.updates / max(self.env_steps, 1), 3),
            **{k: v for k, v in self.update_stats.items() if isinstance(v, int | float) and k in METRIC_FIELDS},
        }
        scalars = {k: float(v) for k, v in row.items() if k != "step" and isinstance(v, int | float)}
        self.run.log(row, scalars)
        self.last_stats = row

    # ------------------------------------------------------------------------------------------- files
    def save(self) -> None:
        ckpt.save_checkpoint(
            self.run.last,
            getattr(self.algo, "deployable", self.policy),
            contract=self.contract,
            run_cfg=self.cfg,
            step=self.env_steps,
            extra={
                "finetuned_from": str(self.checkpoint),
                "algo": self.cfg.finetune.algo,
                "policy_version": self.version,
                "trained_by": "inril-robot serve (asynchronous off-policy learner)",
            },
        )
        ckpt.atomic_torch_save(
            {
                "format_version": STATE_VERSION,
                "kind": "serve-offpolicy",
                "algo": self.algo.state_dict(),
                "updates": self.updates,
                "version": self.version,
                "episodes": self.episodes,
                "interventions": self.interventions,
                "rollbacks": self.rollbacks,
                "replay_records": self.replay.records,
                "replay_transitions": self.replay.transitions,
                "env_steps": self.env_steps,  # last.pt's step: `RunFolder.resume_state` checks they match
            },
            self.run.train_state,
        )

    def close(self) -> None:
        """Append every open episode's transitions (they are whole transitions), checkpoint, release the log."""
        for key in list(self.chains):
            chain = self.chains.pop(key)
            self._commit(chain, closing=False)
        self.save()
        self.replay.close()
        self.run.close()

    def progress(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "env_steps": self.env_steps,
            "episodes": self.episodes,
            "rollbacks": self.rollbacks,
            "row": {**self.last_stats, "updates": self.updates, "restored": self.restored, "finished": self.final},
            "weights": {k: v.detach().cpu().numpy() for k, v in self.algo.actor.state_dict().items()},
        }


def _learner_view(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    keep = ("action", "reward", "terminated", "truncated", "intervention", "steps")
    return {k: v for k, v in arrays.items() if k.startswith(("obs/", "next_obs/")) or k in keep}


def run(spec: LearnerSpec, inbox: Connection, outbox: Connection) -> None:
    """The learner process's main: train while the robots act."""
    threads = torch_threads_for_two_processes(spec.cfg.finetune.num_threads)
    if threads > 0:
        torch.set_num_threads(threads)
    notes: list[str] = []
    try:
        trainer = OffPolicyTrainer(spec, log=notes.append)
    except Exception as e:
        outbox.send(("error", str(e) or type(e).__name__))
        return
    try:
        outbox.send(("ready", {**trainer.progress(), "notes": notes}))
        while True:
            wait = 0.0 if trainer.can_update() else 0.05
            while inbox.poll(wait):
                message = inbox.recv()
                wait = 0.0
                kind = message[0]
                if kind == "stop":
                    trainer.close()
                    outbox.send(("stopped", trainer.progress()))
                    return
                if kind == "transition":
                    trainer.transition(*message[1:])
                elif kind == "episode_end":
                    trainer.episode_end(*message[1:])
                elif kind == "intervention":
                    trainer.algo.add_intervention(message[1], message[2])
            if trainer.finish():  # the budget is spent: final version and checkpoint; the server tells the robots
                outbox.send(("finished", trainer.progress()))
            if trainer.can_update():
                try:
                    published = trainer.step()
                except Exception as e:  # the server keeps serving the last weights; transitions keep being logged
                    outbox.send(("failed", f"learner update failed: {type(e).__name__}: {e}"))
                    trainer.failed = True
                    continue
                if published:
                    outbox.send(("updated", trainer.progress()))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the server is gone (killed?): what reached the replay log is on disk; nothing else to write
