"""Random access to training windows: `horizon` consecutive steps from any episode, fast enough to feed a learner.

Episodes are decoded whole on first use (image arrays are chunked by 16 steps, so that is a few large reads) and
kept in an LRU cache bounded in bytes; a window is then a numpy slice. Windows that run past the end of an episode
are padded by repeating the last step (the convention of action-chunking policies), unless `pad=False`.
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
        pad: bool = True,
        successful_only: bool = False,
        cache_bytes: int = 2 << 30,
    ) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.dataset = dataset
        self.keys = list(keys)
        self.horizon = horizon
        self.episodes = [e for e in dataset.episodes if e.success or not successful_only]
        if not self.episodes:
            raise DatasetError(f"{dataset.root}: no {'successful ' if successful_only else ''}episodes to sample from")
        for key in self.keys:
            self.episodes[0].array(key)  # fail early, naming the key, rather than inside the training loop
        starts = [np.arange(e.length if pad else max(e.length - horizon + 1, 0)) for e in self.episodes]
        self.index = np.concatenate(
            [np.stack([np.full(len(s), i), s], axis=1) for i, s in enumerate(starts) if len(s)]
        ).astype(np.int64)  # (N, 2): (episode position, start step)
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._cached = 0

    def __len__(self) -> int:
        return len(self.index)

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
        """Window i: each key -> (horizon, *shape)."""
        position, start = self.index[i]
        arrays = self._episode_arrays(int(position))
        length = self.episodes[position].length
        steps = np.minimum(np.arange(start, start + self.horizon), length - 1)
        return {k: a[steps] for k, a in arrays.items()}

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """A batch of random windows: each key -> (batch, horizon, *shape)."""
        picks = rng.integers(0, len(self.index), batch_size)
        windows = [self[int(i)] for i in picks]
        return {k: np.stack([w[k] for w in windows]) for k in self.keys}
