"""Crash-safe file replacement: write beside the target, fsync, rename over it, fsync the directory.

A reader sees the old file or the new one, never a half-written one; a crash leaves at most a stray temporary file
(named `.<name>.<random>.tmp`), which is removed when the write itself fails, or, after a SIGKILL, when the run folder
is resumed (`remove_stale_temporaries`).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """`open(path, mode)` whose result replaces `path` atomically when the block exits without an exception."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries `atomic_open` left in `folder` when its process was killed mid-write (call it where
    the folder has a single writer: a run folder being resumed). Returns what was removed."""
    removed = []
    if Path(folder).is_dir():
        for path in Path(folder).iterdir():
            if _TEMPORARY.match(path.name) and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
