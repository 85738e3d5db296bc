"""In-memory replay for the off-policy learners (SAC, IDQL): preallocated torch tensors, a ring over `capacity`.

One transition is one executed action chunk, in the fields the persistent transition log (`data/replay.py`) stores:

    obs          key -> (To, *shape)   the observation history the chunk was chosen from (raw units; images uint8)
    action       (H, A)                the chunk in NORMALISED units, [-1, 1] (the sampled chunk in simulation; on the
                                       robot the executed one, so an intervention's actions are what is learned from)
    reward       ()                    summed over the chunk's executed steps
    terminal     ()                    success or safety stop: the return ends here, no bootstrap
    truncated    ()                    the time limit ended the episode: bootstrapped from next_obs
    intervention ()                    a human was in control for (part of) the chunk
    next_obs     key -> (To, *shape)   the history after the chunk (the final one when the episode ended)

Demonstrations live in a second `ReplayBuffer`; `sample_mixed` draws RLPD's symmetric batch from the two (a fixed
share from the demos, the rest from online data). `transitions_from_episodes` turns recorded episodes (the demo
dataset) into transitions at the policy's chunk granularity, with the rewards the episodes recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

Obs = dict[str, Tensor]
FLAGS = ("terminal", "truncated", "intervention")


@dataclass
class Batch:
    obs: Obs  # key -> (B, To, ...)
    action: Tensor  # (B, H, A) normalised
    reward: Tensor  # (B,)
    terminal: Tensor  # (B,) float 0/1
    truncated: Tensor  # (B,) float 0/1
    intervention: Tensor  # (B,) float 0/1
    next_obs: Obs  # key -> (B, To, ...)
    is_demo: Tensor  # (B,) float 0/1

    def ends(self, bootstrap_time_limit: bool = True) -> Tensor:
        """(B,) 1 where the TD target must not bootstrap: terminal ends, and time-limit ends unless bootstrapped."""
        return self.terminal if bootstrap_time_limit else torch.maximum(self.terminal, self.truncated)


class ReplayBuffer:
    """A ring of `capacity` transitions; shapes are fixed by the first `add` (or by `obs_shapes` / `action_shape`)."""

    def __init__(self, capacity: int, device: torch.device | str = "cpu") -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.device = torch.device(device)
        self.size = 0  # transitions held
        self.added = 0  # transitions ever added (the ring overwrites the oldest beyond capacity)
        self.storage: dict[str, Tensor] = {}

    def __len__(self) -> int:
        return self.size

    def _allocate(self, row: Mapping[str, np.ndarray]) -> None:
        for key, value in row.items():
            dtype = torch.uint8 if value.dtype == np.uint8 else torch.float32
            self.storage[key] = torch.zeros((self.capacity, *value.shape), dtype=dtype, device=self.device)

    def add(self, transition: Mapping[str, Any]) -> None:
        """One transition as a dict with the fields above (numpy arrays or scalars)."""
        row = _flatten(transition)
        if not self.storage:
            self._allocate(row)
        if row.keys() != self.storage.keys():
            raise ValueError(f"transition fields {sorted(row)} differ from the buffer's {sorted(self.storage)}")
        i = self.added % self.capacity
        for key, value in row.items():
            self.storage[key][i] = torch.as_tensor(value, dtype=self.storage[key].dtype, device=self.device)
        self.added += 1
        self.size = min(self.size + 1, self.capacity)

    def extend(self, transitions: Iterable[Mapping[str, Any]]) -> int:
        n = 0
        for t in transitions:
            self.add(t)
            n += 1
        return n

    def gather(self, idx: Tensor, is_demo: bool = False) -> Batch:
        """The transitions at ring positions `idx` (B,) as a `Batch`."""
        take = {k: v[idx] for k, v in self.storage.items()}  # each (B, ...)
        obs = {k[len("obs/") :]: v for k, v in take.items() if k.startswith("obs/")}
        next_obs = {k[len("next_obs/") :]: v for k, v in take.items() if k.startswith("next_obs/")}
        flag = torch.full((len(idx),), float(is_demo), device=self.device)  # (B,)
        return Batch(
            obs,
            take["action"],
            take["reward"],
            take["terminal"],
            take["truncated"],
            take["intervention"],
            next_obs,
            flag,
        )

    def sample(self, batch_size: int, generator: torch.Generator, is_demo: bool = False) -> Batch:
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = torch.randint(0, self.size, (batch_size,), generator=generator)  # (B,) uniform, with replacement
        return self.gather(idx.to(self.device), is_demo)

    def transitions(self) -> Iterator[dict[str, np.ndarray]]:
        """Every held transition, oldest first, as flat numpy rows (for saving and checks)."""
        start = self.added % self.capacity if self.size == self.capacity else 0
        for j in range(self.size):
            i = (start + j) % self.capacity
            yield {k: v[i].cpu().numpy() for k, v in self.storage.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "size": self.size,
            "added": self.added,
            "storage": {k: v[: self.size].clone() for k, v in self.storage.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"replay capacity {state['capacity']} saved, {self.capacity} configured")
        self.size, self.added = int(state["size"]), int(state["added"])
        self.storage = {}
        for key, value in state["storage"].items():
            full = torch.zeros((self.capacity, *value.shape[1:]), dtype=value.dtype, device=self.device)
            full[: self.size] = value.to(self.device)
            self.storage[key] = full


def sample_mixed(
    online: ReplayBuffer, demos: ReplayBuffer | None, batch_size: int, demo_fraction: float, generator: torch.Generator
) -> Batch:
    """RLPD's symmetric sampling: round(batch_size * demo_fraction) demo transitions + the rest online, one batch.
    Without demos (or a zero fraction, or an empty online buffer before the first episode) one source fills it."""
    n_demo = round(batch_size * demo_fraction) if demos is not None and len(demos) else 0
    if len(online) == 0:
        n_demo = batch_size
    if n_demo == 0:
        return online.sample(batch_size, generator)
    if n_demo == batch_size:
        assert demos is not None
        return demos.sample(batch_size, generator, is_demo=True)
    assert demos is not None
    return concat(online.sample(batch_size - n_demo, generator), demos.sample(n_demo, generator, is_demo=True))


def concat(a: Batch, b: Batch) -> Batch:
    def cat_obs(x: Obs, y: Obs) -> Obs:
        return {k: torch.cat([x[k], y[k]]) for k in x}

    return Batch(
        cat_obs(a.obs, b.obs),
        torch.cat([a.action, b.action]),
        torch.cat([a.reward, b.reward]),
        torch.cat([a.terminal, b.terminal]),
        torch.cat([a.truncated, b.truncated]),
        torch.cat([a.intervention, b.intervention]),
        cat_obs(a.next_obs, b.next_obs),
        torch.cat([a.is_demo, b.is_demo]),
    )


def _flatten(t: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """{"obs": {k: ...}, "next_obs": {...}, ...} -> {"obs/k": array, "next_obs/k": array, "action": ..., ...}."""
    missing = [k for k in ("obs", "action", "reward", "next_obs", "terminal", "truncated") if k not in t]
    if missing:
        raise ValueError(f"a transition needs the fields {missing}")
    row: dict[str, np.ndarray] = {}
    for group in ("obs", "next_obs"):
        for key, value in t[group].items():
            row[f"{group}/{key}"] = np.asarray(value)
    row["action"] = np.asarray(t["action"], dtype=np.float32)
    row["reward"] = np.asarray(t["reward"], dtype=np.float32)
    for flag in FLAGS:
        row[flag] = np.asarray(float(bool(t.get(flag, False))), dtype=np.float32)
    return row


# ------------------------------------------------------------------------------------------------ from episodes
def episode_transitions(
    obs: Mapping[str, np.ndarray],
    actions: np.ndarray,
    rewards: np.ndarray,
    success: bool,
    stopped: bool,
    n_obs_steps: int,
    horizon: int,
    act_steps: int,
) -> Iterator[dict[str, Any]]:
    """One recorded episode of T control steps -> one transition per step t at chunk granularity:

        obs      obs[t - To + 1 .. t]                     (the first frame repeats before the start, as ObsHistory)
        action   actions[t .. t + H - 1]                  (T, A) normalised; the last action repeats past the end
        reward   rewards[t .. t + act_steps - 1] summed
        next_obs obs[t' - To + 1 .. t'], t' = t + act_steps (clamped to the last frame)
        terminal the chunk reaches the end of a successful or stopped episode; truncated: of any other

    obs: key -> (T, *shape); actions (T, A) already normalised; rewards (T,). The episode's final observation (after
    its last action) is not stored by the dataset, so the last frame stands in for it: harmless for a terminal end
    (no bootstrap), a one-step-stale state for a truncated one."""
    steps = len(rewards)
    for t in range(steps):
        end = min(t + act_steps, steps)
        last = end >= steps
        chunk = actions[[min(t + h, steps - 1) for h in range(horizon)]]  # (H, A)
        yield {
            "obs": {k: v[_history(t, n_obs_steps)] for k, v in obs.items()},
            "action": chunk,
            "reward": float(np.sum(rewards[t:end])),
            "terminal": last and (success or stopped),
            "truncated": last and not (success or stopped),
            "intervention": False,
            "next_obs": {k: v[_history(min(end, steps - 1), n_obs_steps)] for k, v in obs.items()},
        }


def _history(t: int, n_obs_steps: int) -> list[int]:
    """Frame indices of the history ending at t: [t - To + 1, ..., t], clamped at 0."""
    return [max(t - back, 0) for back in range(n_obs_steps - 1, -1, -1)]
