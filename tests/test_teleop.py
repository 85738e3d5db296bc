"""Teleop sources: keyboard through a pseudo-terminal, SpaceMouse through a mock library, the scripted expert in sim."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import sys
import termios
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from inril_robot.config import TeleopConfig, load_config
from inril_robot.drivers.keyboard import KEYMAP, KeyboardTeleop, help_text, parse_keys
from inril_robot.drivers.spacemouse import ButtonGestures, SpaceMouseTeleop, apply_deadzone, axes_to_motion
from inril_robot.hardware import TeleopCommand, TeleopUnavailable
from inril_robot.hardware.teleop import command_to_action
from inril_robot.runtime.env import RobotEnv
from inril_robot.runtime.registry import DriverUnavailable, make_teleop
from inril_robot.runtime.scripted_teleop import ScriptedTeleop

CFG = TeleopConfig(kind="keyboard", translation_step=0.01, rotation_step=0.05, deadzone=0.1)
T, R = CFG.translation_step, CFG.rotation_step


# ------------------------------------------------------------------------------------------------------- keyboard
@dataclass
class Terminal:
    teleop: KeyboardTeleop
    master: int
    slave: int

    def press(self, keys: bytes) -> TeleopCommand:
        """Type `keys` on the terminal, wait until the slave side holds them all, then read the teleop."""
        os.write(self.master, keys)
        deadline = time.monotonic() + 2.0
        while _pending(self.slave) < len(keys) and time.monotonic() < deadline:
            time.sleep(0.001)
        return self.teleop.read()


def _pending(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


@pytest.fixture
def term() -> Iterator[Terminal]:
    master, slave = pty.openpty()
    teleop = KeyboardTeleop(CFG, fd=slave)
    yield Terminal(teleop, master, slave)
    teleop.close()
    os.close(master)
    os.close(slave)


def motion(cmd: TeleopCommand) -> np.ndarray:
    return np.concatenate([cmd.delta_pos, cmd.delta_rot])


def test_keys_in_motion_out(term: Terminal) -> None:
    np.testing.assert_allclose(term.press(b"w").delta_pos, [T, 0, 0])
    np.testing.assert_allclose(term.press(b"ww").delta_pos, [2 * T, 0, 0])
    np.testing.assert_allclose(motion(term.press(b"ws")), np.zeros(6))
    np.testing.assert_allclose(term.press(b"adrf").delta_pos, [0, 0, 0])
    np.testing.assert_allclose(term.press(b"ar").delta_pos, [0, T, T])
    np.testing.assert_allclose(term.press(b"DF").delta_pos, [0, -T, -T])  # caps lock still steers
    np.testing.assert_allclose(term.press(b"q").delta_rot, [0, 0, R])
    np.testing.assert_allclose(term.press(b"e").delta_rot, [0, 0, -R])


def test_arrow_keys_rotate(term: Terminal) -> None:
    np.testing.assert_allclose(motion(term.press(b"\x1b[A")), [0, 0, 0, 0, -R, 0])  # up: point towards +x
    np.testing.assert_allclose(motion(term.press(b"\x1b[B")), [0, 0, 0, 0, R, 0])
    np.testing.assert_allclose(motion(term.press(b"\x1b[D")), [0, 0, 0, R, 0, 0])  # left: point towards +y
    np.testing.assert_allclose(motion(term.press(b"\x1bOC")), [0, 0, 0, -R, 0, 0])  # SS3 form (application mode)
    cmd = term.press(b"\x1b[A\x1b[Aw")
    np.testing.assert_allclose(motion(cmd), [T, 0, 0, 0, -2 * R, 0])
    assert not cmd.estop


def test_no_keys_is_zero_motion_and_unknown_keys_are_ignored(term: Terminal) -> None:
    term.press(b"w")
    cmd = term.teleop.read()
    assert cmd == TeleopCommand(delta_pos=cmd.delta_pos, delta_rot=cmd.delta_rot)
    np.testing.assert_array_equal(motion(cmd), np.zeros(6))
    cmd = term.press(b"zpl1;\t\x1b[15~\xc3\xa9")  # letters, digits, tab, F5, UTF-8: none is bound
    np.testing.assert_array_equal(motion(cmd), np.zeros(6))
    assert (cmd.gripper, cmd.intervene, cmd.keep, cmd.discard, cmd.estop) == (None, False, False, False, False)


def test_space_toggles_the_gripper_and_the_target_stays_latched(term: Terminal) -> None:
    assert term.teleop.read().gripper is None
    assert term.press(b" ").gripper == 1.0
    assert term.teleop.read().gripper == 1.0  # latched: the envelope rate-limits the gripper over several steps
    assert term.press(b" ").gripper == 0.0
    assert term.press(b"  ").gripper == 0.0


def test_intervene_keep_discard(term: Terminal) -> None:
    assert term.press(b"i").intervene
    assert term.teleop.read().intervene
    term.press(b" ")
    cmd = term.press(b"k")
    assert cmd.keep and not cmd.discard
    after = term.teleop.read()  # a decision ends the episode: toggles back to their start
    assert (after.gripper, after.intervene, after.keep) == (None, False, False)
    cmd = term.press(b"x")
    assert cmd.discard and not cmd.keep


def test_backspace_and_lone_esc_are_estop(term: Terminal) -> None:
    assert term.press(b"\x7f").estop
    assert not term.teleop.read().estop
    started = time.monotonic()
    assert term.press(b"\x1b").estop
    assert time.monotonic() - started < 1.0
    assert term.press(b"\x1bw").estop  # ESC then a key (or Alt+key): stop rather than guess


def test_parse_keys_splits_and_completes_escape_sequences() -> None:
    assert parse_keys(b"w\x1b[") == (["w"], b"\x1b[")
    assert parse_keys(b"\x1b") == ([], b"\x1b")
    assert parse_keys(b"\x1b[", final=True) == (["esc", "["], b"")  # never completed: ESC, then "[" (unbound)
    assert parse_keys(b"\x1b[1;5A") == (["up"], b"")  # Ctrl+Up: modifiers ignored
    assert parse_keys(b"\x1b\x1b[B") == (["esc", "down"], b"")
    assert parse_keys(b"\x08 ") == (["backspace", "space"], b"")
    assert set(KEYMAP) >= {
        "w",
        "s",
        "a",
        "d",
        "r",
        "f",
        "q",
        "e",
        "up",
        "down",
        "left",
        "right",
        "space",
        "i",
        "k",
        "x",
        "backspace",
        "esc",
    }
    assert "backspace" in help_text() and "toggle the gripper" in help_text()


def test_terminal_restored_on_close_and_ctrl_c_kept() -> None:
    master, slave = pty.openpty()
    try:
        before = termios.tcgetattr(slave)
        with KeyboardTeleop(CFG, fd=slave) as teleop:
            lflag = termios.tcgetattr(slave)[3]
            assert not lflag & termios.ECHO and not lflag & termios.ICANON
            assert lflag & termios.ISIG  # cbreak, not raw: Ctrl-C still raises SIGINT
        assert termios.tcgetattr(slave) == before
        teleop.close()  # idempotent
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)


def test_lost_terminal_reads_as_estop() -> None:
    master, slave = pty.openpty()
    teleop = KeyboardTeleop(CFG, fd=slave)
    try:
        os.close(master)
        assert teleop.read().estop
    finally:
        teleop.close()
        os.close(slave)


def test_no_terminal_is_a_clear_error(tmp_path: Any) -> None:
    path = tmp_path / "not-a-tty"
    path.write_text("")
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(TeleopUnavailable, match="interactive terminal") as info:
            KeyboardTeleop(CFG, fd=fd)
        assert "\n" not in str(info.value)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------------- spacemouse
# No SpaceMouse can exist on a test machine, so these tests inject a MOCK `pyspacemouse` module into sys.modules: it
# imitates the library's open()/read()/close() API and streams reports while "deflected", as the device does.
@dataclass
class FakeState:
    t: float
    x: float
    y: float
    z: float
    roll: float
    pitch: float
    yaw: float
    buttons: list[int]


@dataclass
class FakeDevice:
    axes: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("x", "y", "z", "roll", "pitch", "yaw"), 0.0))
    buttons: list[int] = field(default_factory=lambda: [0, 0])
    streaming: bool = True
    fail: bool = False
    closed: bool = False
    t: float = 0.0

    def read(self) -> FakeState:
        if self.fail:
            raise OSError("read error: device unplugged")
        if self.streaming:
            self.t = round(time.monotonic() / 0.008)  # a new report every 8 ms
        return FakeState(self.t, buttons=list(self.buttons), **self.axes)

    def close(self) -> None:
        self.closed = True


def fake_pyspacemouse(device: FakeDevice | None, z_up: bool = True) -> types.ModuleType:
    module = types.ModuleType("pyspacemouse")
    module.opened = []  # type: ignore[attr-defined]

    def open_device(**kwargs: Any) -> FakeDevice | None:
        module.opened.append(kwargs)  # type: ignore[attr-defined]
        return device

    module.open = open_device  # type: ignore[attr-defined]
    if z_up:
        module.AxisConvention = types.SimpleNamespace(HID_Z_UP="hid_z_up")  # type: ignore[attr-defined]
    return module


@pytest.fixture
def spacemouse(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SpaceMouseTeleop, FakeDevice]]:
    device = FakeDevice()
    monkeypatch.setitem(sys.modules, "pyspacemouse", fake_pyspacemouse(device))
    teleop = SpaceMouseTeleop(CFG.model_copy(update={"kind": "spacemouse"}))
    yield teleop, device
    teleop.close()
    assert device.closed


def read_until(teleop: SpaceMouseTeleop, done: Callable[[TeleopCommand], bool], timeout: float = 2.0) -> TeleopCommand:
    deadline = time.monotonic() + timeout
    while True:
        cmd = teleop.read()
        if done(cmd) or time.monotonic() > deadline:
            return cmd
        time.sleep(0.005)


def test_deadzone_rescales_from_its_edge() -> None:
    np.testing.assert_allclose(
        apply_deadzone(np.array([0.05, -0.1, 0.55, -1.0, 1.3, 0.0]), 0.1), [0.0, 0.0, 0.5, -1.0, 1.0, 0.0]
    )


def test_axes_map_into_the_base_frame_for_an_operator_facing_the_robot() -> None:
    # device: x = operator's right, y = away from the operator (towards the robot), z = up
    pos, rot = axes_to_motion(np.array([1.0, 0, 0, 0, 0, 0]), CFG)
    np.testing.assert_allclose(pos, [0, T, 0])  # right -> base +y
    pos, _ = axes_to_motion(np.array([0, 1.0, 0, 0, 0, 0]), CFG)
    np.testing.assert_allclose(pos, [-T, 0, 0])  # towards the robot -> base -x
    pos, _ = axes_to_motion(np.array([0, 0, 0.55, 0, 0, 0]), CFG)
    np.testing.assert_allclose(pos, [0, 0, 0.5 * T])
    _, rot = axes_to_motion(np.array([0, 0, 0, 0, 0, 1.0]), CFG)
    np.testing.assert_allclose(rot, [0, 0, R])  # twist counter-clockwise -> counter-clockwise about base z
    _, rot = axes_to_motion(np.array([0, 0, 0, 0.05, 0, 0]), CFG)
    np.testing.assert_array_equal(rot, np.zeros(3))


def test_spacemouse_deflection_moves_and_release_stops(spacemouse: tuple[SpaceMouseTeleop, FakeDevice]) -> None:
    teleop, device = spacemouse
    assert sys.modules["pyspacemouse"].opened == [{"device": None, "axis_convention": "hid_z_up"}]  # type: ignore
    device.axes.update(x=1.0, yaw=0.55)
    cmd = read_until(teleop, lambda c: bool(np.any(c.delta_pos)) and bool(np.any(c.delta_rot)))
    np.testing.assert_allclose(motion(cmd), [0, T, 0, 0, 0, 0.5 * R])
    assert (cmd.gripper, cmd.estop) == (None, False)
    device.axes.update(x=0.0, yaw=0.05)  # inside the deadzone
    cmd = read_until(teleop, lambda c: not np.any(motion(c)))
    np.testing.assert_array_equal(motion(cmd), np.zeros(6))


def test_spacemouse_stale_state_is_zero_motion(spacemouse: tuple[SpaceMouseTeleop, FakeDevice]) -> None:
    teleop, device = spacemouse
    device.axes.update(z=1.0)
    np.testing.assert_allclose(read_until(teleop, lambda c: bool(np.any(c.delta_pos))).delta_pos, [0, 0, T])
    device.streaming = False  # reports stop while "deflected": unplugged receiver, hung reader...
    time.sleep(0.3)
    cmd = teleop.read()
    np.testing.assert_array_equal(motion(cmd), np.zeros(6))
    assert not cmd.estop


def test_spacemouse_buttons(spacemouse: tuple[SpaceMouseTeleop, FakeDevice]) -> None:
    teleop, device = spacemouse
    for expected in (1.0, 0.0):
        device.buttons[0] = 1
        time.sleep(0.03)
        device.buttons[0] = 0
        assert read_until(teleop, lambda c, e=expected: c.gripper == e).gripper == expected
    device.buttons[1] = 1
    time.sleep(0.03)
    device.buttons[1] = 0
    assert read_until(teleop, lambda c: c.intervene).intervene
    device.buttons[:] = [1, 1]
    assert read_until(teleop, lambda c: c.estop).estop
    device.buttons[:] = [0, 0]
    time.sleep(0.03)
    cmd = teleop.read()
    assert not cmd.estop and cmd.intervene  # the chord toggled nothing


def test_spacemouse_read_failure_is_estop(spacemouse: tuple[SpaceMouseTeleop, FakeDevice]) -> None:
    teleop, device = spacemouse
    device.axes.update(x=1.0)
    read_until(teleop, lambda c: bool(np.any(c.delta_pos)))
    device.fail = True
    cmd = read_until(teleop, lambda c: c.estop)
    assert cmd.estop


def test_button_gestures() -> None:
    g = ButtonGestures(long_press_s=1.0)
    g.update([1, 0], 0.0)
    g.update([0, 0], 0.2)
    g.update([0, 1], 0.3)
    g.update([0, 0], 0.4)
    assert g.pop() == ["gripper", "intervene"]
    g.update([1, 0], 1.0)
    g.update([1, 0], 2.1)
    g.update([0, 0], 2.5)
    assert g.pop() == ["keep"]  # a long press does not also toggle
    g.update([0, 1], 3.0)
    g.update([0, 1], 4.0)
    g.update([0, 0], 4.1)
    assert g.pop() == ["discard"]
    g.update([1, 0], 5.0)
    g.update([1, 1], 5.1)
    g.update([1, 1], 7.0)
    g.update([0, 0], 7.1)
    assert g.pop() == ["estop"]  # at once, once, and neither toggles nor decides


def test_legacy_axis_convention(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyspacemouse 1.x has no AxisConvention: its roll/pitch/yaw are converted to the same physical frame."""
    device = FakeDevice()
    device.axes.update(pitch=-1.0)  # legacy pitch = minus the rotation about the operator's right axis
    monkeypatch.setitem(sys.modules, "pyspacemouse", fake_pyspacemouse(device, z_up=False))
    teleop = SpaceMouseTeleop(CFG)
    try:
        cmd = read_until(teleop, lambda c: bool(np.any(c.delta_rot)))
        np.testing.assert_allclose(cmd.delta_rot, [0, R, 0])  # right axis -> base +y
        assert sys.modules["pyspacemouse"].opened == [{"device": None}]  # type: ignore[attr-defined]
    finally:
        teleop.close()


def test_spacemouse_missing_library_or_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyspacemouse", None)
    with pytest.raises(TeleopUnavailable) as info:
        SpaceMouseTeleop(CFG)
    message = str(info.value)
    assert "\n" not in message
    assert "pip install 'inril-robot[teleop]'" in message and "libhidapi-hidraw0" in message
    assert "99-spacemouse.rules" in message and 'ATTRS{idVendor}=="256f"' in message

    monkeypatch.setitem(sys.modules, "pyspacemouse", fake_pyspacemouse(None, z_up=False))  # 1.x: None, no device
    with pytest.raises(TeleopUnavailable, match="no SpaceMouse found"):
        SpaceMouseTeleop(CFG)

    module = fake_pyspacemouse(None)

    def no_device(**kwargs: Any) -> None:
        raise RuntimeError("No connected or supported devices found.")

    module.open = no_device  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pyspacemouse", module)
    with pytest.raises(TeleopUnavailable, match=r"No connected or supported devices found.*udev") as info:
        SpaceMouseTeleop(CFG)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------ scripted + core
def test_scripted_teleop_is_the_expert() -> None:
    cfg = load_config(robot="sim", task="reach")
    with RobotEnv(cfg) as env, RobotEnv(cfg) as reference:
        env.reset(seed=3)
        reference.reset(seed=3)
        teleop = make_teleop(cfg, env)
        assert isinstance(teleop, ScriptedTeleop)
        for _ in range(5):
            cmd = teleop.read()
            assert not (cmd.keep or cmd.discard or cmd.estop or cmd.intervene)
            action = command_to_action(cmd, previous_gripper=0.5)
            np.testing.assert_array_equal(action, reference.expert_action())
            env.step(action)
            reference.step(action)


def test_make_teleop_scripted_needs_the_simulator() -> None:
    cfg = load_config(robot="franka", task="reach")
    with pytest.raises(DriverUnavailable, match="--robot sim"):
        make_teleop(cfg, None)


def test_command_to_action_keeps_the_previous_gripper() -> None:
    cmd = TeleopCommand(delta_pos=np.array([0.01, 0, 0]), delta_rot=np.array([0, 0, 0.05]))
    action = command_to_action(cmd, previous_gripper=0.7)
    assert action.shape == (7,) and action.dtype == np.float64
    np.testing.assert_allclose(action, [0.01, 0, 0, 0, 0, 0.05, 0.7])
    closed = TeleopCommand(delta_pos=cmd.delta_pos, delta_rot=cmd.delta_rot, gripper=1.0)
    assert command_to_action(closed, previous_gripper=0.7)[6] == 1.0
    with pytest.raises(ValueError, match="shape"):
        command_to_action(TeleopCommand(delta_pos=np.zeros(2)), 0.0)
