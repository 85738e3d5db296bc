"""3Dconnexion SpaceMouse teleop through pyspacemouse (raw HID over hidraw; no 3Dconnexion driver needed)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inril_robot.config import TeleopConfig
from inril_robot.hardware import Teleop, TeleopCommand, TeleopUnavailable
from inril_robot.hardware.teleop import OperatorToggles

log = logging.getLogger(__name__)

FIX = (
    "pip install 'inril-robot[teleop]'; on Debian/Ubuntu also apt-get install libhidapi-hidraw0 and allow hidraw "
    'access with /etc/udev/rules.d/99-spacemouse.rules: KERNEL=="hidraw*", ATTRS{idVendor}=="256f", MODE="0666" '
    "(then udevadm control --reload-rules && udevadm trigger, and replug)"
)
STALE_AFTER_S = 0.2  # no HID report for this long: zero motion (the device streams reports while deflected)
LONG_PRESS_S = 1.0  # a single button held this long: keep (left) / discard (right)
POLL_S = 0.002
MAX_REPORTS_PER_POLL = 32

# The operator stands in front of the robot, facing it (across the table). Device frame: x to the operator's
# right, y away from the operator (towards the robot), z up; rotations right-handed about those axes. Seen from
# there, right is base +y, away is base -x and up is base +z: pushing the cap towards the robot moves the gripper
# towards the robot base, pushing it right moves the gripper to the operator's right, twisting it counter-clockwise
# (seen from above) turns the gripper counter-clockwise. Rotation vectors transform with the same matrix.
BASE_FROM_DEVICE = np.array(
    [
        [0.0, -1.0, 0.0],
        [1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0],
    ]
)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def apply_deadzone(values: np.ndarray, deadzone: float) -> np.ndarray:
    """Zero inside ``|v| <= deadzone``, rescaled so the output rises from 0 just past it to 1 at full deflection."""
    v = np.clip(np.asarray(values, dtype=np.float64), -1.0, 1.0)  # some models report slightly past +-1
    magnitude = np.clip((np.abs(v) - deadzone) / (1.0 - deadzone), 0.0, 1.0)
    return np.sign(v) * magnitude


def device_axes(state: Any, z_up_convention: bool) -> np.ndarray:
    """(x, y, z, rx, ry, rz) in the device frame above, from a pyspacemouse state.

    pyspacemouse >= 2 opened with ``AxisConvention.HID_Z_UP`` reports exactly that frame. Older versions (and
    LEGACY) report roll = about the away axis, pitch = minus about the right axis, yaw = minus about the up axis.
    """
    x, y, z = float(state.x), float(state.y), float(state.z)
    roll, pitch, yaw = float(state.roll), float(state.pitch), float(state.yaw)
    if z_up_convention:
        return np.array([x, y, z, roll, pitch, yaw])
    return np.array([x, y, z, -pitch, roll, -yaw])


def axes_to_motion(axes: np.ndarray, cfg: TeleopConfig) -> tuple[np.ndarray, np.ndarray]:
    """(delta_pos [m], delta_rot [rad]) in the base frame, from device-frame axes in [-1, 1]."""
    a = apply_deadzone(axes, cfg.deadzone)
    return cfg.translation_step * (BASE_FROM_DEVICE @ a[:3]), cfg.rotation_step * (BASE_FROM_DEVICE @ a[3:])


@dataclass
class ButtonGestures:
    """Turns the two buttons' up/down history into operator events.

    - left (button 0) click: toggle the gripper; right (button 1) click: toggle the intervention flag. A click fires
      on release, so that a press that turns into one of the gestures below toggles nothing.
    - left held alone for `long_press_s`: keep the episode; right held alone: discard it.
    - both buttons down together: e-stop, at once (a stop should not wait; a chord is hard to press by accident).
    """

    long_press_s: float = LONG_PRESS_S
    events: list[str] = field(default_factory=list)
    _down_since: list[float | None] = field(default_factory=lambda: [None, None])
    _used: list[bool] = field(default_factory=lambda: [False, False])
    _chord: bool = False

    def update(self, buttons: Sequence[Any], now: float) -> None:
        down = [bool(buttons[i]) if i < len(buttons) else False for i in (0, 1)]
        for i in (0, 1):
            if down[i] and self._down_since[i] is None:
                self._down_since[i], self._used[i] = now, False
        if all(down):
            if not self._chord:
                self.events.append("estop")
            self._chord = True
            self._used = [True, True]
        for i, (long_event, click_event) in enumerate((("keep", "gripper"), ("discard", "intervene"))):
            since = self._down_since[i]
            if since is None:
                continue
            if down[i] and not self._used[i] and now - since >= self.long_press_s:
                self.events.append(long_event)
                self._used[i] = True
            elif not down[i]:
                if not self._used[i]:
                    self.events.append(click_event)
                self._down_since[i] = None
        if not any(down):
            self._chord = False

    def pop(self) -> list[str]:
        events, self.events = self.events, []
        return events


class SpaceMouseTeleop(Teleop):
    """6-axis SpaceMouse: deflection sets the motion per control step, buttons toggle and decide.

    Each axis, past `cfg.deadzone` and rescaled to start from 0 there, gives ``translation_step * axis`` [m] and
    ``rotation_step * axis`` [rad] per read, mapped into the base frame for an operator standing in front of the
    robot, facing it (`BASE_FROM_DEVICE`). Buttons: see `ButtonGestures` (left click gripper, right click
    intervention, left long press keep, right long press discard, both together e-stop).

    A background thread polls the device and keeps the latest state. Dead-man: the device streams HID reports while
    deflected and goes quiet at rest, so a state older than `STALE_AFTER_S` reads as zero motion; a device that
    fails (unplugged) reads as e-stop, since nobody can steer or stop with it any more.
    """

    def __init__(self, cfg: TeleopConfig) -> None:
        self.cfg = cfg
        try:
            import pyspacemouse
        except (ImportError, OSError, AttributeError) as e:  # missing package, or easyhid cannot load libhidapi
            raise TeleopUnavailable(f"the SpaceMouse teleop needs pyspacemouse ({_one_line(e)}): {FIX}") from e
        convention = getattr(getattr(pyspacemouse, "AxisConvention", None), "HID_Z_UP", None)
        kwargs: dict[str, Any] = {"device": cfg.spacemouse_device}
        if convention is not None:
            kwargs["axis_convention"] = convention
        self._z_up = convention is not None
        try:
            device = pyspacemouse.open(**kwargs)
        except Exception as e:  # pyspacemouse raises RuntimeError / ValueError / OSError depending on version
            raise TeleopUnavailable(f"cannot open a SpaceMouse ({_one_line(e)}): connect it, or {FIX}") from e
        if device is None or device is False:  # pyspacemouse 1.x returns None instead of raising
            which = cfg.spacemouse_device or "any supported device"
            raise TeleopUnavailable(f"no SpaceMouse found ({which}): connect it, or {FIX}")
        self._device = device
        self._lock = threading.Lock()
        self._axes = np.zeros(6)
        self._fresh_at = -np.inf
        self._gestures = ButtonGestures()
        self._error: str | None = None
        self.toggles = OperatorToggles()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="spacemouse", daemon=True)
        self._thread.start()

    def read(self) -> TeleopCommand:
        with self._lock:
            fresh = time.monotonic() - self._fresh_at <= STALE_AFTER_S
            axes = self._axes.copy() if fresh else np.zeros(6)
            events = self._gestures.pop()
            error = self._error
        delta_pos, delta_rot = axes_to_motion(axes, self.cfg)
        decision: str | None = None
        for event in events:
            if event == "gripper":
                self.toggles.toggle_gripper()
            elif event == "intervene":
                self.toggles.toggle_intervene()
            elif event in ("keep", "discard"):
                decision = event
        command = TeleopCommand(
            delta_pos=delta_pos,
            delta_rot=delta_rot,
            gripper=self.toggles.gripper,
            intervene=self.toggles.intervene,
            keep=decision == "keep",
            discard=decision == "discard",
            estop="estop" in events or error is not None,
        )
        if decision is not None:
            self.toggles.reset()
        return command

    def _poll(self) -> None:
        last_t: Any = None
        buttons: Sequence[Any] = ()
        while not self._stop.is_set():
            try:
                for _ in range(MAX_REPORTS_PER_POLL):  # a nonblocking read() consumes at most one HID report
                    state = self._device.read()
                    t = getattr(state, "t", None)
                    if t is not None and t == last_t:
                        break  # no new report
                    last_t = t
                    buttons = list(getattr(state, "buttons", None) or getattr(state, "button", None) or ())
                    axes = device_axes(state, self._z_up)
                    with self._lock:
                        self._axes, self._fresh_at = axes, time.monotonic()
                        self._gestures.update(buttons, time.monotonic())
                    if t is None:
                        break
                with self._lock:  # long presses complete while the device is quiet
                    self._gestures.update(buttons, time.monotonic())
            except Exception as e:
                log.error("SpaceMouse read failed, treating it as e-stop: %s", e)
                with self._lock:
                    self._error = f"{type(e).__name__}: {e}"
                return
            self._stop.wait(POLL_S)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)
        try:
            self._device.close()
        except Exception as e:  # closing a device that vanished must not mask the caller's own error
            log.debug("SpaceMouse close failed: %s", e)
