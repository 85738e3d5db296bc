"""Keyboard teleop read from a terminal (termios, cbreak mode): works over SSH and inside tmux, needs no display."""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import sys
import termios
import tty
from dataclasses import dataclass
from typing import Literal

import numpy as np

from inril_robot.config import TeleopConfig
from inril_robot.hardware import Teleop, TeleopCommand, TeleopUnavailable
from inril_robot.hardware.teleop import OperatorToggles

ESC = 0x1B
BACKSPACE = (0x7F, 0x08)  # DEL is what terminals send for Backspace; some send Ctrl-H
ESC_TIMEOUT_S = 0.05  # a lone ESC is one with nothing following it within this time (arrows arrive in one write)
ARROWS = {ord("A"): "up", ord("B"): "down", ord("C"): "right", ord("D"): "left"}
NO_TERMINAL = (
    "the keyboard teleop needs an interactive terminal (no /dev/tty and stdin is not a TTY): run it in a terminal, "
    "over `ssh -t` or inside tmux, or use --teleop spacemouse"
)

Action = Literal["move", "gripper", "intervene", "keep", "discard", "estop"]


@dataclass(frozen=True)
class KeyBinding:
    action: Action
    description: str
    axis: int = -1  # move: 0..2 translation along base x, y, z; 3..5 rotation about base x, y, z
    sign: float = 0.0


# Directions are in the robot base frame; "left" etc. are as seen standing behind the robot, looking along +x.
KEYMAP: dict[str, KeyBinding] = {
    "w": KeyBinding("move", "+x: forward, away from the base", 0, 1.0),
    "s": KeyBinding("move", "-x: back, towards the base", 0, -1.0),
    "a": KeyBinding("move", "+y: left", 1, 1.0),
    "d": KeyBinding("move", "-y: right", 1, -1.0),
    "r": KeyBinding("move", "+z: up", 2, 1.0),
    "f": KeyBinding("move", "-z: down", 2, -1.0),
    "q": KeyBinding("move", "+yaw: turn counter-clockwise seen from above (about base +z)", 5, 1.0),
    "e": KeyBinding("move", "-yaw: turn clockwise seen from above (about base -z)", 5, -1.0),
    "up": KeyBinding("move", "pitch: tilt the gripper's pointing direction towards +x (about base -y)", 4, -1.0),
    "down": KeyBinding("move", "pitch: tilt the gripper's pointing direction towards -x (about base +y)", 4, 1.0),
    "left": KeyBinding("move", "roll: tilt the gripper's pointing direction towards +y (about base +x)", 3, 1.0),
    "right": KeyBinding("move", "roll: tilt the gripper's pointing direction towards -y (about base -x)", 3, -1.0),
    "space": KeyBinding("gripper", "toggle the gripper (open <-> closed)"),
    "i": KeyBinding("intervene", "toggle the intervention flag (human in control)"),
    "k": KeyBinding("keep", "keep the episode"),
    "x": KeyBinding("discard", "discard the episode"),
    "backspace": KeyBinding("estop", "e-stop: stop the arm and end the collection"),
    "esc": KeyBinding("estop", "e-stop: stop the arm and end the collection"),
}


def help_text() -> str:
    width = max(len(key) for key in KEYMAP)
    lines = [f"  {key:<{width}}  {binding.description}" for key, binding in KEYMAP.items()]
    return "keyboard teleop (each press = one step; hold a key to repeat; Ctrl-C quits):\n" + "\n".join(lines)


def parse_keys(data: bytes, final: bool = False) -> tuple[list[str], bytes]:
    """Split terminal input into key names; return them and an unfinished escape sequence to complete later.

    Printable keys come back lower-cased (caps lock does not disable the map), arrows as "up"/"down"/"left"/"right"
    (CSI ``ESC [ A`` and SS3 ``ESC O A`` forms, modifiers ignored), other escape sequences (F-keys, Home...) are
    dropped. An ESC not starting a sequence (a lone ESC, or Alt+key) is "esc": on a robot, a false e-stop is
    the safe mistake. With `final`, an unfinished sequence is resolved as "esc" instead of being returned.
    """
    keys: list[str] = []
    i, n = 0, len(data)
    while i < n:
        byte = data[i]
        if byte == ESC:
            end = _sequence_end(data, i) if i + 1 < n and data[i + 1] in b"[O" else -1
            if i + 1 >= n or end is None:  # unfinished: the rest may still be on its way
                if not final:
                    return keys, data[i:]
                keys.append("esc")
                i += 1
            elif end < 0:  # a lone ESC followed by another key (or Alt+key), or a malformed sequence
                keys.append("esc")
                i += 1
            else:
                arrow = ARROWS.get(data[end])
                if arrow:
                    keys.append(arrow)
                i = end + 1
        elif byte in BACKSPACE:
            keys.append("backspace")
            i += 1
        elif byte == 0x20:
            keys.append("space")
            i += 1
        else:
            if 0x21 <= byte <= 0x7E:
                keys.append(chr(byte).lower())
            i += 1  # other control bytes and non-ASCII input are ignored
    return keys, b""


def _sequence_end(data: bytes, start: int) -> int | None:
    """Index of the final byte of the CSI/SS3 sequence at `start`; None if unfinished; -1 if malformed."""
    for j in range(start + 2, len(data)):
        c = data[j]
        if 0x40 <= c <= 0x7E:
            return j
        if not 0x20 <= c <= 0x3F:  # parameter and intermediate bytes only
            return -1
    return None


def _open_terminal() -> tuple[int, bool]:
    """(fd, owned): the controlling terminal if there is one, else stdin if it is a terminal."""
    try:
        return os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC), True
    except OSError:
        pass
    try:
        if sys.stdin is not None and sys.stdin.isatty():
            return sys.stdin.fileno(), False
    except (OSError, ValueError):
        pass
    raise TeleopUnavailable(NO_TERMINAL)


class KeyboardTeleop(Teleop):
    """Move the arm from the keyboard of a terminal, one `translation_step` / `rotation_step` per key press.

    Key map (directions in the robot base frame, as seen standing behind the robot looking along +x):

        w / s        +x / -x (forward / back)            q / e       +yaw / -yaw (about base z)
        a / d        +y / -y (left / right)              Up / Down   pitch: point the gripper towards +x / -x
        r / f        +z / -z (up / down)                 Left/Right  roll: point the gripper towards +y / -y
        space        toggle the gripper (open <-> closed)
        i            toggle the intervention flag
        k / x        keep / discard the episode
        Backspace    e-stop (so does a lone ESC)
        Ctrl-C       quit (SIGINT still works: the terminal is in cbreak mode, not raw)

    `read()` sums the key presses received since the previous read; a held key auto-repeats in the terminal, so
    motion continues while it is held and stops when it is released (no key since the last read: zero motion).
    The gripper target and intervention flag are latched (see `OperatorToggles`) and reset by keep / discard.
    A lost terminal (EOF, I/O error: the SSH session dropped) reads as e-stop: nobody is at the keys any more.

    The terminal (``fd``; default /dev/tty, else stdin) is put in cbreak mode (no echo, no line buffering) and
    restored by `close()`, on leaving a ``with`` block, and at interpreter exit.
    """

    def __init__(self, cfg: TeleopConfig, fd: int | None = None) -> None:
        self.cfg = cfg
        owned = False
        if fd is None:
            fd, owned = _open_terminal()
        if not os.isatty(fd):
            if owned:
                os.close(fd)
            raise TeleopUnavailable(NO_TERMINAL)
        self.fd = fd
        self._owned = owned
        self._saved = termios.tcgetattr(fd)
        self._closed = False
        self._lost = False
        self._tail = b""
        self.toggles = OperatorToggles()
        tty.setcbreak(fd, termios.TCSANOW)
        termios.tcflush(fd, termios.TCIFLUSH)  # keys typed before the teleop started must not move the arm
        atexit.register(self.close)

    def read(self) -> TeleopCommand:
        if self._closed:
            raise RuntimeError("the keyboard teleop is closed")
        keys, self._tail = parse_keys(self._tail + self._drain())
        for _ in range(3):  # complete an escape sequence split across writes; past that, resolve it
            if not self._tail:
                break
            more = self._drain(ESC_TIMEOUT_S)
            more_keys, self._tail = parse_keys(self._tail + more, final=not more)
            keys += more_keys
        if self._tail:
            more_keys, self._tail = parse_keys(self._tail, final=True)
            keys += more_keys
        return self._command(keys)

    def _command(self, keys: list[str]) -> TeleopCommand:
        motion = np.zeros(6)
        decision: str | None = None
        estop = self._lost
        for key in keys:
            binding = KEYMAP.get(key)
            if binding is None:
                continue
            if binding.action == "move":
                motion[binding.axis] += binding.sign
            elif binding.action == "gripper":
                self.toggles.toggle_gripper()
            elif binding.action == "intervene":
                self.toggles.toggle_intervene()
            elif binding.action == "estop":
                estop = True
            else:
                decision = binding.action  # the last of keep / discard in a read wins
        command = TeleopCommand(
            delta_pos=motion[:3] * self.cfg.translation_step,
            delta_rot=motion[3:] * self.cfg.rotation_step,
            gripper=self.toggles.gripper,
            intervene=self.toggles.intervene,
            keep=decision == "keep",
            discard=decision == "discard",
            estop=estop,
        )
        if decision is not None:
            self.toggles.reset()
        return command

    def _drain(self, timeout: float = 0.0) -> bytes:
        """Every byte waiting on the terminal; waits up to `timeout` for the first one."""
        chunks = []
        while not self._lost:
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if not ready:
                break
            try:
                chunk = os.read(self.fd, 1024)
            except OSError:
                chunk = b""
            if not chunk:
                self._lost = True
                break
            chunks.append(chunk)
            timeout = 0.0
        return b"".join(chunks)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        with contextlib.suppress(termios.error):  # a terminal that is gone has nothing left to restore
            termios.tcsetattr(self.fd, termios.TCSANOW, self._saved)
        if self._owned:
            os.close(self.fd)

    def __enter__(self) -> KeyboardTeleop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
