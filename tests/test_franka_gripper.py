"""`GripperWorker`: the Franka Hand never blocks the control path, and a gripper server that stops answering is a
fault within the deadline.

The stand-in gripper below blocks its calls on an event: a gripper server that hangs cannot be produced on demand
with franky-sim (its hangs under load were intermittent, issue 14), so this is the one place the hand is not real.
tests/test_franka.py drives the worker against franky-sim's real gripper server.
"""

from __future__ import annotations

import threading
import time

import pytest

from inril_robot.drivers.franka.gripper import CLOSED, OPEN, GripperWorker

pytestmark = [pytest.mark.timeout(60, method="thread")]


class HangingGripper:
    """Answers like franky's Gripper until `hang` is set; then every call blocks until `release` is set."""

    max_width = 0.08

    def __init__(self) -> None:
        self.hang, self.release = threading.Event(), threading.Event()
        self.calls: list[str] = []
        self._width = 0.08

    def _maybe_hang(self) -> None:
        if self.hang.is_set():
            self.release.wait()

    def grasp(self, width: float, speed: float, force: float, eps_in: float, eps_out: float) -> bool:
        self.calls.append(CLOSED)
        self._maybe_hang()
        self._width = 0.0
        return True

    def move(self, width: float, speed: float) -> bool:
        self.calls.append(OPEN)
        self._maybe_hang()
        self._width = width
        return True

    @property
    def width(self) -> float:
        self._maybe_hang()
        return self._width


def test_commands_run_off_the_control_path_and_the_newest_wins() -> None:
    hand = HangingGripper()
    worker = GripperWorker(hand, speed=0.1, force=20.0, deadline_s=2.0, read_hz=50.0)
    try:
        worker.command(CLOSED)
        assert worker.wait_idle(2.0) and hand.calls == [CLOSED]
        deadline = time.monotonic() + 2.0
        while worker.width()[0] > 0.0 and time.monotonic() < deadline:
            time.sleep(0.01)
        width, age = worker.width()
        assert width == 0.0 and age < 0.5
        worker.command(OPEN)
        assert worker.wait_idle(2.0) and hand.calls == [CLOSED, OPEN] and worker.check() is None
    finally:
        worker.close()


def test_a_hanging_gripper_server_is_a_fault_not_a_frozen_loop() -> None:
    hand = HangingGripper()
    worker = GripperWorker(hand, speed=0.1, force=20.0, deadline_s=0.5, read_hz=50.0)
    try:
        hand.hang.set()
        t0 = time.perf_counter()
        for want in (CLOSED, OPEN, CLOSED):  # a control loop at 100 Hz keeps commanding
            worker.command(want)
            time.sleep(0.01)
        assert time.perf_counter() - t0 < 0.2, "command() must return at once"
        assert worker.check() is None  # within the deadline: not yet a fault
        time.sleep(0.7)
        t0 = time.perf_counter()
        fault = worker.check()
        assert time.perf_counter() - t0 < 0.01
        assert fault is not None and "0.5 s" in fault and "not answering" in fault
        assert worker.width()[1] > 0.5  # the reader is stuck too: the width's age shows it
    finally:
        hand.release.set()
        worker.close()
