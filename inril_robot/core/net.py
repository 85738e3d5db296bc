"""Network reachability, shared by `doctor` and the Franka driver (which must not import the diagnostics)."""

from __future__ import annotations

import socket
import time


def tcp_probe(host: str, port: int, timeout: float) -> float:
    """Open and close a TCP connection to host:port; return the connect time in ms (raises OSError, TimeoutError)."""
    start = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout):
        return (time.perf_counter() - start) * 1e3
