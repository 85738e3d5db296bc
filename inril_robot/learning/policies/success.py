"""A success detector: an image classifier that says whether the task is done, and the rewards it gives.

HIL-SERL's answer to reward on a real cell (a binary classifier on the policy's camera images, its threshold set
for precision, the operator able to override). Here:

- **labels** from recorded episodes (`frame_labels`): the last `positives` frames of a successful episode are
  positives; the `ambiguous` frames before them are left out (one control step before success the scene looks the
  same); every other frame, and every frame of a failed episode, is a negative. The operator's labels
  (`add_operator_labels`, kept in the dataset's `labels.json`) override the derived label of their frames.
- **model** (`SuccessNet`): the policies' per-camera conv encoder (`ImageEncoder`, with its random-shift
  augmentation) on every camera, then an MLP to one logit.
- **training** (`train_detector`): episodes split into train / validation / test; class-balanced BCE; the threshold
  reaches `target_precision` on the validation episodes with the most recall, in the middle of the band of such
  thresholds (`choose_threshold`; a false success ends an episode and rewards a failure, a missed one only costs
  time); precision and recall are then measured on the test episodes, per frame and per episode.
- **rewards**: `reward.source=detector` with `reward.detector=<file>` makes every env (`RobotEnv`, through
  `runtime.cell.SuccessSource`) take success, reward and termination from the detector; `detector_for_config` is
  the factory that loads the file (the simulator's verdict stays in `info["sim_success"]`, so fine-tuning's
  evaluations still measure the truth). On a robot the operator's keys override it (`runtime.rollout`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from inril_robot.config import ImageEncoderConfig
from inril_robot.core.contract import image_key
from inril_robot.core.errors import InrilError
from inril_robot.data.store import Dataset, Episode, atomic_write_json
from inril_robot.learning.policies.checkpoint import atomic_torch_save, safe_torch_load
from inril_robot.learning.policies.encoders import ImageEncoder, mlp

FORMAT = "inril-robot success detector"
FORMAT_VERSION = 1
LABELS_FILE = "labels.json"  # the operator's frame labels beside a dataset's episodes


class DetectorError(ValueError, InrilError):
    """Not enough labelled frames, a dataset without the cameras, or a file that is not a success detector."""


# ------------------------------------------------------------------------------------------------------- labels
def frame_labels(length: int, success: bool, positives: int = 2, ambiguous: int = 4) -> np.ndarray:
    """Per-frame labels of one episode: 1 positive, 0 negative, -1 left out."""
    labels = np.zeros(length, dtype=np.int8)
    if success:
        labels[max(0, length - positives) :] = 1
        labels[max(0, length - positives - ambiguous) : max(0, length - positives)] = -1
    return labels


def operator_labels(dataset: Dataset) -> dict[int, dict[int, int]]:
    """{episode: {step: 0 or 1}} from the dataset's `labels.json` (episodes are immutable once committed, so the
    operator's labels live beside them)."""
    path = Path(dataset.root) / LABELS_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {int(e): {int(t): int(v) for t, v in steps.items()} for e, steps in raw.items()}
    except (ValueError, AttributeError) as e:
        raise DetectorError(f"{path}: not a labels file ({e}); expected {{episode: {{step: 0|1}}}}") from None


def add_operator_labels(dataset: Dataset, episode: int, steps: Sequence[int], success: bool) -> None:
    """Label frames of a recorded episode as success (1) or not (0) — what the operator's keys do while reviewing;
    these labels override the derived ones."""
    if episode not in {e.index for e in dataset.episodes}:
        raise DetectorError(f"dataset {dataset.root} has no episode {episode}")
    labels = operator_labels(dataset)
    labels.setdefault(episode, {}).update({int(t): int(success) for t in steps})
    atomic_write_json(
        Path(dataset.root) / LABELS_FILE,
        {str(e): {str(t): v for t, v in sorted(s.items())} for e, s in sorted(labels.items())},
    )


def episode_labels(
    episode: Episode, positives: int, ambiguous: int, operator: dict[int, int] | None = None
) -> np.ndarray:
    labels = frame_labels(episode.length, episode.success, positives, ambiguous)
    for step, value in (operator or {}).items():
        if 0 <= step < episode.length:
            labels[step] = value
    return labels


@dataclass
class Frames:
    """Labelled frames: images per camera key, labels, and the episode each frame came from."""

    images: dict[str, np.ndarray]  # key -> (N, h, w, 3) uint8
    labels: np.ndarray  # (N,) 0/1
    episode: np.ndarray  # (N,) episode index
    episode_success: dict[int, bool] = field(default_factory=dict)

    def select(self, episodes: Sequence[int]) -> Frames:
        mask = np.isin(self.episode, list(episodes))
        kept = {e: s for e, s in self.episode_success.items() if e in set(episodes)}
        return Frames({k: v[mask] for k, v in self.images.items()}, self.labels[mask], self.episode[mask], kept)


def load_frames(
    dataset: Dataset, cameras: Sequence[str] | None = None, positives: int = 2, ambiguous: int = 4
) -> Frames:
    keys = [image_key(c) for c in (cameras or dataset.cameras)]
    if not keys:
        raise DetectorError(f"dataset {dataset.root} has no cameras: a success detector needs images")
    images: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    labels, owners, outcome = [], [], {}
    operator = operator_labels(dataset)
    for ep in dataset.episodes:
        lab = episode_labels(ep, positives, ambiguous, operator.get(ep.index))
        keep = lab >= 0
        for k in keys:
            if f"obs/{k}" not in ep.array_keys():
                raise DetectorError(f"episode {ep.index} of {dataset.root} has no {k!r}; cameras: {dataset.cameras}")
            images[k].append(ep.load(f"obs/{k}")[keep])
        labels.append(lab[keep])
        owners.append(np.full(int(keep.sum()), ep.index))
        outcome[ep.index] = ep.success
    return Frames(
        {k: np.concatenate(v) for k, v in images.items()}, np.concatenate(labels), np.concatenate(owners), outcome
    )


# -------------------------------------------------------------------------------------------------------- model
class SuccessNet(nn.Module):
    """uint8 images {key: (N, h, w, 3)} -> success logit (N,)."""

    def __init__(self, image_shapes: dict[str, tuple[int, ...]], encoder: ImageEncoderConfig, hidden: int = 64) -> None:
        super().__init__()
        self.image_shapes = {k: tuple(image_shapes[k]) for k in sorted(image_shapes)}
        self.encoders = nn.ModuleDict({k: ImageEncoder(encoder) for k in self.image_shapes})
        self.head = mlp(encoder.feature_dim * len(self.image_shapes), [hidden], 1)

    def forward(self, images: dict[str, Tensor]) -> Tensor:
        feats = [self.encoders[k](images[k]) for k in self.image_shapes]
        return self.head(torch.cat(feats, dim=-1)).squeeze(-1)


@dataclass
class SuccessDetector:
    """A trained `SuccessNet`, its threshold, and what it was measured to do."""

    net: SuccessNet
    threshold: float
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        return list(self.net.image_shapes)

    @torch.no_grad()
    def probabilities(self, images: dict[str, np.ndarray], batch: int = 256) -> np.ndarray:
        """P(success) of each frame of {key: (N, h, w, 3)}."""
        self.net.eval()
        n = len(next(iter(images.values())))
        out = [
            torch.sigmoid(
                self.net({k: torch.from_numpy(np.ascontiguousarray(images[k][i : i + batch])) for k in self.keys})
            )
            for i in range(0, n, batch)
        ]
        return torch.cat(out).numpy() if out else np.zeros(0)

    def probability(self, obs: dict[str, np.ndarray]) -> float:
        """P(success) of one observation (its `<camera>_rgb` keys)."""
        missing = [k for k in self.keys if k not in obs]
        if missing:
            raise DetectorError(f"the success detector reads {', '.join(missing)}, which the observation lacks")
        return float(self.probabilities({k: np.asarray(obs[k])[None] for k in self.keys})[0])

    def __call__(self, obs: dict[str, np.ndarray]) -> float:
        """P(success) of one observation (a `module:factory` detector callable); `is_success` applies the threshold."""
        return self.probability(obs)

    def is_success(self, obs: dict[str, np.ndarray]) -> bool:
        return self.probability(obs) >= self.threshold

    def save(self, path: Path, encoder: ImageEncoderConfig) -> Path:
        atomic_torch_save(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "image_shapes": {k: list(v) for k, v in self.net.image_shapes.items()},
                "encoder": encoder.model_dump(mode="json"),
                "state_dict": self.net.state_dict(),
                "threshold": self.threshold,
                "metrics": self.metrics,
            },
            Path(path),
        )
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> SuccessDetector:
        payload = safe_torch_load(Path(path))
        if payload.get("format") != FORMAT or payload.get("format_version") != FORMAT_VERSION:
            raise DetectorError(f"{path} is not a success detector (format {payload.get('format')!r}); train one first")
        net = SuccessNet(
            {k: tuple(v) for k, v in payload["image_shapes"].items()},
            ImageEncoderConfig.model_validate(payload["encoder"]),
        )
        net.load_state_dict(payload["state_dict"])
        return cls(net.eval(), float(payload["threshold"]), payload.get("metrics", {}))


# ----------------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class DetectorTraining:
    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-3
    target_precision: float = 0.95
    positives: int = 2  # last frames of a success labelled positive
    ambiguous: int = 4  # frames before those left out
    split: tuple[float, float] = (0.6, 0.2)  # train, validation fractions of the episodes (rest: test)
    seed: int = 0
    encoder: ImageEncoderConfig = field(
        default_factory=lambda: ImageEncoderConfig(channels=(16, 32, 32), feature_dim=32, random_shift=4)
    )


def split_episodes(indices: Sequence[int], split: tuple[float, float], seed: int) -> tuple[list[int], ...]:
    order = list(np.random.default_rng(seed).permutation(sorted(indices)))
    n_train = max(1, round(split[0] * len(order)))
    n_val = max(1, round(split[1] * len(order)))
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]


def precision_recall(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float | int]:
    predicted = probs >= threshold
    tp = int((predicted & (labels == 1)).sum())
    fp = int((predicted & (labels == 0)).sum())
    fn = int((~predicted & (labels == 1)).sum())
    return {
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "frames": len(labels),
    }


def choose_threshold(probs: np.ndarray, labels: np.ndarray, target_precision: float) -> float:
    """A threshold for precision with margin. The lowest threshold whose precision reaches the target gives the most
    recall at that precision; every threshold up to the lowest positive it accepts keeps that recall and drops only
    negatives. Of that band, the middle in logit between that positive and the next lower score: on a validation set
    the classes separate cleanly, and its lowest end (a few thousandths) fired up to 11 steps before success on
    held-out lift episodes. If no threshold reaches the target: just above the highest negative (the detector then
    never fires on a validation negative)."""
    for t in np.unique(probs):
        pr = precision_recall(probs, labels, float(t))
        if pr["true_positives"] > 0 and pr["precision"] >= target_precision:
            accepted = probs[(labels == 1) & (probs >= t)]
            high = float(accepted.min())
            lower = probs[probs < high]
            if not lower.size:
                return high
            band = np.clip([float(lower.max()), high], 1e-6, 1 - 1e-6)
            middle = np.log(band / (1 - band)).mean()
            return float(1 / (1 + np.exp(-middle)))
    negatives = probs[labels == 0]
    return float(min(1.0, negatives.max() + 1e-6)) if negatives.size else 0.5


def episode_outcomes(frames: Frames, probs: np.ndarray, threshold: float) -> dict[str, float | int]:
    """Per episode: did the detector fire anywhere in a failed episode (a false success), did it fire in a
    successful one, and did it fire there on a negative frame (early)."""
    fired = {e: bool((probs[frames.episode == e] >= threshold).any()) for e in frames.episode_success}
    # fired on a negative frame of a successful episode: before the ambiguous band, a reward several steps early
    early = {e: bool((probs[(frames.episode == e) & (frames.labels == 0)] >= threshold).any()) for e in fired}
    succ = [e for e, s in frames.episode_success.items() if s]
    fail = [e for e, s in frames.episode_success.items() if not s]
    return {
        "success_episodes": len(succ),
        "success_episodes_detected": sum(fired[e] for e in succ),
        "success_episodes_fired_early": sum(early[e] for e in succ),
        "failed_episodes": len(fail),
        "failed_episodes_with_false_success": sum(fired[e] for e in fail),
    }


def train_detector(
    dataset: Dataset,
    cameras: Sequence[str] | None = None,
    opts: DetectorTraining | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> SuccessDetector:
    """Train on the training episodes, set the threshold on the validation ones, measure on the test ones."""
    o = opts or DetectorTraining()
    frames = load_frames(dataset, cameras, o.positives, o.ambiguous)
    train_eps, val_eps, test_eps = split_episodes(list(frames.episode_success), o.split, o.seed)
    if not test_eps:
        raise DetectorError(f"{len(frames.episode_success)} episodes are too few to hold some out; record more")
    train, val, test = frames.select(train_eps), frames.select(val_eps), frames.select(test_eps)
    pos, neg = int(train.labels.sum()), int((train.labels == 0).sum())
    if pos == 0 or neg == 0:
        raise DetectorError(
            f"the training episodes hold {pos} positive and {neg} negative frames: record successes and failures"
        )
    torch.manual_seed(o.seed)
    rng = np.random.default_rng(o.seed)
    net = SuccessNet({k: v.shape[1:] for k, v in frames.images.items()}, o.encoder)
    optim = torch.optim.Adam(net.parameters(), lr=o.lr)
    # balanced batches: half positives, half negatives (positives are a few percent of the frames)
    pos_idx, neg_idx = np.flatnonzero(train.labels == 1), np.flatnonzero(train.labels == 0)
    loss_fn = nn.BCEWithLogitsLoss()
    net.train()
    for step in range(o.steps):
        half = o.batch_size // 2
        idx = np.concatenate([rng.choice(pos_idx, half), rng.choice(neg_idx, o.batch_size - half)])
        batch = {k: torch.from_numpy(v[idx]) for k, v in train.images.items()}
        loss = loss_fn(net(batch), torch.from_numpy(train.labels[idx].astype(np.float32)))
        optim.zero_grad()
        loss.backward()
        optim.step()
        if progress is not None and (step + 1) % 50 == 0:
            progress(step + 1, loss.item())
    detector = SuccessDetector(net.eval(), 0.5)
    val_probs = detector.probabilities(val.images)
    detector.threshold = choose_threshold(val_probs, val.labels, o.target_precision)
    test_probs = detector.probabilities(test.images)
    detector.metrics = {
        "episodes": {"train": len(train_eps), "validation": len(val_eps), "test": len(test_eps)},
        "train_frames": {"positive": pos, "negative": neg},
        "threshold": detector.threshold,
        "target_precision": o.target_precision,
        "validation": precision_recall(val_probs, val.labels, detector.threshold),
        "test": precision_recall(test_probs, test.labels, detector.threshold),
        "test_episodes": episode_outcomes(test, test_probs, detector.threshold),
        "test_at_0.5": precision_recall(test_probs, test.labels, 0.5),
    }
    return detector


# ------------------------------------------------------------------------------------------------------ rewards
def detector_for_config(cfg: Any) -> SuccessDetector:
    """The detector at `cfg.reward.detector` (a file), as a callable obs -> P(success) with its `threshold`
    attribute: the factory `runtime.cell.load_detector` uses for a detector file."""
    if not cfg.reward.detector:
        raise DetectorError("set reward.detector to a trained detector's file (inril-robot detector train)")
    return SuccessDetector.load(Path(cfg.reward.detector))
