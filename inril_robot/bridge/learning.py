"""The GPU side's policy and learner: batched inference on the serving weights, IN-RIL updates on robot episodes.

Built from the same pieces as the in-process loop (`inril.finetune.make_learner`, `to_buffer`, `summarize`,
`rl.rollouts.batch_obs` / `raw_actions`). Two modes:

- sync (default): the serving actor *is* the trained one; the server calls `update()` between episodes, when no robot
  is mid-episode (robots starting an episode wait at home, held).
- async (`--async-learner`): the learner runs in its own process (`learner_process.py`), so inference never waits
  on it for the GIL or a core. Finished episodes go there stacked into numpy arrays; after each update it sends back
  the actor's weights, which the server loads into a fresh copy of the serving actor between inference batches
  (`poll()`, never blocking) and publishes with one reference assignment: a chunk is always sampled from one
  consistent set of weights, whose version the action message carries.

`Trainer` is the learner and its run folder, the same in both modes: `last.pt` (deployable, `eval`-able policy
checkpoint), `last.train.pt` (learner, sampler, counters: what `--resume` needs), `metrics.csv` (one row per update).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from inril_robot.bridge.episodes import EpisodeAssembler, InterventionDemos
from inril_robot.bridge.learner_process import LearnerProcess, LearnerSpec, Message, torch_threads_for_two_processes
from inril_robot.config import RunConfig
from inril_robot.core.contract import Contract
from inril_robot.data.store import Dataset
from inril_robot.learning.inril.common import summarize
from inril_robot.learning.inril.finetune import FinetuneError, build_actor, make_learner, to_buffer
from inril_robot.learning.inril.learner import UPDATE_METRICS
from inril_robot.learning.policies import checkpoint as ckpt
from inril_robot.learning.policies.base import Policy
from inril_robot.learning.pretrain import pick_device
from inril_robot.learning.rl.actor import Actor
from inril_robot.learning.rl.rollouts import EpisodeTrace, batch_obs, raw_actions
from inril_robot.learning.rl.vec_env import History
from inril_robot.learning.runs import RunFolder

STATE_VERSION = 1
METRIC_FIELDS = (
    "step",
    "env_steps",
    "episodes",
    "wall_s",
    "update_s",
    "train_success",
    "train_return",
    "train_episode_length",
    "safety_events",
    "interventions",
    *UPDATE_METRICS,
)


@dataclass
class PackedTrace(EpisodeTrace):
    """An episode with its chunks stacked into numpy arrays: what crosses to the learner process (a few large arrays
    pickle at memcpy speed, and plain numpy never goes through torch's shared-memory file-descriptor passing)."""

    packed_obs: dict[str, np.ndarray] = field(default_factory=dict)
    packed_kept: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def pack(cls, t: EpisodeTrace) -> PackedTrace:
        return cls(
            seed=t.seed,
            rewards=list(t.rewards),
            steps=t.steps,
            success=t.success,
            terminated=t.terminated,
            stopped=t.stopped,
            safety_events=t.safety_events,
            final_obs=t.final_obs,
            packed_obs={k: v.numpy() for k, v in t.stacked_obs().items()},
            packed_kept={k: v.numpy() for k, v in t.stacked_kept().items()},
        )

    def stacked_obs(self) -> dict[str, Tensor]:
        return {k: torch.from_numpy(v) for k, v in self.packed_obs.items()}

    def stacked_kept(self) -> dict[str, Tensor]:
        return {k: torch.from_numpy(v) for k, v in self.packed_kept.items()}


class ForwardedInterventions(InterventionDemos):
    """The server side of the async learner's intervention pairs: counted here, kept and sampled in the learner
    process."""

    def __init__(self, forward: Callable[[Message], None]) -> None:
        super().__init__(capacity=0)
        self.forward = forward

    def add(self, history: History, actions: np.ndarray) -> None:
        with self.lock:
            self.total += 1
        self.forward(("intervention", {k: np.array(v) for k, v in history.items()}, np.asarray(actions, np.float32)))


def guarded_update(
    learner: Any, modules: list[torch.nn.Module], buffer: Callable[[], Any]
) -> tuple[dict[str, Any], str | None]:
    """`learner.update(buffer())` that cannot leave poisoned weights behind: the learner's state (weights,
    optimisers, schedule, counters) and `modules`' weights are copied first and restored when the update raises,
    reports a non-finite loss, or leaves a non-finite gradient or weight. Returns (stats, None) or ({}, reason)."""
    snapshot = copy.deepcopy(learner.state_dict())
    weights = [copy.deepcopy(m.state_dict()) for m in modules]
    problem: str | None = None
    try:
        stats = learner.update(buffer())
    except (ValueError, RuntimeError, FloatingPointError) as e:  # torch's distributions refuse NaN parameters
        stats, problem = {}, f"the update raised {type(e).__name__}: {str(e)[:300]}"
    if problem is None:
        bad = [k for k, v in stats.items() if isinstance(v, float) and not np.isfinite(v)]
        bad += [
            f"{n} ({kind})"
            for m in modules
            for n, p in m.named_parameters()
            for kind, t in (("weight", p), ("gradient", p.grad))
            if t is not None and not torch.isfinite(t).all()
        ]
        if bad:
            problem = f"non-finite {', '.join(bad[:4])}" + (", ..." if len(bad) > 4 else "")
    if problem is None:
        return stats, None
    learner.load_state_dict(snapshot)
    for m, w in zip(modules, weights, strict=True):
        m.load_state_dict(w)
    return {}, f"{problem}; rolled back to the last good weights"


class Trainer:
    """The IN-RIL learner behind the server and its run folder: updates, metrics, checkpoints, resume. Lives in the
    serving process (sync) or in the learner process (async)."""

    def __init__(
        self,
        cfg: RunConfig,
        policy: Policy,
        contract: Contract,
        checkpoint: Path,
        demos: Dataset | None,
        out: Path,
        device: torch.device,
        *,
        resume: bool,
    ) -> None:
        self.cfg, self.contract, self.checkpoint, self.out, self.device = cfg, contract, checkpoint, out, device
        torch.manual_seed(cfg.seed)
        self.interventions = InterventionDemos()
        self.version = self.env_steps = self.episodes = 0
        self.updates_since_save = 0
        self.rollbacks = 0
        self.last_stats: dict[str, Any] = {}
        self.started = time.perf_counter()
        self.sampler = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        # no TensorBoard here: writing it in the serving process delayed answers by up to 0.8 s (watchdog holds on
        # reach at speed 0: 1-2 per run with it, 0 without); metrics.csv has every row
        self.run = RunFolder(
            out,
            cfg,
            resume,
            METRIC_FIELDS,
            sections=("policy", "finetune", "task"),
            error=FinetuneError,
            tensorboard=False,
        )
        self.actor, self.critic, self.learner = make_learner(
            cfg, policy, demos, contract, device, wrap_demos=self.interventions.wrap
        )
        self.run_cfg = cfg.model_copy(update={"policy": self.actor.policy.cfg})
        if resume and self.run.train_state.is_file():
            state = ckpt.safe_torch_load(self.run.train_state, map_location=device)
            if state.get("format_version") != STATE_VERSION or state.get("kind") != "serve":
                raise FinetuneError(f"cannot resume {out}: last.train.pt is not a policy-server state")
            self.learner.load_state_dict(state["learner"])
            self.sampler.set_state(state["sampler"])
            self.version, self.env_steps, self.episodes = (
                int(state["version"]),
                int(state["env_steps"]),
                int(state["episodes"]),
            )
        self.run.start(self.run_cfg, up_to_step=self.version)
        self.metrics_path = self.run.metrics

    @classmethod
    def from_checkpoint(
        cls, cfg: RunConfig, checkpoint: Path, demos: Path | None, out: Path, *, resume: bool
    ) -> Trainer:
        device = pick_device(cfg.finetune.device)
        loaded = ckpt.load_checkpoint(checkpoint, use_ema=True, map_location=device)
        return cls(
            cfg,
            loaded.policy,
            loaded.contract,
            Path(checkpoint),
            Dataset(demos) if demos else None,
            Path(out),
            device,
            resume=resume,
        )

    @property
    def done(self) -> bool:
        return self.env_steps >= self.cfg.finetune.env_steps

    def update(self, traces: list[EpisodeTrace], episodes: int) -> dict[str, Any]:
        """One IN-RIL update; `episodes`: the server's count of finished episodes (for the metrics). An update that
        fails or leaves a non-finite loss, gradient or weight is rolled back (see `guarded_update`): the returned
        row then has `rolled_back` (the reason), the version stays and nothing is written."""
        tick = time.perf_counter()
        stats, problem = guarded_update(
            self.learner, [self.actor, self.critic], lambda: to_buffer(traces, self.critic, self.device)
        )
        if problem is not None:
            self.rollbacks += 1
            self.episodes = episodes
            self.last_stats = {
                "step": self.version,
                "env_steps": self.env_steps,
                "rolled_back": problem,
                "rollbacks": self.rollbacks,
            }
            return self.last_stats
        train = summarize(traces)
        self.env_steps += sum(t.steps for t in traces)
        self.episodes = episodes
        self.version += 1
        row = {
            "step": self.version,
            "env_steps": self.env_steps,
            "episodes": self.episodes,
            "wall_s": round(time.perf_counter() - self.started, 3),
            "update_s": round(time.perf_counter() - tick, 4),
            "train_success": train["success"]["rate"],
            "train_return": train["mean_return"],
            "train_episode_length": train["mean_length"],
            "safety_events": train["safety_events"],
            "interventions": self.interventions.total,
            **{k: v for k, v in stats.items() if isinstance(v, int | float) and k in METRIC_FIELDS},
        }
        if "guard" in stats:
            row.update(guard_alpha=stats["guard"]["alpha"], guard_accepted=int(stats["guard"]["accepted"]))
        self.run.log(row)
        self.updates_since_save += 1
        if self.updates_since_save >= self.cfg.finetune.checkpoint_every or self.done:
            self.save()
        self.last_stats = row
        return row

    def save(self) -> None:
        ckpt.save_checkpoint(
            self.run.last,
            self.actor.policy,
            contract=self.contract,
            run_cfg=self.run_cfg,
            step=self.env_steps,
            extra={
                "finetuned_from": str(self.checkpoint),
                "algo": self.cfg.finetune.algo,
                "il_every": str(self.cfg.finetune.inril.il_every),
                "separation": self.cfg.finetune.inril.separation,
                "policy_version": self.version,
                "trained_by": "inril-robot serve",
            },
        )
        ckpt.atomic_torch_save(
            {
                "format_version": STATE_VERSION,
                "kind": "serve",
                "version": self.version,
                "env_steps": self.env_steps,
                "episodes": self.episodes,
                "learner": self.learner.state_dict(),
                "sampler": self.sampler.get_state(),
            },
            self.run.train_state,
        )
        self.updates_since_save = 0

    def progress(self) -> dict[str, Any]:
        """What the learner process reports after starting and after each update (numpy only: see PackedTrace)."""
        return {
            "version": self.version,
            "env_steps": self.env_steps,
            "episodes": self.episodes,
            "rollbacks": self.rollbacks,
            "sampler": self.sampler.get_state().numpy(),
            "row": self.last_stats,
            "weights": {k: v.detach().cpu().numpy() for k, v in self.actor.state_dict().items()},
        }


class ServerLearner:
    def __init__(
        self,
        cfg: RunConfig,
        checkpoint: Path,
        demos: Dataset | None,
        out: Path,
        *,
        mode: str = "sync",
        resume: bool = False,
        start_timeout_s: float = 300.0,
        stop_timeout_s: float = 300.0,
    ) -> None:
        """`mode`: "sync", "async" (learner process) or "off" (inference only, deterministic actions, nothing
        learned or written)."""
        loaded = self._prepare(cfg, checkpoint, out, mode, stop_timeout_s)
        cfg, f = self.cfg, self.cfg.finetune
        if mode == "off":
            torch.manual_seed(cfg.seed)
            self.interventions = InterventionDemos()
            self.sampler = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
            self.actor: Actor | None = None
            self.policy = loaded.policy.eval()
            self._serving: tuple[int, Any] = (0, self.policy)
            return
        if mode == "sync":
            trainer = self.trainer = Trainer(
                cfg, loaded.policy, self.contract, self.checkpoint, demos, self.out, self.device, resume=resume
            )
            self.interventions, self.sampler, self.actor = trainer.interventions, trainer.sampler, trainer.actor
            self.version, self.env_steps, self.episodes = trainer.version, trainer.env_steps, trainer.episodes
            self.policy = self.actor.policy
            self._serving = (self.version, self.actor)
            return
        self.actor = build_actor(loaded.policy, f).to(self.device)
        self.policy = self.actor.policy
        # double buffer: new weights are copied in place into the actor not being served, then the two swap; no
        # allocation or deepcopy in the serving thread (a deepcopy per swap cost ~16 ms of inference p99)
        self._spare: Actor = copy.deepcopy(self.actor).eval()
        self.sampler = torch.Generator(device=self.device)
        payload = self._start(
            LearnerSpec(cfg, self.checkpoint, demos.root if demos else None, self.out, resume), start_timeout_s
        )
        self.sampler.set_state(torch.from_numpy(payload["sampler"]))
        self.episodes = payload["episodes"]
        self._serving = (0, self.actor)
        self._take(payload)

    def _prepare(self, cfg: RunConfig, checkpoint: Path, out: Path, mode: str, stop_timeout_s: float) -> Any:
        """What every mode (and the off-policy learner) sets up: threads, device, the served checkpoint (returned),
        counters."""
        self.cfg, self.mode, self.out = cfg, mode, Path(out)
        f = cfg.finetune
        self.torch_threads = torch.get_num_threads()  # restored by close()
        threads = torch_threads_for_two_processes(f.num_threads) if mode == "async" else f.num_threads
        if threads > 0:
            torch.set_num_threads(threads)
        self.device = pick_device(f.device)
        loaded = ckpt.load_checkpoint(checkpoint, use_ema=True, map_location=self.device)
        self.contract: Contract = loaded.contract
        self.checkpoint = Path(checkpoint)
        self.cfg = cfg.model_copy(update={"policy": loaded.policy.cfg})
        self.version = self.env_steps = self.episodes = 0
        self.lock = threading.Lock()  # guards counters and the pending episodes
        self.pending: list[EpisodeTrace] = []
        self.last_stats: dict[str, Any] = {}
        self.failure: str | None = None
        self.rollbacks = 0
        self.in_flight = 0  # async: batches sent to the learner process, not yet answered
        self.stop_timeout_s = stop_timeout_s
        self.trainer: Trainer | None = None
        self.process: LearnerProcess | None = None
        return loaded

    def _start(
        self, spec: LearnerSpec, timeout_s: float, target: str = "inril_robot.bridge.learner_process:run"
    ) -> dict[str, Any]:
        """Start the learner process; returns its "ready" progress (raises `FinetuneError` with its reason)."""
        self.process = LearnerProcess(spec, target)
        kind, payload = self.process.wait_ready(timeout_s)
        if kind != "ready":
            self.process.close()
            torch.set_num_threads(self.torch_threads)
            raise FinetuneError(payload)
        self.interventions = ForwardedInterventions(self.process.send)
        return payload

    def new_assembler(self, robot: str) -> EpisodeAssembler:
        """What turns one robot's messages into what this learner learns from."""
        return EpisodeAssembler(self.policy.cfg.horizon, self.interventions)

    # -------------------------------------------------------------------------------------------- inference
    @property
    def finished(self) -> bool:
        """The learner spent its budget (`finetune.env_steps`): its final weights are published and checkpointed."""
        return self.mode in ("sync", "async") and self.env_steps >= self.cfg.finetune.env_steps

    @property
    def learning(self) -> bool:
        return self.mode in ("sync", "async") and not self.finished and not self.failure

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
        batch: list[EpisodeTrace] = []
        with self.lock:
            if trace is not None:
                self.pending.append(trace)
            self.episodes += int(finished_episode)
            ready = len(self.pending) >= self.cfg.finetune.episodes_per_iteration and finished_episode
            if self.mode == "async" and ready:
                batch, self.pending = self.pending, []
        if batch:
            self.submit([PackedTrace.pack(t) for t in batch])

    def submit(self, batch: list[PackedTrace]) -> None:
        """Async mode: hand a batch of episodes to the learner process (returns at once)."""
        assert self.process is not None
        with self.lock:
            self.in_flight += 1
        self.process.send(("batch", batch, self.episodes, self.sampler.get_state().numpy()))

    def poll(self) -> None:
        """Async mode: take in what the learner process sent (new weights, a failure). Never blocks; the server
        calls it between inference batches."""
        if self.process is None or self.process.closed:
            return
        self._handle(self.process.receive())
        if self.process.exit_code is not None and not self.failure:
            self._handle(self.process.receive())
            self.failure = f"the learner process exited unexpectedly (exit code {self.process.exit_code})"

    def _handle(self, messages: list[Message]) -> None:
        for kind, payload in messages:
            if kind in ("updated", "stopped", "finished"):  # finished: the off-policy learner's budget is spent
                if kind == "updated":
                    with self.lock:
                        self.in_flight -= 1
                self._take(payload)
            elif kind == "failed":
                self.failure = payload

    def _take(self, progress: dict[str, Any]) -> None:
        """Publish the learner process's weights: copied in place into the spare actor, then one assignment. Only
        the serving thread calls this and `infer`, so the actor swapped out is no longer in use."""
        actor = self._spare
        with torch.no_grad():
            actor.load_state_dict({k: torch.from_numpy(v) for k, v in progress["weights"].items()})
        with self.lock:
            self.version, self.env_steps = int(progress["version"]), int(progress["env_steps"])
        self.last_stats = progress["row"]
        self.rollbacks = int(progress.get("rollbacks", 0))
        previous = self._serving[1]
        self._serving = (self.version, actor)
        self._spare = previous

    def update_ready(self) -> bool:
        """Sync mode: enough episodes for an update are waiting."""
        with self.lock:
            return (
                self.mode == "sync" and self.learning and len(self.pending) >= self.cfg.finetune.episodes_per_iteration
            )

    def update(self) -> dict[str, Any]:
        """Sync mode: one IN-RIL update on the waiting episodes (called by the serving loop between episodes)."""
        assert self.trainer is not None
        with self.lock:
            batch, self.pending = self.pending, []
        row = self.trainer.update(batch, self.episodes)
        self.rollbacks = self.trainer.rollbacks
        with self.lock:
            self.version, self.env_steps = self.trainer.version, self.trainer.env_steps
        self._serving = (self.version, self.actor)
        self.last_stats = row
        return row

    # ------------------------------------------------------------------------------------------- checkpoints
    def save(self) -> None:
        if self.trainer is not None:
            self.trainer.save()

    def close(self) -> None:
        """Sync: write the final checkpoint. Async: the learner process finishes the batches it was sent, writes the
        final checkpoint and exits (joined with a timeout)."""
        if self.trainer is not None:
            self.trainer.save()
            self.trainer.run.close()
        if self.process is not None and not self.process.closed:
            self._handle(self.process.stop(self.stop_timeout_s))
            if self.process.exit_code != 0 and not self.failure:
                self.failure = f"the learner process did not stop cleanly (exit code {self.process.exit_code})"
        if self.mode == "async":
            torch.set_num_threads(self.torch_threads)
