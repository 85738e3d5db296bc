"""Random access to training windows around any step of any episode, fast enough to feed a learner.

A window belongs to a *current* step t and holds W = history + horizon - 1 consecutive steps,
t - history + 1 .. t + horizon - 1: rows 0..history-1 are the observation history ending at t, rows history-1..W-1
the `horizon` steps from t on (row history-1 is t itself, shared by both). Steps outside the episode are clamped,
i.e. padded by repeating the first step (the history a policy sees at an episode's start) or the last step (the
convention of action-chunking policies). With `pad=False` only windows lying wholly inside an episode exist.

Episodes are decoded whole on first use (image arrays are chunked by 16 steps, so that is a few large reads) and
kept in an LRU cache bounded in bytes; a window is then a numpy slice. `preload()` holds every array as one flat
array per key when the dataset fits the budget, and a batch becomes a single gather (the per-window path costs
~50 us a window, more than a small MLP's update).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from inril_robot.data.store import Dataset, DatasetError


class WindowSampler:
    def __init__(
        self,
        dataset: Dataset,
        keys: list[str],
        horizon: int,
        *,
        history: int = 1,
        pad: bool = True,
        successful_only: bool = False,
        cache_bytes: int = 2 << 30,
    ) -> None:
        if horizon < 1 or history < 1:
            raise ValueError(f"horizon and history must be >= 1, got {horizon} and {history}")
        self.dataset = dataset
        self.keys = list(keys)
        self.horizon = horizon
        self.history = history
        self.window = history + horizon - 1
        self.episodes = [e for e in dataset.episodes if e.success or not successful_only]
        if not self.episodes:
            raise DatasetError(f"{dataset.root}: no {'successful ' if successful_only else ''}episodes to sample from")
        for key in self.keys:
            self.episodes[0].array(key)  # fail early, naming the key, rather than inside the training loop
        self.lengths = np.array([e.length for e in self.episodes])  # (E,)
        currents = [np.arange(n) if pad else np.arange(history - 1, n - horizon + 1) for n in self.lengths]
        self.index = np.concatenate(
            [np.stack([np.full(len(c), i), c], axis=1) for i, c in enumerate(currents) if len(c)] or [np.zeros((0, 2))]
        ).astype(np.int64)  # (N, 2): (episode position, current step)
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._cached = 0
        self._flat: dict[str, np.ndarray] | None = None
        self._offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])  # (E,) flat index of each step 0

    def __len__(self) -> int:
        return len(self.index)

    def _steps(self, picks: np.ndarray) -> np.ndarray:
        """(B, W) step indices of windows `picks`, clamped to their episodes."""
        position, current = self.index[picks, 0], self.index[picks, 1]
        steps = current[:, None] - (self.history - 1) + np.arange(self.window)
        return np.clip(steps, 0, self.lengths[position, None] - 1)

    def preload(self) -> bool:
        """Hold every key as one flat in-memory array if the dataset fits `cache_bytes`; True when it did."""
        if self._flat is None:
            size = sum(e.array(k).nbytes for e in self.episodes for k in self.keys)
            if size <= self.cache_bytes:
                self._flat = {k: np.concatenate([e.load(k) for e in self.episodes]) for k in self.keys}
        return self._flat is not None

    def _episode_arrays(self, position: int) -> dict[str, np.ndarray]:
        if position in self._cache:
            self._cache.move_to_end(position)
            return self._cache[position]
        episode = self.episodes[position]
        arrays = {k: episode.load(k) for k in self.keys}
        size = sum(a.nbytes for a in arrays.values())
        while self._cache and self._cached + size > self.cache_bytes:
            _, evicted = self._cache.popitem(last=False)
            self._cached -= sum(a.nbytes for a in evicted.values())
        self._cache[position] = arrays
        self._cached += size
        return arrays

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        """Window i: each key -> (W, *shape)."""
        return {k: a[0] for k, a in self.windows(np.array([i])).items()}

    def windows(self, picks: np.ndarray) -> dict[str, np.ndarray]:
        """Windows `picks` (B,): each key -> (B, W, *shape)."""
        picks = np.asarray(picks, dtype=np.int64)
        steps = self._steps(picks)  # (B, W)
        if self._flat is not None:
            flat = self._offsets[self.index[picks, 0], None] + steps  # (B, W)
            return {k: a[flat] for k, a in self._flat.items()}
        out: dict[str, list[np.ndarray]] = {k: [] for k in self.keys}
        for position, row in zip(self.index[picks, 0], steps, strict=True):
            for k, a in self._episode_arrays(int(position)).items():
                out[k].append(a[row])
        return {k: np.stack(v) for k, v in out.items()}

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """A batch of random windows: each key -> (batch, W, *shape)."""
        return self.windows(rng.integers(0, len(self.index), batch_size))
