"""Progress that works in a terminal and in a log file.

In a terminal (TTY) a live rich bar; when the stream is a file or a pipe (nohup, slurm, CI, `> log`) a live display
prints nothing until it stops, so `LineProgress` prints one plain line per task every `period` seconds instead:
time, what, n/N (%), rate, ETA and the status field (the key metric). The period is `INRIL_PROGRESS_PERIOD`
seconds (default 10; 0 prints every update).
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import Progress, Task, TaskID

DEFAULT_PERIOD_S = 10.0


def log_period() -> float:
    try:
        return max(0.0, float(os.environ.get("INRIL_PROGRESS_PERIOD", DEFAULT_PERIOD_S)))
    except ValueError:
        return DEFAULT_PERIOD_S


def progress_line(task: Task) -> str:
    """One plain line: `HH:MM:SS what n/N (p%) · rate/s · ETA h:mm:ss · status`."""
    parts = [datetime.datetime.now().strftime("%H:%M:%S"), task.description]
    if task.total:
        parts.append(f"{task.completed:,.0f}/{task.total:,.0f} ({task.completed / task.total:.0%})")
    else:
        parts.append(f"{task.completed:,.0f}")
    text = " ".join(parts)
    if task.speed:
        text += f" · {task.speed:,.3g}/s"
    remaining = task.time_remaining
    if remaining is not None and not task.finished:
        text += f" · ETA {datetime.timedelta(seconds=round(remaining))}"
    status = str(task.fields.get("status", "")).strip(" ·")
    return f"{text} · {status}" if status else text


class LineProgress(Progress):
    """A rich `Progress` (same API, same rate/ETA estimates) that prints plain lines instead of a live bar."""

    def __init__(self, *columns: Any, console: Console, period_s: float | None = None, **kwargs: Any) -> None:
        kwargs.pop("transient", None)
        super().__init__(*columns, console=console, disable=True, **kwargs)
        self.period_s = log_period() if period_s is None else period_s
        self._last_print: dict[TaskID, float] = {}
        self._last_state: dict[TaskID, tuple[Any, ...]] = {}

    def update(self, task_id: TaskID, **kwargs: Any) -> None:  # type: ignore[override]
        super().update(task_id, **kwargs)
        self._tick(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._tick(task_id)

    def reset(self, task_id: TaskID, **kwargs: Any) -> None:  # type: ignore[override]
        super().reset(task_id, **kwargs)
        self._tick(task_id)

    def stop(self) -> None:
        for task in self.tasks:  # the last state of every task, unless that exact line was the last one printed
            self._print(task)
        super().stop()

    def _tick(self, task_id: TaskID) -> None:
        task = self._tasks[task_id]
        last = self._last_print.get(task_id)
        if last is None or task.finished or time.monotonic() - last >= self.period_s:
            self._print(task)

    def _print(self, task: Task) -> None:
        state = (task.description, task.completed, task.total, task.fields.get("status"))
        if self._last_state.get(task.id) == state:  # nothing new since the last line (only the clock moved)
            return
        self._last_state[task.id] = state
        self._last_print[task.id] = time.monotonic()
        self.console.print(progress_line(task), markup=False, highlight=False, soft_wrap=True)


def make_progress(*columns: Any, console: Console, transient: bool = False, disable: bool = False) -> Progress:
    """A live bar on a terminal, plain periodic lines otherwise (nothing at all when `disable`)."""
    if console.is_terminal or disable:
        return Progress(*columns, console=console, transient=transient, disable=disable)
    return LineProgress(*columns, console=console)


@contextmanager
def status_line(console: Console, text: str) -> Iterator[None]:
    """A spinner on a terminal; in a log, one line when the work starts and one when it is done."""
    if console.is_terminal:
        with console.status(text):
            yield
        return
    start = time.perf_counter()
    console.print(f"{text} ...", markup=False, highlight=False, soft_wrap=True)
    yield
    console.print(f"{text}: done in {time.perf_counter() - start:.1f} s", markup=False, highlight=False, soft_wrap=True)
