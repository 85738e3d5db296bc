"""Running the bridge: the server process's main (`inril-robot serve`) and a local server subprocess for
`finetune --bridge` / `finetune --robot franka` without `--server`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from inril_robot.bridge.offpolicy import make_server_learner
from inril_robot.bridge.server import PolicyServer, ServeOptions
from inril_robot.config import RunConfig
from inril_robot.data.store import Dataset


def serve_until_stopped(
    cfg: RunConfig,
    checkpoint: Path,
    demos: Dataset | None,
    out: Path,
    options: ServeOptions,
    *,
    mode: str = "sync",
    resume: bool = False,
    log: Callable[[str], None] | None = None,
    on_tick: Callable[[PolicyServer], None] | None = None,
    stop: threading.Event | None = None,
) -> PolicyServer:
    """Serve until SIGINT/SIGTERM (or `stop`), then stop the learner and write the final checkpoint."""
    stop = stop or threading.Event()
    learner = make_server_learner(cfg, checkpoint, demos, out, mode=mode, resume=resume)
    server = PolicyServer(learner, options, log)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        server.start()
        server.serve(stop.is_set, (lambda: on_tick(server)) if on_tick else None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.close()
        learner.close()
        if log:
            log(
                f"stopped; policy version {learner.version}, {learner.env_steps} env steps learned from"
                + (f", checkpoint {out / 'last.pt'}" if mode != "off" else "")
            )
    return server


class LocalServer:
    """`inril-robot serve --out OUT` in a subprocess on a free loopback port; its output goes to `logs/server.log`."""

    def __init__(
        self, args: list[str], out: Path, logs: Path, timeout_s: float = 120.0, bind: str = "tcp://127.0.0.1:*"
    ) -> None:
        self.out = Path(out)
        Path(logs).mkdir(parents=True, exist_ok=True)
        endpoint_file = Path(logs) / "server.endpoint"
        endpoint_file.unlink(missing_ok=True)
        self.log_path = Path(logs) / "server.log"
        self._log: IO[bytes] = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inril_robot.cli",
                "serve",
                "--bind",
                bind,
                "--endpoint-file",
                str(endpoint_file),
                "--out",
                str(self.out),
                *args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + timeout_s
        while not endpoint_file.is_file():
            if self.proc.poll() is not None:
                self._log.close()
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the local policy server exited ({self.proc.returncode}):\n{tail}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the local policy server did not start within {timeout_s:.0f} s (log: {self.log_path})"
                )
            time.sleep(0.05)
        self.endpoint = endpoint_file.read_text().strip()

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGINT (the server writes its final checkpoint), then SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
