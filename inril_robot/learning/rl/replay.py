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

Each observation history is stored once: a transition holds two indices into an observation store (`frames`), and
the next observation of one transition is the same stored history as the observation of the next (of the same
episode, or of any transition: histories are keyed by a digest of their stored bytes, blake2b-128, so equal
histories share one slot wherever they come from). A stored history is freed when no held transition refers to it
(reference counts). With chunks of one episode in a row that is one history per transition plus one per episode,
against two per transition as obs/next_obs pairs; images stay uint8 (`bench data` prints the bytes per 100k).

Demonstrations live in a second `ReplayBuffer`; `sample_mixed` draws RLPD's symmetric batch from the two (a fixed
share from the demos, the rest from online data). `transitions_from_episodes` turns recorded episodes (the demo
dataset) into transitions at the policy's chunk granularity, with the rewards the episodes recorded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

Obs = dict[str, Tensor]
FLAGS = ("terminal", "truncated", "intervention")
FIELDS = ("action", "reward", *FLAGS)


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
    """A ring of `capacity` transitions over an observation store holding each distinct history once (see the
    module doc); shapes are fixed by the first `add`."""

    def __init__(self, capacity: int, device: torch.device | str = "cpu") -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.device = torch.device(device)
        self._clear()

    def _clear(self) -> None:
        capacity = self.capacity
        self.size = 0  # transitions held
        self.added = 0  # transitions ever added (the ring overwrites the oldest beyond capacity)
        self.fields: dict[str, Tensor] = {}  # action, reward, flags: (capacity, ...)
        self.frames: dict[str, Tensor] = {}  # obs key -> (store slots, To, ...): the stored histories
        self.refs = torch.zeros((capacity, 2), dtype=torch.int64, device=self.device)  # (obs, next_obs) slots
        self._refs = np.zeros((capacity, 2), np.int64)  # the same on the host (eviction bookkeeping)
        self._count = np.zeros(0, np.int64)  # per store slot: how many transition ends refer to it
        self._digest: list[bytes | None] = []  # per store slot
        self._slot_of: dict[bytes, int] = {}
        self._free: list[int] = []  # free store slots, the lowest last

    def __len__(self) -> int:
        return self.size

    # -------------------------------------------------------------------------------------------- storage
    def _allocate(self, obs: Mapping[str, np.ndarray], row: Mapping[str, np.ndarray]) -> None:
        for key, value in row.items():
            self.fields[key] = torch.zeros((self.capacity, *value.shape), dtype=torch.float32, device=self.device)
        # empty, not zeros: untouched store slots cost no memory on the host until written
        slots = self.capacity + self.capacity // 8 + 64
        self.frames = {
            k: torch.empty((slots, *v.shape), dtype=_torch_dtype(v), device=self.device) for k, v in obs.items()
        }
        self._count = np.zeros(slots, np.int64)
        self._digest = [None] * slots
        self._free = list(range(slots - 1, -1, -1))

    def _grow(self) -> None:
        old = len(self._count)
        slots = old + max(old // 4, 64)
        for k, v in self.frames.items():
            grown = torch.empty((slots, *v.shape[1:]), dtype=v.dtype, device=self.device)
            grown[:old] = v
            self.frames[k] = grown
        self._count = np.concatenate([self._count, np.zeros(slots - old, np.int64)])
        self._digest += [None] * (slots - old)
        self._free = list(range(slots - 1, old - 1, -1)) + self._free

    def _intern(self, obs: Mapping[str, np.ndarray]) -> int:
        """The store slot holding this history (stored now if no held transition has it); one more reference."""
        digest = _digest(obs)
        slot = self._slot_of.get(digest)
        if slot is None:
            if not self._free:
                self._grow()
            slot = self._free.pop()
            for k, v in obs.items():
                target = self.frames[k][slot]
                if target.device.type == "cpu":  # a plain memcpy: torch's parallel copy of one image woke its
                    target.numpy()[...] = v  # thread pool each time (20-35 ms per history on 2 loaded cores)
                else:
                    target.copy_(torch.from_numpy(v))
            self._digest[slot], self._slot_of[digest] = digest, slot
        self._count[slot] += 1
        return slot

    def _release(self, slot: int) -> None:
        self._count[slot] -= 1
        if self._count[slot] == 0:
            digest = self._digest[slot]
            assert digest is not None
            del self._slot_of[digest]
            self._digest[slot] = None
            self._free.append(slot)

    # -------------------------------------------------------------------------------------------- adding
    def add(self, transition: Mapping[str, Any]) -> None:
        """One transition as a dict with the fields above (numpy arrays or scalars)."""
        obs, next_obs, row = _split(transition)
        if not self.fields:
            self._allocate(obs, row)
        if obs.keys() != self.frames.keys() or next_obs.keys() != self.frames.keys():
            raise ValueError(
                f"transition observations {sorted(obs)} / next {sorted(next_obs)} differ from the buffer's "
                f"{sorted(self.frames)}"
            )
        for k, v in obs.items():
            stored = self.frames[k]
            for value in (v, next_obs[k]):
                if value.shape != stored.shape[1:] or _torch_dtype(value) != stored.dtype:
                    raise ValueError(
                        f"observation {k!r}: {value.dtype}{value.shape}, the buffer holds "
                        f"{stored.dtype}{tuple(stored.shape[1:])}"
                    )
        i = self.added % self.capacity
        refs = (self._intern(obs), self._intern(next_obs))  # before releasing the evicted ones: shared slots stay
        if self.size == self.capacity:
            for slot in self._refs[i]:
                self._release(int(slot))
        self._refs[i] = refs
        self.refs[i] = torch.as_tensor(refs, device=self.device)
        for key, value in row.items():
            self.fields[key][i] = torch.as_tensor(value, device=self.device)
        self.added += 1
        self.size = min(self.size + 1, self.capacity)

    def extend(self, transitions: Iterable[Mapping[str, Any]]) -> int:
        n = 0
        for t in transitions:
            self.add(t)
            n += 1
        return n

    # -------------------------------------------------------------------------------------------- reading
    def gather(self, idx: Tensor, is_demo: bool = False) -> Batch:
        """The transitions at ring positions `idx` (B,) as a `Batch`."""
        idx = idx.to(self.device)
        refs = self.refs[idx]  # (B, 2)
        obs = {k: v[refs[:, 0]] for k, v in self.frames.items()}  # each (B, To, ...)
        next_obs = {k: v[refs[:, 1]] for k, v in self.frames.items()}
        take = {k: v[idx] for k, v in self.fields.items()}
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
        # drawn on the generator's device (a CUDA learner's generator lives on the GPU), uniform, with replacement
        idx = torch.randint(0, self.size, (batch_size,), generator=generator, device=generator.device)  # (B,)
        return self.gather(idx, is_demo)

    def transitions(self) -> Iterator[dict[str, np.ndarray]]:
        """Every held transition, oldest first, as flat numpy rows (for saving and checks)."""
        start = self.added % self.capacity if self.size == self.capacity else 0
        for j in range(self.size):
            i = (start + j) % self.capacity
            o, n = (int(r) for r in self._refs[i])
            row = {f"obs/{k}": v[o].cpu().numpy() for k, v in self.frames.items()}
            row |= {f"next_obs/{k}": v[n].cpu().numpy() for k, v in self.frames.items()}
            yield row | {k: v[i].cpu().numpy() for k, v in self.fields.items()}

    def nbytes(self) -> dict[str, int]:
        """Bytes the held transitions occupy: `histories` (the store slots in use), `per_transition` (the fields
        and indices of `size` transitions) and `stored_histories` (how many)."""
        live = int(np.count_nonzero(self._count))
        per_history = sum(v[0].numel() * v.element_size() for v in self.frames.values())
        per_row = sum(v[0].numel() * v.element_size() for v in self.fields.values()) + 2 * 8
        return {"histories": live * per_history, "per_transition": self.size * per_row, "stored_histories": live}

    # -------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Compact: the slots in use renumbered in order, the transitions' fields and indices."""
        live = np.flatnonzero(self._count)
        renumber = np.full(len(self._count), -1, np.int64)
        renumber[live] = np.arange(len(live))
        at = torch.as_tensor(live, device=self.device)
        return {
            "capacity": self.capacity,
            "size": self.size,
            "added": self.added,
            "fields": {k: v[: self.size].clone() for k, v in self.fields.items()},
            "refs": torch.from_numpy(renumber[self._refs[: self.size]]),
            "frames": {k: v[at].clone() for k, v in self.frames.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"replay capacity {state['capacity']} saved, {self.capacity} configured")
        self._clear()
        if "storage" in state:  # a buffer saved before histories were shared: flat obs/next_obs per transition
            self._load_flat(state)
            return
        size = int(state["size"])
        if size == 0:
            self.added = int(state["added"])
            return
        frames = {k: v.cpu().numpy() for k, v in state["frames"].items()}
        fields = {k: v.cpu().numpy() for k, v in state["fields"].items()}
        self._allocate({k: v[0] for k, v in frames.items()}, {k: v[0] for k, v in fields.items()})
        stored = len(next(iter(frames.values())))
        while len(self._count) < stored:
            self._grow()
        for k, v in frames.items():
            self.frames[k][:stored] = torch.from_numpy(v).to(self.device)
        for slot in range(stored):
            digest = _digest({k: v[slot] for k, v in frames.items()})
            self._digest[slot], self._slot_of[digest] = digest, slot
        self._free = [s for s in range(len(self._count) - 1, -1, -1) if s >= stored]
        refs = state["refs"].cpu().numpy().astype(np.int64)
        self._refs[:size] = refs
        self.refs[:size] = torch.from_numpy(refs).to(self.device)
        np.add.at(self._count, refs.reshape(-1), 1)
        for k, v in fields.items():
            self.fields[k][:size] = torch.from_numpy(v).to(self.device)
        self.size, self.added = size, int(state["added"])

    def _load_flat(self, state: dict[str, Any]) -> None:
        size = int(state["size"])
        flat = {k: v.cpu().numpy() for k, v in state["storage"].items()}
        for i in range(size):  # slot i of the old ring is slot i here
            self.added = i
            self.add(_unflatten({k: v[i] for k, v in flat.items()}))
        self.size, self.added = size, int(state["added"])


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


def log_transitions(arrays: Mapping[str, np.ndarray]) -> Iterator[dict[str, Any]]:
    """Flat arrays in the replay log's fields (`obs/<k>`, `next_obs/<k>`, `action`, `reward`, `terminated`,
    `truncated`, `intervention`; leading dimension n) -> n transitions for `ReplayBuffer.add`."""
    keys = [k[4:] for k in arrays if k.startswith("obs/")]
    for i in range(len(arrays["reward"])):
        yield {
            "obs": {k: arrays[f"obs/{k}"][i] for k in keys},
            "action": arrays["action"][i],
            "reward": arrays["reward"][i],
            "terminal": arrays["terminated"][i],
            "truncated": arrays["truncated"][i],
            "intervention": arrays["intervention"][i],
            "next_obs": {k: arrays[f"next_obs/{k}"][i] for k in keys},
        }


def _split(t: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """{"obs": {k: ...}, "next_obs": {...}, "action": ..., ...} -> (obs, next_obs, the other fields as float32
    arrays). Observations keep uint8 (images) and become float32 otherwise."""
    missing = [k for k in ("obs", "action", "reward", "next_obs", "terminal", "truncated") if k not in t]
    if missing:
        raise ValueError(f"a transition needs the fields {missing}")
    obs, next_obs = ({k: _stored(v) for k, v in t[group].items()} for group in ("obs", "next_obs"))
    row = {"action": np.asarray(t["action"], dtype=np.float32), "reward": np.asarray(t["reward"], dtype=np.float32)}
    for flag in FLAGS:
        row[flag] = np.asarray(float(bool(t.get(flag, False))), dtype=np.float32)
    return obs, next_obs, row


def _unflatten(row: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """A flat row ("obs/<k>", "next_obs/<k>", fields) -> a transition dict."""
    out: dict[str, Any] = {"obs": {}, "next_obs": {}}
    for key, value in row.items():
        group, _, name = key.partition("/")
        if name:
            out[group][name] = value
        else:
            out[key] = value
    return out


def _stored(value: Any) -> np.ndarray:
    a = np.asarray(value)
    return np.ascontiguousarray(a if a.dtype == np.uint8 else a.astype(np.float32, copy=False))


def _torch_dtype(a: np.ndarray) -> torch.dtype:
    return torch.uint8 if a.dtype == np.uint8 else torch.float32


def _digest(obs: Mapping[str, np.ndarray]) -> bytes:
    """blake2b-128 of the stored bytes of every key (with its name, dtype and shape)."""
    h = hashlib.blake2b(digest_size=16)
    for key in sorted(obs):
        a = np.ascontiguousarray(obs[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(memoryview(a).cast("B"))
    return h.digest()


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
