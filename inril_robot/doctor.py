"""Environment diagnostics for inril-robot (``inril-robot doctor``).

Every check is defensive: a missing optional package, a broken shared library or a failing probe is reported as a
:class:`Check` with status ``missing``/``warn``/``error`` and a one-line fix, never raised. Optional dependencies are
imported lazily inside each check so that importing this module never fails.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from inril_robot.core.net import tcp_probe

if TYPE_CHECKING:
    from rich.table import Table

Status = Literal["ok", "warn", "missing", "error"]
STATUSES: tuple[Status, ...] = ("ok", "warn", "missing", "error")
AREAS: tuple[str, ...] = ("core", "gpu", "sim", "franka", "camera", "teleop", "network")

FIX_CORE = "pip install 'inril-robot'"
FIX_SIM = "pip install 'inril-robot[sim]'"
FIX_FRANKA = "pip install 'inril-robot[franka]'"
FIX_CAMERA = "pip install 'inril-robot[camera]'"
FIX_TELEOP = "pip install 'inril-robot[teleop]'"

RENDER_PROBE_TIMEOUT_S = 60.0
RENDER_BACKENDS: dict[str, tuple[str, str]] = {
    # backend -> (display name, apt package providing the GL library)
    "egl": ("EGL", "libegl1"),
    "osmesa": ("OSMesa", "libosmesa6"),
}
_STATUS_STYLE: dict[str, str] = {"ok": "green", "warn": "yellow", "missing": "magenta", "error": "bold red"}
_MIN_PYTHON = (3, 11)
_MEMLOCK_RECOMMENDED = 100 * 1024 * 1024  # libfranka docs recommend "memlock 102400" (KiB)


@dataclass(frozen=True)
class Check:
    """Outcome of one diagnostic."""

    area: str  # "core", "sim", "franka", "camera", "teleop", "gpu", "network"
    item: str  # e.g. "mujoco", "rendering (EGL)", "libfranka", "real-time kernel"
    status: Status
    detail: str  # what was found: versions, device counts, backend names
    fix: str  # one-line hint when not ok ("" when ok)

    def to_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in dataclasses.asdict(self).items()}


# --------------------------------------------------------------------------------------------------------- helpers


def _short(exc: BaseException | str, limit: int = 160) -> str:
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dist_version(dist: str, module: ModuleType | None = None) -> str:
    try:
        return importlib.metadata.version(dist)
    except Exception:
        version = getattr(module, "__version__", None) if module is not None else None
        return str(version) if version else "unknown version"


def _try_import(module: str) -> tuple[ModuleType | None, Check | None]:
    """Import ``module``; on failure return a ready-made failure Check (area/item/fix filled in by caller)."""
    try:
        return importlib.import_module(module), None
    except ModuleNotFoundError as exc:
        if exc.name == module or (exc.name or "").split(".")[0] == module.split(".")[0]:
            return None, Check("", module, "missing", f"module {module!r} not installed", "")
        return None, Check("", module, "error", f"import failed: {_short(exc)}", "")
    except Exception as exc:  # ImportError from a missing shared library, OSError, ...
        return None, Check("", module, "error", f"import failed: {_short(exc)}", "")


def _package_check(area: str, item: str, module: str, dist: str, fix: str) -> tuple[ModuleType | None, Check]:
    """Import-and-version check for one package."""
    mod, failure = _try_import(module)
    if mod is None:
        assert failure is not None
        return None, dataclasses.replace(failure, area=area, item=item, fix=fix)
    return mod, Check(area, item, "ok", _dist_version(dist, mod), "")


# ------------------------------------------------------------------------------------------------------------ core


def _check_core() -> list[Check]:
    py = sys.version.split()[0]
    if sys.version_info[:2] >= _MIN_PYTHON:
        checks = [Check("core", "python", "ok", f"{py} ({sys.executable})", "")]
    else:
        checks = [Check("core", "python", "error", f"{py} ({sys.executable})", "use Python >= 3.11")]
    for item, module, dist in (
        ("numpy", "numpy", "numpy"),
        ("torch", "torch", "torch"),
        ("pydantic", "pydantic", "pydantic"),
        ("zarr", "zarr", "zarr"),
        ("pyzmq", "zmq", "pyzmq"),
    ):
        checks.append(_package_check("core", item, module, dist, f"{FIX_CORE}  # core dependency {dist}")[1])
    return checks


# ------------------------------------------------------------------------------------------------------------- gpu


def _check_gpu() -> list[Check]:
    torch, failure = _package_check("gpu", "CUDA", "torch", "torch", f"{FIX_CORE}  # installs torch")
    if torch is None:
        return [failure]
    built_cuda = getattr(torch.version, "cuda", None)
    if not torch.cuda.is_available():
        detail = "CPU only; policy server will run on CPU"
        if built_cuda:
            detail += f" (torch built with CUDA {built_cuda}, but no device is visible)"
        fix = "install an NVIDIA driver and a CUDA build of torch (https://pytorch.org/get-started/locally/)"
        return [Check("gpu", "CUDA", "warn", detail, fix)]
    count = torch.cuda.device_count()
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(count))
    return [Check("gpu", "CUDA", "ok", f"{count} device(s): {names}; CUDA {built_cuda}", "")]


# ------------------------------------------------------------------------------------------------------------- sim

_RENDER_PROBE_SCRIPT = """
import json
import mujoco
import numpy as np

XML = '''
<mujoco>
  <worldbody>
    <light pos="0 0 2" dir="0 0 -1" diffuse="1 1 1"/>
    <geom type="plane" size="1 1 0.1" rgba="0.2 0.3 0.8 1"/>
    <geom type="box" pos="0 0 0.1" size="0.1 0.1 0.1" rgba="1 0.2 0.2 1"/>
  </worldbody>
</mujoco>
'''
model = mujoco.MjModel.from_xml_string(XML)
data = mujoco.MjData(model)
mujoco.mj_forward(model, data)
renderer = mujoco.Renderer(model, 32, 32)
try:
    renderer.update_scene(data)
    image = renderer.render()
    gl = ""
    try:
        from OpenGL import GL
        gl = GL.glGetString(GL.GL_RENDERER).decode(errors="replace")
    except Exception:
        pass
finally:
    renderer.close()
colours = len(np.unique(image.reshape(-1, image.shape[-1]), axis=0))
if colours < 2:
    raise SystemExit("rendered image is a single colour")
print(json.dumps({"colours": int(colours), "gl_renderer": gl, "shape": list(image.shape)}))
"""


def _render_probe(backend: str, timeout: float = RENDER_PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Render a tiny scene in a subprocess with ``MUJOCO_GL=backend``; return (works, detail)."""
    env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _RENDER_PROBE_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"probe timed out after {timeout:.0f} s"
    except Exception as exc:
        return False, f"probe could not start: {_short(exc)}"
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        return False, _explain_probe_failure(backend, lines[-1] if lines else f"exit code {proc.returncode}")
    try:
        info = json.loads(proc.stdout.strip().splitlines()[-1])
    except Exception:
        return False, _short(f"unexpected probe output: {proc.stdout!r}")
    gl = f", GL renderer {info['gl_renderer']}" if info.get("gl_renderer") else ""
    return True, f"MUJOCO_GL={backend} renders 32x32 ({info['colours']} colours{gl})"


def _explain_probe_failure(backend: str, line: str) -> str:
    """A probe's last stderr line in words: PyOpenGL reports a GL library it could not load as an AttributeError
    on None (`'NoneType' object has no attribute 'glGetError'`) or an ImportError naming the library."""
    name, apt = RENDER_BACKENDS[backend]
    unloadable = (
        "'NoneType' object has no attribute",
        "Unable to load",
        "cannot open shared object",
        "No module named 'OpenGL'",
    )
    if any(text in line for text in unloadable):
        return f"the {name} library could not be loaded (is {apt} installed?)"
    return _short(line)


def _check_rendering(mujoco_ok: bool, render_probe: bool) -> list[Check]:
    items = {backend: f"rendering ({name})" for backend, (name, _) in RENDER_BACKENDS.items()}
    if not mujoco_ok:
        return [Check("sim", item, "missing", "mujoco not importable", FIX_SIM) for item in items.values()]
    if not render_probe:
        return [
            Check("sim", item, "warn", "not probed", "re-run with render_probe=True to test offscreen rendering")
            for item in items.values()
        ]
    with ThreadPoolExecutor(max_workers=len(RENDER_BACKENDS)) as pool:
        results = dict(zip(RENDER_BACKENDS, pool.map(_render_probe, RENDER_BACKENDS), strict=True))
    working = [b for b, (ok, _) in results.items() if ok]
    checks = []
    for backend, (ok, detail) in results.items():
        apt = RENDER_BACKENDS[backend][1]
        if ok:
            checks.append(Check("sim", items[backend], "ok", detail, ""))
        elif working:
            fix = f"optional: apt-get install {apt} (MUJOCO_GL={working[0]} already works)"
            checks.append(Check("sim", items[backend], "warn", detail, fix))
        else:
            fix = "apt-get install libegl1 (EGL) or libosmesa6 (OSMesa); then set MUJOCO_GL accordingly"
            checks.append(Check("sim", items[backend], "error", detail, fix))
    return checks


def _find_fr3_xml() -> tuple[bool, Path | None]:
    """Locate franky_sim/assets/fr3.xml without importing franky_sim: (franky_sim installed, path or None)."""
    spec = importlib.util.find_spec("franky_sim")
    if spec is None:
        return False, None
    for location in spec.submodule_search_locations or []:
        candidate = Path(location) / "assets" / "fr3.xml"
        if candidate.is_file():
            return True, candidate
    return True, None


def _check_fr3_model() -> Check:
    item = "Franka model (fr3.xml)"
    try:
        installed, path = _find_fr3_xml()
    except Exception as exc:
        return Check("sim", item, "error", f"cannot locate franky_sim: {_short(exc)}", FIX_SIM)
    if not installed:
        return Check("sim", item, "missing", "franky_sim not installed", FIX_SIM)
    if path is None:
        fix = "pip install --force-reinstall franky-sim==1.0.4  # or " + FIX_SIM
        return Check("sim", item, "error", "franky_sim installed but assets/fr3.xml not found", fix)
    return Check("sim", item, "ok", str(path), "")


def _check_sim(render_probe: bool) -> list[Check]:
    mujoco, check = _package_check("sim", "mujoco", "mujoco", "mujoco", FIX_SIM)
    return [check, _check_fr3_model(), *_check_rendering(mujoco is not None, render_probe)]


# ---------------------------------------------------------------------------------------------------------- franka


def _check_franky() -> list[Check]:
    franky, check = _package_check("franka", "franky", "franky", "franky-control", FIX_FRANKA)
    if franky is None:
        return [check, Check("franka", "libfranka", check.status, "unknown (franky not importable)", FIX_FRANKA)]
    libfranka = next(
        (
            str(getattr(franky, attr))
            for attr in ("LIBFRANKA_VERSION", "libfranka_version", "__libfranka_version__")
            if getattr(franky, attr, None)
        ),
        None,
    )
    if libfranka is None:
        lib = Check("franka", "libfranka", "ok", "bundled with franky (version not exposed)", "")
    else:
        lib = Check("franka", "libfranka", "ok", libfranka, "")
    return [check, lib]


def _check_rt_kernel() -> Check:
    uname = os.uname()
    realtime_flag = Path("/sys/kernel/realtime")
    try:
        flag = realtime_flag.read_text().strip() if realtime_flag.exists() else ""
    except OSError:
        flag = ""
    detail = f"{uname.release} {uname.version}"
    if "PREEMPT_RT" in uname.version or flag == "1":
        return Check("franka", "real-time kernel", "ok", detail, "")
    fix = "use RealtimeConfig.Ignore or install a PREEMPT_RT kernel"
    return Check("franka", "real-time kernel", "warn", f"not PREEMPT_RT: {detail}", fix)


def _fmt_limit(value: int, unit: str = "") -> str:
    import resource

    return "unlimited" if value == resource.RLIM_INFINITY else f"{value}{unit}"


def _check_rt_limits() -> list[Check]:
    try:
        import resource
    except ImportError:
        return [Check("franka", "rtprio limit", "warn", "resource module unavailable (non-POSIX)", "use Linux")]
    limits_fix = "add '@realtime - rtprio 99' and '@realtime - memlock 102400' to /etc/security/limits.conf; re-login"
    soft, hard = resource.getrlimit(resource.RLIMIT_RTPRIO)
    rt_detail = f"soft {_fmt_limit(soft)}, hard {_fmt_limit(hard)}"
    if soft == 0:
        rtprio = Check("franka", "rtprio limit", "warn", rt_detail + " (no real-time scheduling)", limits_fix)
    else:
        rtprio = Check("franka", "rtprio limit", "ok", rt_detail, "")
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    mem_detail = f"soft {_fmt_limit(soft, ' B')}, hard {_fmt_limit(hard, ' B')}"
    if soft != resource.RLIM_INFINITY and soft < _MEMLOCK_RECOMMENDED:
        memlock = Check("franka", "memlock limit", "warn", mem_detail + " (< 100 MiB recommended)", limits_fix)
    else:
        memlock = Check("franka", "memlock limit", "ok", mem_detail, "")
    return [rtprio, memlock]


def _check_franka() -> list[Check]:
    return [*_check_franky(), _check_rt_kernel(), *_check_rt_limits()]


FCI_PORT = 1337


def _check_robot(host: str, timeout: float = 2.0) -> list[Check]:
    """FCI reachability of a real robot, then whether franky's libfranka accepts its server version."""
    try:
        ms = tcp_probe(host, FCI_PORT, timeout)
    except OSError as exc:
        fix = (
            f"connect the robot PC to the control box's Ethernet port, give it an address in the robot's subnet, "
            f"check `ping {host}`, and activate FCI in Desk (brakes open)"
        )
        return [Check("franka", "FCI reachable", "error", f"{host}:{FCI_PORT}: {_short(exc)}", fix)]
    checks = [Check("franka", "FCI reachable", "ok", f"{host}:{FCI_PORT} accepts TCP in {ms:.1f} ms", "")]
    franky, failure = _package_check("franka", "robot server version", "franky", "franky-control", FIX_FRANKA)
    if franky is None:
        return [*checks, failure]
    try:
        robot = franky.Robot(host, realtime_config=franky.RealtimeConfig.Ignore)  # connects, never moves
        detail = f"libfranka in franky-control {_dist_version('franky-control')} accepted the robot's server"
        try:
            detail += f"; gripper server version {franky.Gripper(host).server_version}"
        except Exception as exc:
            detail += f"; no Franka Hand ({_short(exc, 60)})"
        checks.append(Check("franka", "robot server version", "ok", detail, ""))
        checks.append(_fault_state(franky, robot))
        del robot
    except franky.IncompatibleVersionException as exc:
        fix = (
            "install the franky-control release whose libfranka matches the robot system version "
            "(https://frankarobotics.github.io/docs/compatibility.html)"
        )
        checks.append(Check("franka", "robot server version", "error", _short(exc, 300), fix))
    except Exception as exc:
        fix = "close other FCI clients (only one may connect), check Desk shows FCI active, then retry"
        checks.append(Check("franka", "robot server version", "error", _short(exc), fix))
    return checks


def _fault_state(franky: Any, robot: Any) -> Check:
    """Whether the arm is in a fault (reflex) state, with the errors that put it there."""
    try:
        state = robot.state
    except Exception as exc:
        return Check(
            "franka",
            "fault state",
            "error",
            f"cannot read the robot state: {_short(exc)}",
            "check Desk: FCI active, brakes open",
        )
    mode = str(state.robot_mode).split(".")[-1]
    errors = str(state.last_motion_errors)
    if state.robot_mode == franky.RobotMode.Reflex:
        return Check(
            "franka",
            "fault state",
            "error",
            f"{mode}: {_short(errors, 200)}",
            "check the arm and the cell, then `inril-robot robot recover --robot franka`",
        )
    if state.robot_mode == franky.RobotMode.UserStopped:
        return Check(
            "franka",
            "fault state",
            "warn",
            f"{mode}: the user stop is pressed",
            "release the user stop (then `inril-robot robot recover --robot franka` if it faulted)",
        )
    return Check("franka", "fault state", "ok", f"{mode}, no fault", "")


def _check_server(endpoint: str, rounds: int = 10, timeout_ms: int = 2000) -> list[Check]:
    """Round-trip time of a raw ZMQ REQ echo to a policy server at `endpoint` (it must echo unknown frames)."""
    import zmq

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    for opt, value in ((zmq.LINGER, 0), (zmq.RCVTIMEO, timeout_ms), (zmq.SNDTIMEO, timeout_ms)):
        sock.setsockopt(opt, value)
    try:
        sock.connect(endpoint)
        samples = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            sock.send(b"ping")
            sock.recv()
            samples.append((time.perf_counter() - t0) * 1e3)
    except zmq.ZMQError as exc:
        fix = (
            f"start the policy server on the GPU box (`inril-robot serve`), check {endpoint} is the address it "
            "binds and that the firewall allows the port"
        )
        return [Check("network", "policy server RTT", "error", f"{endpoint}: {_short(exc)}", fix)]
    finally:
        sock.close(0)
    median = statistics.median(samples)
    detail = f"{endpoint}: median {median:.2f} ms, max {max(samples):.2f} ms over {rounds} round trips"
    if median > 20.0:
        return [
            Check(
                "network",
                "policy server RTT",
                "warn",
                detail,
                "over 20 ms of a 100 ms control period: use a wired link and one switch between the PCs",
            )
        ]
    return [Check("network", "policy server RTT", "ok", detail, "")]


# ---------------------------------------------------------------------------------------------------------- camera


def _realsense_devices(rs: ModuleType) -> Check:
    devices = rs.context().query_devices()
    found: list[str] = []
    slow: list[str] = []  # serials on a USB 2 link: colour+depth at 30 fps will drop frames
    for dev in devices:
        info = []
        for field in ("name", "serial_number", "firmware_version", "usb_type_descriptor"):
            try:
                info.append(dev.get_info(getattr(rs.camera_info, field)))
            except Exception:
                info.append("?")
        found.append("{} (serial {}, fw {}, USB {})".format(*info))
        if info[3].startswith("2"):
            slow.append(info[1])
    if not found:
        fix = "connect a RealSense to a USB3 port; check `rs-enumerate-devices` and librealsense udev rules"
        return Check("camera", "RealSense devices", "warn", "0 devices", fix)
    detail = f"{len(found)} device(s): " + "; ".join(found)
    if slow:
        return Check(
            "camera",
            "RealSense devices",
            "warn",
            detail,
            f"{', '.join(slow)} on USB 2: use a USB 3 port and cable (blue port, short cable, no hub)",
        )
    return Check("camera", "RealSense devices", "ok", detail, "")


def _check_camera() -> list[Check]:
    import ctypes.util

    rs, check = _package_check("camera", "pyrealsense2", "pyrealsense2", "pyrealsense2", FIX_CAMERA)
    checks = [check]
    if rs is None:
        detail = "not checked: pyrealsense2 unavailable"
        checks.append(Check("camera", "RealSense devices", check.status, detail, FIX_CAMERA))
    else:
        try:
            checks.append(_realsense_devices(rs))
        except Exception as exc:
            fix = "check USB connection/permissions (librealsense udev rules) and `rs-enumerate-devices`"
            checks.append(Check("camera", "RealSense devices", "error", f"query failed: {_short(exc)}", fix))
    lib = ctypes.util.find_library("usb-1.0")
    if lib:
        checks.append(Check("camera", "libusb", "ok", lib, ""))
    else:
        checks.append(Check("camera", "libusb", "missing", "libusb-1.0 not found", "apt-get install libusb-1.0-0"))
    return checks


# ---------------------------------------------------------------------------------------------------------- teleop


def _is_spacemouse(dev: dict[str, object]) -> bool:
    vendor = dev.get("vendor_id")
    product = str(dev.get("product_string") or "")
    return vendor == 0x256F or (vendor == 0x046D and "space" in product.lower())


def _check_hid() -> list[Check]:
    hid, check = _package_check("teleop", "hidapi", "hid", "hidapi", FIX_TELEOP)
    if hid is None:
        return [check, Check("teleop", "SpaceMouse", check.status, "not checked: hidapi unavailable", FIX_TELEOP)]
    try:
        devices = list(hid.enumerate())
    except Exception as exc:
        fix = "apt-get install libhidapi-hidraw0 and check /dev/hidraw* permissions"
        return [check, Check("teleop", "SpaceMouse", "error", f"hid.enumerate() failed: {_short(exc)}", fix)]
    check = dataclasses.replace(check, detail=f"{check.detail}; {len(devices)} HID device(s)")
    mice = [str(d.get("product_string") or hex(int(d.get("product_id") or 0))) for d in devices if _is_spacemouse(d)]
    if mice:
        return [check, Check("teleop", "SpaceMouse", "ok", "3Dconnexion: " + ", ".join(sorted(set(mice))), "")]
    fix = "connect a 3Dconnexion SpaceMouse (keyboard teleop works without one)"
    return [check, Check("teleop", "SpaceMouse", "warn", "no 3Dconnexion device found", fix)]


def _check_pyspacemouse() -> Check:
    mod, failure = _try_import("pyspacemouse")
    if mod is None:
        assert failure is not None
        return dataclasses.replace(failure, area="teleop", item="pyspacemouse", fix=FIX_TELEOP)
    return Check("teleop", "pyspacemouse", "ok", _dist_version("pyspacemouse", mod), "")


def _check_hidraw() -> Check:
    nodes = sorted(Path("/dev").glob("hidraw*"))
    if not nodes:
        return Check("teleop", "/dev/hidraw*", "warn", "no hidraw devices", "connect the SpaceMouse (USB or receiver)")
    usable = [n.name for n in nodes if os.access(n, os.R_OK | os.W_OK)]
    detail = f"{len(usable)}/{len(nodes)} readable+writable" + (f": {', '.join(usable)}" if usable else "")
    if usable:
        return Check("teleop", "/dev/hidraw*", "ok", detail, "")
    fix = (
        'add udev rule KERNEL=="hidraw*", ATTRS{idVendor}=="256f", MODE="0666" to '
        "/etc/udev/rules.d/99-spacemouse.rules; udevadm control --reload-rules && udevadm trigger"
    )
    return Check("teleop", "/dev/hidraw*", "warn", detail, fix)


def _check_keyboard() -> Check:
    """The keyboard teleop reads the controlling terminal (/dev/tty), falling back to stdin."""
    try:
        with open("/dev/tty", "rb", buffering=0):
            source = "/dev/tty"
    except OSError:
        try:
            source = "stdin" if sys.stdin is not None and sys.stdin.isatty() else ""
        except Exception:
            source = ""
    if source:
        return Check("teleop", "keyboard", "ok", f"terminal available ({source})", "")
    return Check(
        "teleop",
        "keyboard",
        "warn",
        "no terminal (no /dev/tty, stdin is not a TTY)",
        "run `inril-robot collect --teleop keyboard` from an interactive terminal (SSH and tmux work)",
    )


def _check_teleop() -> list[Check]:
    return [*_check_hid(), _check_pyspacemouse(), _check_hidraw(), _check_keyboard()]


# --------------------------------------------------------------------------------------------------------- network


def zmq_loopback_latency_ms(rounds: int = 20, timeout_ms: int = 2000) -> float:
    """Median REQ/REP round-trip time in ms over loopback on an ephemeral port (raises on failure)."""
    import zmq

    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    req = ctx.socket(zmq.REQ)
    try:
        for sock in (rep, req):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
            sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
        rep.bind("tcp://127.0.0.1:*")
        req.connect(rep.getsockopt_string(zmq.LAST_ENDPOINT))
        samples = []
        for i in range(rounds + 1):  # first round trip is a warm-up (connection set-up)
            t0 = time.perf_counter()
            req.send(b"ping")
            rep.send(rep.recv())
            req.recv()
            if i:
                samples.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(samples)
    finally:
        req.close(0)
        rep.close(0)
        ctx.term()


def _check_network() -> list[Check]:
    zmq, check = _package_check("network", "pyzmq / libzmq", "zmq", "pyzmq", f"{FIX_CORE}  # core dependency pyzmq")
    if zmq is None:
        return [check]
    checks = [dataclasses.replace(check, detail=f"pyzmq {zmq.pyzmq_version()}, libzmq {zmq.zmq_version()}")]
    if zmq.has("curve"):
        checks.append(Check("network", "CurveZMQ", "ok", "available (required for non-loopback binding)", ""))
    else:
        fix = "pip install --force-reinstall pyzmq (bundled libzmq has libsodium/CURVE); needed off-loopback"
        checks.append(Check("network", "CurveZMQ", "warn", "libzmq built without CURVE", fix))
    try:
        median = zmq_loopback_latency_ms()
        detail = f"median {median:.3f} ms over 20 round trips (tcp://127.0.0.1:*)"
        checks.append(Check("network", "loopback REQ/REP", "ok", detail, ""))
    except Exception as exc:
        fix = "check that the loopback interface is up and no firewall blocks 127.0.0.1"
        checks.append(Check("network", "loopback REQ/REP", "error", f"round trip failed: {_short(exc)}", fix))
    return checks


# ------------------------------------------------------------------------------------------------------------- api


def run_checks(render_probe: bool = True, host: str | None = None, server: str | None = None) -> list[Check]:
    """Run every diagnostic; never raises. ``render_probe=False`` skips the (slow) EGL/OSMesa subprocess probes;
    ``host`` adds the real robot's FCI and version checks, ``server`` the round trip to a policy server."""
    areas: list[tuple[str, Callable[[], list[Check]]]] = [
        ("core", _check_core),
        ("gpu", _check_gpu),
        ("sim", lambda: _check_sim(render_probe)),
        ("franka", _check_franka),
        ("camera", _check_camera),
        ("teleop", _check_teleop),
        ("network", _check_network),
    ]
    if host:
        areas.append(("franka", lambda: _check_robot(host)))
    if server:
        areas.append(("network", lambda: _check_server(server)))
    checks: list[Check] = []
    for area, fn in areas:
        try:
            checks.extend(fn())
        except Exception as exc:
            fix = "unexpected failure inside the doctor; please report it with the detail above"
            checks.append(Check(area, "doctor", "error", f"check crashed: {_short(exc)}", fix))
    return checks


def check_met(check: Check, required_areas: set[str]) -> bool:
    """Missed: an error anywhere, or a missing package in an area the run needs (optional extras may be missing)."""
    if check.status == "error":
        return False
    return not (check.status == "missing" and check.area in required_areas)


def render_table(checks: list[Check], met: list[bool] | None = None) -> Table:
    """Rich table with columns area, item, status (coloured), detail, fix; a MISSED mark on checks not met."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="inril-robot doctor", show_lines=False)
    table.add_column("area", style="bold")
    table.add_column("item")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    table.add_column("fix", overflow="fold", style="dim")
    for i, c in enumerate(checks):
        # Text() cells: no markup parsing, so "inril-robot[sim]" is shown verbatim.
        status = Text(c.status, style=_STATUS_STYLE.get(c.status, ""))
        if met is not None and not met[i]:
            status.append(" MISSED", style="bold red")
        table.add_row(Text(c.area), Text(c.item), status, Text(c.detail), Text(c.fix))
    return table


if __name__ == "__main__":
    from rich.console import Console

    Console().print(render_table(run_checks()))
