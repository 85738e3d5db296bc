"""The async learner in its own process (`serve --async-learner`): inference in the server process never shares a GIL
or a core's worth of Python with IN-RIL updates.

The server process spawns it (the "spawn" start method: no forked torch or CUDA state) and talks to it over two
one-way pipes. Server -> learner: ("intervention", history, chunk), ("batch", packed traces, episodes, sampler
state), ("stop",). Learner -> server: ("ready" | "updated" | "stopped", progress), ("failed", reason), ("error",
reason) where progress carries the version, counters, sampler state, metrics row and the actor's weights as numpy
arrays. The server writes through a sender thread (a batch larger than the pipe buffer never blocks its serving
loop) and reads with non-blocking polls between inference batches.

Lifetime: the process is a daemon (multiprocessing terminates it when the server exits); "stop" makes it finish
the batches already sent, write the final checkpoint, answer "stopped" and exit, and `stop()` then joins it with a
timeout, terminating it if needed. If the server dies instead, the learner reads EOF (it holds no writer end of its
inbox) or a broken pipe at its next send, and exits without writing anything.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from inril_robot.config import RunConfig

Message = tuple[Any, ...]


@dataclass
class LearnerSpec:
    cfg: RunConfig
    checkpoint: Path
    demos: Path | None
    out: Path
    resume: bool
    algo: str | None = None  # off-policy: the module providing the algorithm (bridge/offpolicy.py)


def torch_threads_for_two_processes(configured: int) -> int:
    """Threads each of server and learner process should use: one on a machine with <= 2 cores (two processes
    already fill it), else the configured count (0: torch's default)."""
    return 1 if (os.cpu_count() or 1) <= 2 else configured


class LearnerProcess:
    """The server's handle on the learner process."""

    def __init__(self, spec: LearnerSpec, target: str = "inril_robot.bridge.learner_process:run") -> None:
        """`target`: "module:function", the process's main (spec, inbox, outbox)."""
        ctx = mp.get_context("spawn")
        inbox_r, self._inbox = ctx.Pipe(duplex=False)
        self._outbox, outbox_w = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_main, args=(target, spec, inbox_r, outbox_w), name="inril-learner", daemon=True)
        self.proc.start()
        inbox_r.close()  # only the child holds these ends now: its death reads as EOF here and vice versa
        outbox_w.close()
        self._queue: queue.Queue[Message | None] = queue.Queue()
        self._sender = threading.Thread(target=self._send_forever, name="inril-learner-sender", daemon=True)
        self._sender.start()
        self.closed = False

    def send(self, message: Message) -> None:
        if not self.closed:
            self._queue.put(message)

    def _send_forever(self) -> None:
        while (message := self._queue.get()) is not None:
            try:
                self._inbox.send(message)
            except OSError:  # the learner process is gone; receive() reports it
                return

    def receive(self, timeout_s: float = 0.0) -> list[Message]:
        """What the learner process has sent: waits up to `timeout_s` for the first message, never for more."""
        messages: list[Message] = []
        try:
            while not self.closed and self._outbox.poll(timeout_s):
                messages.append(self._outbox.recv())
                timeout_s = 0.0
        except (EOFError, OSError):
            pass  # the process exited: `exit_code` says so
        return messages

    @property
    def exit_code(self) -> int | None:
        """None while the process runs."""
        return self.proc.exitcode

    def wait_ready(self, timeout_s: float) -> Message:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            messages = self.receive(0.1)
            if not messages and self.exit_code is not None:
                messages = self.receive()  # anything it sent just before exiting
                if not messages:
                    return ("error", f"the learner process exited during start-up (exit code {self.exit_code})")
            if messages:
                return messages[0]
        return ("error", f"the learner process did not start within {timeout_s:.0f} s")

    def stop(self, timeout_s: float) -> list[Message]:
        """Ask it to finish and checkpoint; returns everything it sent until "stopped" (or it died, or `timeout_s`
        passed: then it is terminated)."""
        received: list[Message] = []
        if self.closed:
            return received
        self.send(("stop",))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not any(m[0] == "stopped" for m in received):
            received += self.receive(0.1)
            if self.exit_code is not None:
                received += self.receive()
                break
        self.proc.join(max(0.0, min(10.0, deadline - time.monotonic())))
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5.0)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join()
        self.close()
        return received

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._queue.put(None)
        self._sender.join(5.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self._inbox.close()
        self._outbox.close()


def _main(target: str, spec: LearnerSpec, inbox: Connection, outbox: Connection) -> None:
    import importlib

    module, name = target.split(":")
    getattr(importlib.import_module(module), name)(spec, inbox, outbox)


def run(spec: LearnerSpec, inbox: Connection, outbox: Connection) -> None:
    """The on-policy learner process's main."""
    import torch

    from inril_robot.bridge.learning import Trainer

    threads = torch_threads_for_two_processes(spec.cfg.finetune.num_threads)
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        trainer = Trainer.from_checkpoint(spec.cfg, spec.checkpoint, spec.demos, spec.out, resume=spec.resume)
    except Exception as e:
        outbox.send(("error", str(e) or type(e).__name__))
        return
    failed = False
    try:
        outbox.send(("ready", trainer.progress()))
        while True:
            message = inbox.recv()
            kind = message[0]
            if kind == "stop":
                trainer.save()
                trainer.run.close()
                outbox.send(("stopped", trainer.progress()))
                return
            if kind == "intervention":
                trainer.interventions.add(message[1], message[2])
            elif kind == "batch" and not failed:
                _, traces, episodes, sampler = message
                trainer.sampler.set_state(torch.from_numpy(sampler))
                try:
                    trainer.update(traces, episodes)
                except Exception as e:  # the server keeps serving the last good weights and reports this
                    failed = True
                    outbox.send(("failed", f"learner update failed: {type(e).__name__}: {e}"))
                    continue
                outbox.send(("updated", trainer.progress()))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the server is gone: nobody to checkpoint for
