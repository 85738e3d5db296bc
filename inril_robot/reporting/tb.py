"""TensorBoard scalars for every run folder, written by tensorboardX (`tensorboard --logdir runs` shows them).

`TBWriter(logdir)` opens one `events.out.tfevents.<unix time>.<host>` file per writer (a resumed run adds a new file
to the same folder; two writers in the same second get a `.1`, `.2` ... suffix) and logs `add_scalar` /
`add_scalars` (several tags at one step, each as the plain tag: not tensorboardX's one-sub-folder-per-tag
`add_scalars`).

Weights & Biases (optional extra `inril-robot[wandb]`): with `INRIL_WANDB=<project>` in the environment every writer
also logs its scalars to a wandb run named after the run folder (its `run.yaml` as the config, the step as the x
axis); `WANDB_MODE=offline` keeps the run on disk (`wandb sync` uploads it later).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any


class TBWriter:
    """`add_scalar(tag, value, step)`; events are flushed every `flush_every` events and on `flush()`/`close()`."""

    def __init__(self, logdir: str | Path, flush_every: int = 20) -> None:
        from tensorboardX import SummaryWriter

        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        name, suffix, n = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}", "", 1
        while (self.logdir / f"{name}{suffix}").exists():  # two writers in the same second: keep both files
            suffix, n = f".{n}", n + 1
        self._writer = SummaryWriter(str(self.logdir), max_queue=flush_every, flush_secs=30, filename_suffix=suffix)
        self._wandb = start_wandb(self.logdir)

    def add_scalar(self, tag: str, value: float, step: int, wall_time: float | None = None) -> None:
        self.add_scalars({tag: value}, step, wall_time)

    def add_scalars(self, scalars: dict[str, float], step: int, wall_time: float | None = None) -> None:
        """Several tags at one step, with one wall time."""
        wall_time = time.time() if wall_time is None else wall_time
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, float(value), step, walltime=wall_time)
        if scalars and self._wandb is not None:
            self._wandb.log({**scalars, "step": step})

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> TBWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_wandb(logdir: Path) -> Any:
    """A wandb run mirroring this writer when `INRIL_WANDB` names a project, else None."""
    project = os.environ.get("INRIL_WANDB")
    if not project:
        return None
    try:
        import wandb
    except ImportError as e:
        raise RuntimeError("INRIL_WANDB is set but wandb is not installed: pip install 'inril-robot[wandb]'") from e
    config: dict[str, Any] = {}
    if (logdir / "run.yaml").is_file():
        import yaml

        config = yaml.safe_load((logdir / "run.yaml").read_text()) or {}
    run = wandb.init(
        project=project,
        name=logdir.name,
        dir=os.environ.get("WANDB_DIR", str(logdir)),
        config=config,
        reinit="create_new",
    )
    run.define_metric("step")
    run.define_metric("*", step_metric="step")
    return run
