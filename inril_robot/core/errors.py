"""The base of every user-facing error: bad input, a missing device or package, a dataset or checkpoint that does not
fit. Its message names what is wrong and how to fix it; the CLI prints it on one line and exits 2
(`inril_robot.cli._common.InrilGroup`). Each subclass keeps its historical base (ValueError, RuntimeError...) as well.

Imports nothing, so that every layer, the robot PC's included, can raise it.
"""

from __future__ import annotations


class InrilError(Exception):
    """A user-facing error: the CLI turns it into `error: <message>` and exit code 2."""


class ConfigError(ValueError, InrilError):
    """A configuration value, file or override is invalid. The message names the field."""
