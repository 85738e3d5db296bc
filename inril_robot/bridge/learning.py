"""The GPU side's policy and learner: batched inference on the serving weights, IN-RIL updates on robot episodes.

Built from the same pieces as the in-process loop (`inril.finetune.make_learner`, `to_buffer`, `summarize`,
`rl.rollouts.batch_obs` / `raw_actions`). Two modes:

- sync (default): the serving actor *is* the trained one; the server calls `update()` between episodes, when no robot
  is mid-episode (robots starting an episode wait at home, held).
- async (`--async-learner`): a learner thread trains its own actor; after each update it publishes a deep copy of it
  as the new serving actor (one reference assignment: inference never waits for the learner, and a chunk is always
  sampled from one consistent set of weights, whose version the action message carries).

Run folder: `last.pt` (deployable, `eval`-able policy checkpoint), `last.train.pt` (learner, sampler, counters:
what `--resume` needs), `metrics.csv` (one row per update).
"""

from __future__ import annotations

import copy
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from inril_robot.config import RunConfig, to_yaml
from inril_robot.contract import Contract
from inril_robot.data.store import Dataset
from inril_robot.inril.finetune import FinetuneError, make_learner, summarize, to_buffer
from inril_robot.policies import checkpoint as ckpt
from inril_robot.pretrain import (
    append_metrics,
    atomic_write_text,
    check_run_folder,
    pick_device,
    read_metrics,
    write_metrics,
)
from inril_robot.rl.actor import Actor
from inril_robot.rl.rollouts import EpisodeTrace, batch_obs, raw_actions
from inril_robot.rl.vec_env import History

from .episodes import InterventionDemos

STATE_VERSION = 1
SWITCH_INTERVAL_S = 0.0002
METRIC_FIELDS = ("step", "env_steps", "episodes", "wall_s", "update_s", "train_success", "train_return",
                 "train_episode_length", "safety_events", "interventions", "m", "rl_steps", "il_steps", "policy_loss",
                 "value_loss", "il_loss", "approx_kl", "clip_fraction", "entropy", "guard_alpha", "guard_accepted")


class ServerLearner:
    def __init__(self, cfg: RunConfig, checkpoint: Path, demos: Dataset | None, out: Path, *, mode: str = "sync",
                 resume: bool = False) -> None:
        """`mode`: "sync", "async" or "off" (inference only, deterministic actions, nothing learned or written)."""
        self.cfg, self.mode, self.out = cfg, mode, Path(out)
        f = cfg.finetune
        if f.num_threads > 0:
            torch.set_num_threads(f.num_threads)
        self.device = pick_device(f.device)
        loaded = ckpt.load_checkpoint(checkpoint, use_ema=True, map_location=self.device)
        self.contract: Contract = loaded.contract
        self.checkpoint = Path(checkpoint)
        cfg = self.cfg = cfg.model_copy(update={"policy": loaded.policy.cfg})
        torch.manual_seed(cfg.seed)
        self.interventions = InterventionDemos()
        self.version = 0
        self.env_steps = self.episodes = 0
        self.updates_since_save = 0
        self.started = time.perf_counter()
        self.sampler = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        self.lock = threading.Lock()  # guards counters and the pending episodes
        self.pending: list[EpisodeTrace] = []
        self.last_stats: dict[str, Any] = {}
        self.failure: str | None = None
        if mode == "off":
            self.actor: Actor | None = None
            self.learner = None
            self.policy = loaded.policy.eval()
            self._serving: tuple[int, Any] = (0, self.policy)
            return
        if mode == "sync" or mode == "async":
            check_run_folder(self.out, cfg, resume, sections=("policy", "finetune", "task"), error=FinetuneError)
        actor, self.critic, self.learner = make_learner(cfg, loaded.policy, demos, self.contract, self.device,
                                                        wrap_demos=self.interventions.wrap)
        self.actor = actor
        self.policy = actor.policy
        self.run_cfg = cfg.model_copy(update={"policy": actor.policy.cfg})
        if resume and (self.out / "last.train.pt").is_file():
            state = ckpt.safe_torch_load(self.out / "last.train.pt", map_location=self.device)
            if state.get("format_version") != STATE_VERSION or state.get("kind") != "serve":
                raise FinetuneError(f"cannot resume {self.out}: last.train.pt is not a policy-server state")
            self.learner.load_state_dict(state["learner"])
            self.sampler.set_state(state["sampler"])
            self.version, self.env_steps, self.episodes = int(state["version"]), int(state["env_steps"]), \
                int(state["episodes"])
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "run.yaml", to_yaml(self.run_cfg))
        self.metrics_path = self.out / "metrics.csv"
        write_metrics(self.metrics_path, read_metrics(self.metrics_path, up_to_step=self.version), METRIC_FIELDS)
        self._serving = (self.version, actor if mode == "sync" else self._snapshot())
        self._queue: queue.Queue[list[EpisodeTrace] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        if mode == "async":
            # The learner thread holds the GIL between torch kernels; CPython lets a waiting thread in only every
            # switch interval (5 ms by default), which the serving thread would pay on every request.
            sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
            self._thread = threading.Thread(target=self._learn_forever, name="inril-learner", daemon=True)
            self._thread.start()

    # -------------------------------------------------------------------------------------------- inference
    @property
    def learning(self) -> bool:
        return self.mode in ("sync", "async") and self.env_steps < self.cfg.finetune.env_steps and not self.failure

    def infer(self, histories: list[History]) -> tuple[int, np.ndarray, list[dict[str, Tensor]]]:
        """One batched forward pass: (policy version, raw actions (B, act_steps, A), per-row records to keep)."""
        version, served = self._serving  # one read: a concurrent swap cannot mix two versions in a batch
        obs = batch_obs(histories, self.device)
        with torch.inference_mode():
            if self.mode == "off":
                chunk = served.predict_normalized(obs, deterministic=True)
                kept: dict[str, Tensor] = {}
            else:
                sample = served.sample(obs, self.sampler)
                chunk, kept = sample.action, {**sample.record, "log_prob": sample.log_prob}
        policy = served if self.mode == "off" else served.policy
        actions = raw_actions(policy, chunk, policy.cfg.act_steps)
        rows = [{k: v[b].cpu().clone() for k, v in kept.items()} for b in range(len(histories))]
        return version, actions, rows

    # -------------------------------------------------------------------------------------------- learning
    def add_episode(self, trace: EpisodeTrace | None, finished_episode: bool) -> None:
        if self.mode == "off" or not self.learning:
            return
        with self.lock:
            if trace is not None:
                self.pending.append(trace)
            self.episodes += int(finished_episode)
            ready = sum(1 for _ in self.pending) >= self.cfg.finetune.episodes_per_iteration and finished_episode
            if self.mode == "async" and ready:
                batch, self.pending = self.pending, []
                self._queue.put(batch)

    def update_ready(self) -> bool:
        """Sync mode: enough episodes for an update are waiting."""
        with self.lock:
            return self.mode == "sync" and self.learning and \
                len(self.pending) >= self.cfg.finetune.episodes_per_iteration

    def update(self) -> dict[str, Any]:
        """Sync mode: one IN-RIL update on the waiting episodes (called by the serving loop between episodes)."""
        with self.lock:
            batch, self.pending = self.pending, []
        return self._update(batch)

    def _update(self, traces: list[EpisodeTrace]) -> dict[str, Any]:
        assert self.learner is not None and self.actor is not None
        tick = time.perf_counter()
        stats = self.learner.update(to_buffer(traces, self.critic, self.device))
        collected = sum(t.steps for t in traces)
        train = summarize(traces)
        with self.lock:
            self.env_steps += collected
            self.version += 1
        row = {"step": self.version, "env_steps": self.env_steps, "episodes": self.episodes,
               "wall_s": round(time.perf_counter() - self.started, 3),
               "update_s": round(time.perf_counter() - tick, 4), "train_success": train["success"]["rate"],
               "train_return": train["mean_return"], "train_episode_length": train["mean_length"],
               "safety_events": train["safety_events"], "interventions": self.interventions.total,
               **{k: v for k, v in stats.items() if isinstance(v, int | float) and k in METRIC_FIELDS}}
        if "guard" in stats:
            row.update(guard_alpha=stats["guard"]["alpha"], guard_accepted=int(stats["guard"]["accepted"]))
        append_metrics(self.metrics_path, row, METRIC_FIELDS)
        self.updates_since_save += 1
        if self.updates_since_save >= self.cfg.finetune.checkpoint_every or not self.learning:
            self.save()
        if self.mode == "async":
            self._serving = (self.version, self._snapshot())
        else:
            self._serving = (self.version, self.actor)
        self.last_stats = row
        return row

    def _snapshot(self) -> Actor:
        assert self.actor is not None
        snapshot = copy.deepcopy(self.actor)
        snapshot.policy.eval()
        return snapshot

    def _learn_forever(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            try:
                self._update(batch)
            except Exception as e:  # keep serving the last good weights; the server reports the failure
                self.failure = f"learner update failed: {type(e).__name__}: {e}"
                return

    # ------------------------------------------------------------------------------------------- checkpoints
    def save(self) -> None:
        if self.mode == "off" or self.learner is None or self.actor is None:
            return
        ckpt.save_checkpoint(self.out / "last.pt", self.actor.policy, contract=self.contract, run_cfg=self.run_cfg,
                             step=self.env_steps, extra={
                                 "finetuned_from": str(self.checkpoint), "algo": self.cfg.finetune.algo,
                                 "il_every": str(self.cfg.finetune.inril.il_every),
                                 "separation": self.cfg.finetune.inril.separation, "policy_version": self.version,
                                 "trained_by": "inril-robot serve"})
        ckpt.atomic_torch_save({"format_version": STATE_VERSION, "kind": "serve", "version": self.version,
                                "env_steps": self.env_steps, "episodes": self.episodes,
                                "learner": self.learner.state_dict(), "sampler": self.sampler.get_state()},
                               self.out / "last.train.pt")
        self.updates_since_save = 0

    def close(self) -> None:
        """Stop the learner thread after its current update, then write the final checkpoint."""
        if self.mode == "off":
            return
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        self.save()
