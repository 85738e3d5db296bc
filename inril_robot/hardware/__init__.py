"""The hardware seams: `Robot`, `Camera`, `Teleop` and the values they exchange.

Implementations live in the top-level `drivers` package (sim, franka, realsense, ...) and are found through
`inril_robot.runtime.registry`; the core only ever sees these interfaces. Every implementation reports the same
`RobotState` fields, in the base frame, SI units, quaternions xyzw.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from inril_robot.core.errors import InrilError
from inril_robot.core.state import RobotState


class RobotFault(RuntimeError, InrilError):
    """The arm reported a fault (a reflex, a user stop, a control error, a gripper past its deadline): it refuses
    motion until the operator has checked the cell and `Robot.recover()` is called (`inril_robot.runtime.faults`)."""


class Robot(ABC):
    """A 7-DoF arm with a parallel gripper, commanded in delta end-effector poses at `control_hz`."""

    def recover(self) -> None:
        """Clear a `RobotFault` after the operator checked the cell (never called implicitly); `home()` next.
        Robots that cannot fault (the simulator) have nothing to clear."""
        return None

    @property
    def stopped(self) -> str | None:
        """Why the arm takes no motion command until `home()` (None: it does). Robots that never stop return None."""
        return None

    @abstractmethod
    def connect(self) -> None: ...

    @abstractmethod
    def state(self) -> RobotState: ...

    @abstractmethod
    def apply(self, action: np.ndarray) -> None:
        """Execute one control step of a contract action (already through the safety envelope)."""

    @abstractmethod
    def hold(self) -> None:
        """Keep the current pose for one control step (zero motion)."""

    @abstractmethod
    def home(self) -> None:
        """Move to the configured home joint configuration and open the gripper."""

    @abstractmethod
    def stop(self) -> None:
        """Stop motion now (e-stop path): no further command is executed until `home()`."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Robot:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class CameraIntrinsics:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, ...] = ()

    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    timestamp: float  # capture time, seconds on the driver's clock
    frame_number: int


class StaleFrameError(RuntimeError):
    """The newest frame is older than the caller accepts (frozen camera, dropped USB link...)."""


class Camera(ABC):
    name: str

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def read_latest(self, max_age_s: float = 0.2) -> Frame:
        """The newest frame; raises `StaleFrameError` if it is older than `max_age_s`."""

    @property
    @abstractmethod
    def intrinsics(self) -> CameraIntrinsics: ...

    @abstractmethod
    def stop(self) -> None: ...


@dataclass(frozen=True)
class TeleopCommand:
    delta_pos: np.ndarray = field(default_factory=lambda: np.zeros(3))  # [m] per control step
    delta_rot: np.ndarray = field(default_factory=lambda: np.zeros(3))  # rotation vector [rad] per step
    gripper: float | None = None  # absolute command in [0, 1], None = unchanged
    intervene: bool = False
    keep: bool = False
    discard: bool = False
    estop: bool = False


class EmergencyStop(RuntimeError):
    """The operator pressed the e-stop: the arm was stopped, and the loop that drives it (collection, the bridge
    agent) ends. One class for both, so a caller catches either loop's e-stop the same way."""


class TeleopUnavailable(RuntimeError, InrilError):
    """The teleop device cannot be used here (no terminal, library or device missing); the message says the fix."""


class Teleop(ABC):
    """An operator input device. Dead-man convention: no input means zero motion."""

    @abstractmethod
    def read(self) -> TeleopCommand: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
