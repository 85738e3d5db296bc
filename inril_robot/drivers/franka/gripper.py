"""`GripperWorker`: the Franka Hand off the control path.

libfranka's gripper calls block on the gripper server: reading `Gripper.width` takes about as long as the server
takes to answer (~100 ms on real arms, franky#35), and `grasp_async` / `move_async` were seen to block the calling
thread indefinitely on a loaded machine (issue 14). The control loop therefore never calls the gripper itself:

- commands go through a one-slot queue (the newest wins) to a worker thread, which runs them one at a time (a
  newer command waits for the running one, at most a full stroke); a command still running at its deadline, or
  one that raises, is a fault;
- the width is read in a reader thread at `read_hz`; the control path takes the latest value and its age;
- `check()` (called by the driver on every control step) reports a fault, including a worker or reader that is
  stuck inside a gripper call for longer than the deadline: the caller sees it without waiting on the thread.

A fault latches until the driver replaces the worker (`FrankaRobot.recover()` reconnects the gripper).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

OPEN, CLOSED = "open", "closed"
POLL_S = 0.02  # [s] wait_idle() polling


class GripperWorker:
    def __init__(self, gripper: Any, *, speed: float, force: float, deadline_s: float, read_hz: float) -> None:
        self.gripper = gripper
        self.speed, self.force, self.deadline_s = speed, force, deadline_s
        self.read_period = 1.0 / read_hz
        self.max_width = float(gripper.max_width)
        self._cond = threading.Condition()
        self._pending: str | None = None
        self._busy: tuple[str, float] | None = None  # (command, monotonic start) while the worker runs one
        self._reading_since: float | None = None  # monotonic start of the width read in progress
        self._width = (self.max_width, 0.0)  # (value [m], monotonic time read); 0.0: never read
        self._fault: str | None = None
        self._closed = False
        self.commands_done = 0
        self._threads = [
            threading.Thread(target=self._work, name="franka-gripper-cmd", daemon=True),
            threading.Thread(target=self._read, name="franka-gripper-width", daemon=True),
        ]
        for t in self._threads:
            t.start()

    # ---------------------------------------------------------------------------------------- control path
    def command(self, want: str) -> None:
        """Queue `open` or `closed` (replacing a queued one); returns at once."""
        with self._cond:
            self._pending = want
            self._cond.notify_all()

    def width(self) -> tuple[float, float]:
        """The latest width [m] and its age [s] (inf before the first read)."""
        value, at = self._width
        return value, (time.monotonic() - at) if at else float("inf")

    def check(self) -> str | None:
        """The latched fault, after looking for a command or width read stuck past the deadline."""
        now = time.monotonic()
        busy, reading = self._busy, self._reading_since
        if self._fault is None and busy is not None and now - busy[1] > self.deadline_s:
            self._set_fault(
                f"the Franka Hand did not finish '{busy[0]}' within {self.deadline_s:.1f} s "
                "(the gripper server is not answering)"
            )
        if self._fault is None and reading is not None and now - reading > self.deadline_s:
            self._set_fault(
                f"reading the Franka Hand width took over {self.deadline_s:.1f} s (the gripper server is not answering)"
            )
        return self._fault

    @property
    def fault(self) -> str | None:
        return self._fault

    def idle(self) -> bool:
        with self._cond:
            return self._pending is None and self._busy is None

    def wait_idle(self, timeout: float) -> bool:
        """Block until no command is queued or running (for home(), never on the control path)."""
        deadline = time.monotonic() + timeout
        while not self.idle():
            if self._fault is not None or time.monotonic() > deadline:
                return False
            time.sleep(POLL_S)
        return True

    def close(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)
            if t.is_alive():  # stuck inside a gripper call: a daemon thread, left behind
                log.warning("the Franka Hand thread %s did not end within %.1f s", t.name, timeout)

    # ------------------------------------------------------------------------------------------- threads
    def _set_fault(self, message: str) -> None:
        if self._fault is None:
            self._fault = message
            log.error("Franka Hand fault: %s", message)

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                want, self._pending = self._pending, None
                self._busy = (want, time.monotonic())
            try:
                self._run(want)
                self.commands_done += 1
            except Exception as e:  # a gripper error ends the command; the arm's control path sees it in check()
                self._set_fault(f"the Franka Hand failed '{want}': {e}")
            finally:
                self._busy = None

    def _run(self, want: str) -> None:
        # franky's blocking calls release the GIL while they wait (measured: the main thread still ticks every
        # <10 ms); its *_async calls were the ones that blocked their caller (a second command while the first
        # one's future thread ends), so they are not used. The control path watches this call's deadline (check()).
        if want == CLOSED:
            # width 0 with an outer tolerance of the full stroke: any object width counts as grasped
            self.gripper.grasp(0.0, self.speed, self.force, 0.0, self.max_width)
        else:
            self.gripper.move(self.max_width, self.speed)

    def _read(self) -> None:
        while not self._closed:
            start = self._reading_since = time.monotonic()
            try:
                value = float(self.gripper.width)
            except Exception as e:
                self._set_fault(f"reading the Franka Hand width failed: {e}")
                return
            finally:
                self._reading_since = None
            self._width = (value, time.monotonic())
            time.sleep(max(0.0, start + self.read_period - time.monotonic()))
