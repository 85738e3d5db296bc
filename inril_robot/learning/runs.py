"""The run folder that every trainer (pre-training, fine-tuning, the policy server's learner) writes and resumes:
`run.yaml` (the resolved configuration, compared on `--resume`), `metrics.csv` (rewritten atomically on resume,
appended row by row while training), and atomic text writes. Torch-free; each trainer names its own metric columns.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from inril_robot.config import RunConfig, read_yaml
from inril_robot.core.atomic import atomic_open, remove_stale_temporaries
from inril_robot.core.errors import InrilError


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


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def check_run_folder(
    out: Path,
    cfg: RunConfig,
    resume: bool,
    sections: tuple[str, ...] = ("policy",),
    error: type[Exception] = RunFolderError,
) -> None:
    """A new run needs an empty folder; a resumed one needs the same configuration in `sections`."""
    if not resume:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise error(f"{out} is not empty (an earlier run?): use --resume or a new --out")
        return
    remove_stale_temporaries(out)
    run_yaml = out / "run.yaml"
    if not run_yaml.is_file():
        if out.exists() and any(out.iterdir()):
            raise error(f"cannot resume {out}: it has no run.yaml (not a run folder)")
        return  # nothing was started here: --resume starts the run
    stored, current = read_yaml(run_yaml), cfg.model_dump(mode="json")
    diffs = [d for key in sections for d in config_differences(stored.get(key, {}), current[key], key)]
    if diffs:
        name, old, new = diffs[0]
        more = "".join(f"; also {n}: {o!r} -> {c!r}" for n, o, c in diffs[1:])
        raise error(
            f"cannot resume {out}: {name} was {old!r} in that run, this run asks {new!r}{more} "
            "(a resumed run keeps its configuration; use a new --out to train another)"
        )


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
