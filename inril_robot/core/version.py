"""The installed package version, as datasets, checkpoints and bridge logs record it (torch-free)."""

from __future__ import annotations


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("inril-robot")
    except Exception:  # running from a source tree without metadata
        return "unknown"
