"""`ReferenceStreamer`: the impedance tracker's target moves continuously between control steps.

Each control step hands the driver a new bounded reference once per period. Jumping the tracker's target to it at
the start of the period makes the spring's stretch a sawtooth (a velocity ripple at 10 Hz); instead this thread
moves the target along the straight line (and the rotation geodesic) from where it is to the new reference over one
control period, at `stream_hz`, with that segment's velocity as feedforward twist, and stops there until the next
step. Time is the robot's clock (franky-sim runs slower than real time on a loaded machine; a real arm's clock is
real time). Every target it sends lies between two references that `safety.bound_reference` accepted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from inril_robot.core.geometry import matrix_to_rotvec, rotvec_to_matrix

log = logging.getLogger(__name__)

Send = Callable[[np.ndarray, np.ndarray], None]  # (4x4 target pose, 6-D twist [m/s, rad/s]) -> tracker


@dataclass(frozen=True)
class _Segment:
    start: np.ndarray  # 4x4
    end: np.ndarray  # 4x4
    t0: float  # robot clock [s]
    duration: float  # [s]

    @property
    def displacement(self) -> np.ndarray:
        return np.concatenate(
            [self.end[:3, 3] - self.start[:3, 3], matrix_to_rotvec(self.end[:3, :3] @ self.start[:3, :3].T)]
        )

    def at(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """The pose at robot time `t` and the segment's twist (zero once it has arrived)."""
        s = min(max((t - self.t0) / self.duration, 0.0), 1.0)
        d = self.displacement
        pose = np.eye(4)
        pose[:3, 3] = self.start[:3, 3] + s * d[:3]
        pose[:3, :3] = rotvec_to_matrix(s * d[3:]) @ self.start[:3, :3]
        return pose, (d / self.duration if s < 1.0 else np.zeros(6))


class ReferenceStreamer:
    def __init__(self, clock: Callable[[], float], send: Send, hz: float) -> None:
        self.clock, self.send, self.period = clock, send, 1.0 / hz
        self._lock = threading.Lock()
        self._segment: _Segment | None = None
        self._closed = threading.Event()
        self.error: BaseException | None = None  # what ended the thread, if anything did
        self._thread = threading.Thread(target=self._run, name="franka-reference-stream", daemon=True)
        self._thread.start()

    def ramp(self, start: np.ndarray, end: np.ndarray, duration: float) -> None:
        """Move from the current target (or `start`, when there is none) to `end` over `duration` robot seconds."""
        now = self.clock()
        with self._lock:
            here = self._segment.at(now)[0] if self._segment is not None else start
            self._segment = _Segment(here, end, now, duration)
            self.send(*self._segment.at(now))

    def stop(self) -> None:
        """Stop streaming (hold, halt): the caller commands the tracker directly from here on."""
        with self._lock:
            self._segment = None

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2.0)

    def _run(self) -> None:
        while not self._closed.wait(self.period):
            try:
                with self._lock:
                    if self._segment is not None:
                        self.send(*self._segment.at(self.clock()))
            except Exception as e:  # the arm faulted or disconnected: the control path surfaces it (poll_motion)
                self.error = e
                log.warning("reference streaming stopped: %s", e)
                with self._lock:
                    self._segment = None
