"""Tests for inril_robot.doctor (environment diagnostics)."""

from __future__ import annotations

import importlib.util
import re
import sys
import types

import pytest
from rich.console import Console
from rich.table import Table

from inril_robot import doctor
from inril_robot.doctor import AREAS, STATUSES, Check, render_table, run_checks


@pytest.fixture(scope="module")
def checks() -> list[Check]:
    return run_checks(render_probe=False)


def _by_item(checks: list[Check], area: str, item: str) -> Check:
    matches = [c for c in checks if c.area == area and c.item == item]
    assert len(matches) == 1, f"expected one {area}/{item} check, got {matches}"
    return matches[0]


def test_every_area_is_covered(checks: list[Check]) -> None:
    assert {c.area for c in checks} == set(AREAS)


def test_statuses_and_fix_hints(checks: list[Check]) -> None:
    for c in checks:
        assert c.status in STATUSES, c
        assert c.item, c
        assert c.detail, c
        if c.status == "ok":
            assert c.fix == "", c
        else:
            assert c.fix.strip(), c


def test_check_is_frozen_and_serialisable(checks: list[Check]) -> None:
    c = checks[0]
    d = c.to_dict()
    assert set(d) == {"area", "item", "status", "detail", "fix"}
    assert all(isinstance(v, str) for v in d.values())
    assert Check(**d) == c
    with pytest.raises(AttributeError):
        c.status = "error"  # type: ignore[misc]


def test_core_checks_find_installed_packages(checks: list[Check]) -> None:
    for item in ("python", "numpy", "torch", "pyzmq"):
        assert _by_item(checks, "core", item).status == "ok"


def test_render_probe_disabled_is_not_probed(checks: list[Check]) -> None:
    rendering = [c for c in checks if c.item.startswith("rendering")]
    assert {c.item for c in rendering} == {"rendering (EGL)", "rendering (OSMesa)"}
    if importlib.util.find_spec("mujoco") is not None:
        assert all(c.status == "warn" and c.detail == "not probed" for c in rendering)


def test_missing_pyrealsense2_reports_camera_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyrealsense2", None)  # makes `import pyrealsense2` raise ImportError
    result = run_checks(render_probe=False)
    cam = _by_item(result, "camera", "pyrealsense2")
    assert cam.status == "missing"
    assert "inril-robot[camera]" in cam.fix
    assert _by_item(result, "camera", "RealSense devices").status == "missing"


def test_fake_realsense_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    class Device:
        def get_info(self, field: str) -> str:
            return {"name": "Intel RealSense D435", "serial_number": "123456", "firmware_version": "5.16"}[field]

    devices: list[Device] = []
    fake = types.ModuleType("pyrealsense2")
    fake.__version__ = "2.55.1"  # type: ignore[attr-defined]
    fake.camera_info = types.SimpleNamespace(  # type: ignore[attr-defined]
        name="name", serial_number="serial_number", firmware_version="firmware_version"
    )
    fake.context = lambda: types.SimpleNamespace(query_devices=lambda: devices)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pyrealsense2", fake)

    no_device = _by_item(doctor._check_camera(), "camera", "RealSense devices")
    assert no_device.status == "warn" and "0 devices" in no_device.detail

    devices.append(Device())
    camera = doctor._check_camera()
    assert _by_item(camera, "camera", "pyrealsense2").status == "ok"
    found = _by_item(camera, "camera", "RealSense devices")
    assert found.status == "ok"
    assert "D435" in found.detail and "123456" in found.detail and "5.16" in found.detail


def test_broken_import_is_an_error_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_import(name: str, *args: object, **kwargs: object) -> types.ModuleType:
        if name == "franky":
            raise OSError("libfranka.so.0.15: cannot open shared object file")
        return real_import(name, *args, **kwargs)

    real_import = doctor.importlib.import_module
    monkeypatch.setattr(doctor.importlib, "import_module", broken_import)
    franky = _by_item(doctor._check_franka(), "franka", "franky")
    assert franky.status == "error"
    assert "libfranka.so" in franky.detail
    assert "inril-robot[franka]" in franky.fix


def test_fake_hid_finds_spacemouse(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("hid")
    fake.__version__ = "0.14.0"  # type: ignore[attr-defined]
    fake.enumerate = lambda: [  # type: ignore[attr-defined]
        {"vendor_id": 0x046D, "product_id": 0xC52B, "product_string": "USB Receiver"},
        {"vendor_id": 0x256F, "product_id": 0xC635, "product_string": "SpaceMouse Compact"},
    ]
    monkeypatch.setitem(sys.modules, "hid", fake)
    teleop = doctor._check_teleop()
    assert "2 HID device(s)" in _by_item(teleop, "teleop", "hidapi").detail
    mouse = _by_item(teleop, "teleop", "SpaceMouse")
    assert mouse.status == "ok" and "SpaceMouse Compact" in mouse.detail
    keyboard = _by_item(teleop, "teleop", "keyboard")  # depends on whether this process has a terminal
    assert keyboard.status == "ok" or (keyboard.status == "warn" and "interactive terminal" in keyboard.fix)


def test_missing_teleop_names_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hid", None)
    monkeypatch.setitem(sys.modules, "pyspacemouse", None)
    teleop = doctor._check_teleop()
    for item in ("hidapi", "SpaceMouse", "pyspacemouse"):
        c = _by_item(teleop, "teleop", item)
        assert c.status == "missing" and "inril-robot[teleop]" in c.fix


def test_crashing_area_becomes_error_check(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> list[Check]:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(doctor, "_check_gpu", boom)
    gpu = [c for c in run_checks(render_probe=False) if c.area == "gpu"]
    assert len(gpu) == 1 and gpu[0].status == "error" and "kaboom" in gpu[0].detail and gpu[0].fix


def test_network_loopback_latency(checks: list[Check]) -> None:
    loop = _by_item(checks, "network", "loopback REQ/REP")
    assert loop.status == "ok"
    match = re.search(r"median ([0-9.]+) ms", loop.detail)
    assert match is not None, loop.detail
    assert float(match.group(1)) > 0
    assert doctor.zmq_loopback_latency_ms(rounds=5) > 0


def test_network_reports_versions_and_curve(checks: list[Check]) -> None:
    versions = _by_item(checks, "network", "pyzmq / libzmq")
    assert versions.status == "ok" and "libzmq" in versions.detail
    assert _by_item(checks, "network", "CurveZMQ").status in {"ok", "warn"}


def test_rendering_status_logic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "_render_probe", lambda backend: (backend == "egl", f"{backend} result"))
    egl, osmesa = doctor._check_rendering(mujoco_ok=True, render_probe=True)
    assert egl.status == "ok" and egl.fix == ""
    assert osmesa.status == "warn" and "libosmesa6" in osmesa.fix

    monkeypatch.setattr(doctor, "_render_probe", lambda backend: (False, "libEGL not found"))
    both = doctor._check_rendering(mujoco_ok=True, render_probe=True)
    assert all(c.status == "error" and "libegl1" in c.fix and "libosmesa6" in c.fix for c in both)

    missing = doctor._check_rendering(mujoco_ok=False, render_probe=True)
    assert all(c.status == "missing" and "inril-robot[sim]" in c.fix for c in missing)


def test_render_table(checks: list[Check]) -> None:
    table = render_table(checks)
    assert isinstance(table, Table)
    assert table.row_count == len(checks)
    assert [col.header for col in table.columns] == ["area", "item", "status", "detail", "fix"]
    console = Console(width=300, record=True)
    console.print(table)
    text = console.export_text()
    if any("inril-robot[" in c.fix for c in checks):
        assert "inril-robot[" in text  # extras must not be swallowed as rich markup


@pytest.mark.skipif(importlib.util.find_spec("mujoco") is None, reason="mujoco (inril-robot[sim]) not installed")
def test_real_rendering_probe() -> None:
    """Real EGL/OSMesa subprocess probes (a few seconds); at least one offscreen backend must work here."""
    rendering = [c for c in run_checks(render_probe=True) if c.item.startswith("rendering")]
    assert len(rendering) == 2
    assert any(c.status == "ok" for c in rendering), rendering
    for c in rendering:
        assert c.status in {"ok", "warn"}
        assert c.detail != "not probed"


def test_unreachable_robot_names_the_fix() -> None:
    fci = _by_item(doctor._check_robot("192.0.2.1", timeout=0.3), "franka", "FCI reachable")  # TEST-NET-1
    assert fci.status == "error" and "192.0.2.1:1337" in fci.detail and "activate FCI" in fci.fix


def test_policy_server_round_trip() -> None:
    import threading

    import zmq

    ctx = zmq.Context.instance()
    rep = ctx.socket(zmq.REP)
    port = rep.bind_to_random_port("tcp://127.0.0.1")

    def echo() -> None:
        for _ in range(3):
            rep.send(rep.recv())

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    ok = _by_item(doctor._check_server(f"tcp://127.0.0.1:{port}", rounds=3), "network", "policy server RTT")
    thread.join(timeout=2)
    rep.close(0)
    assert ok.status == "ok" and "median" in ok.detail
    down = _by_item(
        doctor._check_server(f"tcp://127.0.0.1:{port}", rounds=1, timeout_ms=200), "network", "policy server RTT"
    )
    assert down.status == "error" and "inril-robot serve" in down.fix


def test_realsense_on_usb2_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    info = {"name": "D435", "serial_number": "42", "firmware_version": "5.16", "usb_type_descriptor": "2.1"}
    device = types.SimpleNamespace(get_info=lambda field: info[field])
    fake = types.ModuleType("pyrealsense2")
    fake.camera_info = types.SimpleNamespace(**{k: k for k in info})  # type: ignore[attr-defined]
    fake.context = lambda: types.SimpleNamespace(query_devices=lambda: [device])  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pyrealsense2", fake)
    found = _by_item(doctor._check_camera(), "camera", "RealSense devices")
    assert found.status == "warn" and "USB 2.1" in found.detail and "USB 3" in found.fix
