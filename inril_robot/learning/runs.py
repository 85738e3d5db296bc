"""The run folder that every trainer (pre-training, fine-tuning, the policy server's learner) writes and resumes.

`RunFolder` is the one object the three trainers share:

    run.yaml        the resolved configuration, compared on `--resume` (`check_run_folder`)
    metrics.csv     one row per log step; on resume the rows after the resumed checkpoint are dropped
    events.out.*    the same scalars for TensorBoard (`inril_robot.reporting.tb`, tensorboardX)
    curves.png      the trainer's plot of `rows` (each trainer draws its own)
    last.pt / best.pt / last.train.pt   checkpoint paths, the best-so-far record and the resume check (the training
                    state must be from the same step as last.pt)

Torch-free: loading and saving checkpoints stays in the trainers (they pass loaders to `resume_state`); each trainer
names its own metric columns.
"""

from __future__ import annotations

import csv
import logging
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from inril_robot.config import RunConfig, read_yaml, to_yaml
from inril_robot.core.atomic import atomic_open, remove_stale_temporaries
from inril_robot.core.errors import InrilError

log = logging.getLogger(__name__)


class RunFolderError(RuntimeError, InrilError):
    """A run folder that cannot be started or resumed (trainers pass their own error type)."""


def config_differences(stored: Any, current: Any, prefix: str) -> list[tuple[str, Any, Any]]:
    """(dotted path, stored, current) for every leaf that differs between two plain (JSON-mode) values."""
    if isinstance(stored, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(stored) | set(current)):
            out += config_differences(stored.get(key), current.get(key), f"{prefix}.{key}")
        return out
    if isinstance(stored, list | tuple) and isinstance(current, list | tuple):
        stored, current = list(stored), list(current)
    return [] if stored == current else [(prefix, stored, current)]


def fill_defaults(stored: Any, model: type[BaseModel], prefix: str = "") -> tuple[Any, list[str]]:
    """`stored` (a JSON-mode config section) with every field of `model` it lacks set to that field's default: a
    run.yaml written before the field existed ran with the default (fields are added with the default that keeps
    the old behaviour). Returns the filled copy and the dotted names filled. Required fields stay missing."""
    if not isinstance(stored, dict):
        return stored, []
    out, filled = dict(stored), []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        if name not in stored:
            if not info.is_required():
                default = info.get_default(call_default_factory=True)
                out[name] = TypeAdapter(info.annotation).dump_python(default, mode="json")
                filled.append(path)
            continue
        sub = _model_type(info.annotation)
        if sub is not None:
            out[name], more = fill_defaults(stored[name], sub, f"{path}.")
            filled += more
    return out, filled


def _model_type(annotation: Any) -> type[BaseModel] | None:
    """The one pydantic model a field holds (also `Model | None`), else None (unions of models are left alone)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else None


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def check_run_folder(
    out: Path,
    cfg: RunConfig,
    resume: bool,
    sections: tuple[str, ...] = ("policy",),
    error: type[Exception] = RunFolderError,
) -> list[str]:
    """A new run needs an empty folder; a resumed one needs the same configuration in `sections`. Fields of those
    sections that run.yaml lacks (added to the configuration since that run) take their defaults: a current value
    equal to the default resumes (one line names them), another one is a difference. Returns the filled names."""
    if not resume:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise error(f"{out} is not empty (an earlier run?): use --resume or a new --out")
        return []
    remove_stale_temporaries(out)
    run_yaml = out / "run.yaml"
    if not run_yaml.is_file():
        if out.exists() and any(out.iterdir()):
            raise error(f"cannot resume {out}: it has no run.yaml (not a run folder)")
        return []  # nothing was started here: --resume starts the run
    stored, current = read_yaml(run_yaml), cfg.model_dump(mode="json")
    filled: list[str] = []
    for key in sections:
        model = _model_type(type(cfg).model_fields[key].annotation)
        if model is not None and key in stored:
            stored[key], more = fill_defaults(stored[key], model)
            filled += [f"{key}.{name}" for name in more]
    diffs = [d for key in sections for d in config_differences(stored.get(key, {}), current[key], key)]
    if diffs:
        name, old, new = diffs[0]
        more = "".join(f"; also {n}: {o!r} -> {c!r}" for n, o, c in diffs[1:])
        raise error(
            f"cannot resume {out}: {name} was {old!r} in that run, this run asks {new!r}{more} "
            "(a resumed run keeps its configuration; use a new --out to train another)"
        )
    if filled:
        log.warning(
            "resuming %s: its run.yaml predates %s; taking the default%s (the values this run has)",
            out,
            ", ".join(filled),
            "s" if len(filled) > 1 else "",
        )
    return filled


def read_metrics(path: Path, up_to_step: int | None = None) -> list[dict[str, Any]]:
    """Rows of a metrics CSV (numbers as floats, `step` as int), those after `up_to_step` dropped."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]
    for row in rows:
        row["step"] = int(row["step"])  # type: ignore[arg-type]
    return [r for r in rows if up_to_step is None or r["step"] <= up_to_step]


def write_metrics(path: Path, rows: list[dict[str, Any]], fields: tuple[str, ...]) -> None:
    with atomic_open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def append_metrics(path: Path, row: dict[str, Any], fields: tuple[str, ...]) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in fields})


class RunFolder:
    """One trainer's run folder (see the module doc). Use as a context manager, or call `close()`.

    `RunFolder(out, cfg, resume, fields, ...)` checks the folder (new: empty; resumed: same configuration in
    `sections`); `start(run_cfg, up_to_step)` writes run.yaml, keeps the metric rows up to the resumed step and opens
    TensorBoard; `log(row, scalars, step)` appends a row (and its scalars); `offer_best(record)` keeps the record with
    the best `record["success"]["rate"]` (ties: the later one)."""

    def __init__(
        self,
        out: Path,
        cfg: RunConfig,
        resume: bool,
        fields: tuple[str, ...],
        *,
        sections: tuple[str, ...] = ("policy",),
        error: type[Exception] = RunFolderError,
        tensorboard: bool = True,
    ) -> None:
        self.out, self.resume, self.fields, self.error = Path(out), resume, fields, error
        self.tensorboard = tensorboard
        self.filled_defaults = check_run_folder(self.out, cfg, resume, sections, error)
        self.last, self.best_path, self.train_state = (
            self.out / "last.pt",
            self.out / "best.pt",
            self.out / "last.train.pt",
        )
        self.metrics, self.curves = self.out / "metrics.csv", self.out / "curves.png"
        self.rows: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.tb: Any = None

    def resume_state(
        self, load_state: Callable[[Path], dict[str, Any]], checkpoint_step: Callable[[Path], int], step_key: str
    ) -> dict[str, Any] | None:
        """The training state to resume from (None for a new run, or nothing saved yet). Refuses a last.train.pt
        that is missing or not from the same point as last.pt (`state[step_key]` != the checkpoint's step)."""
        if not (self.resume and self.last.is_file()):
            return None
        stored = checkpoint_step(self.last)
        state = load_state(self.train_state) if self.train_state.is_file() else None
        if state is None or state.get(step_key) != stored:
            raise self.error(
                f"cannot resume {self.out}: last.train.pt is missing or not from the same point as last.pt "
                f"({step_key} {stored}); start a new --out"
            )
        return state

    def start(self, run_cfg: RunConfig, up_to_step: int) -> list[dict[str, Any]]:
        """Create the folder, write run.yaml, drop metric rows logged after `up_to_step`, open TensorBoard."""
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "run.yaml", to_yaml(run_cfg))
        self.rows = read_metrics(self.metrics, up_to_step=up_to_step)
        write_metrics(self.metrics, self.rows, self.fields)
        if self.tensorboard:
            from inril_robot.reporting.tb import TBWriter

            self.tb = TBWriter(self.out)
        return self.rows

    def log(self, row: dict[str, Any], scalars: dict[str, float] | None = None, step: int | None = None) -> None:
        """Append `row` to the rows and metrics.csv; `scalars` go to TensorBoard at `step` (default: the row's)."""
        self.rows.append(row)
        append_metrics(self.metrics, row, self.fields)
        if scalars and self.tb is not None:
            self.tb.add_scalars(scalars, int(row["step"] if step is None else step))

    def offer_best(self, record: dict[str, Any]) -> bool:
        """Keep `record` as the best if its success rate is at least the best's so far; whether it was kept."""
        if self.best is not None and record["success"]["rate"] < self.best["success"]["rate"]:
            return False
        self.best = record
        return True

    def plot(self, draw: Callable[[list[dict[str, Any]], Path], None]) -> None:
        """Flush TensorBoard and draw curves.png from the rows (`draw(rows, path)`: the trainer's own plot)."""
        if self.tb is not None:
            self.tb.flush()
        draw(self.rows, self.curves)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
