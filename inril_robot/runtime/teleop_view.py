"""What the operator sees while recording demonstrations: the scene and the numbers that matter.

`TeleopView.frame(env, status)` composes one RGB image: in simulation a view of the whole workspace (MuJoCo's free
camera, so it works without any configured camera), the task's cameras beside it, and a panel with the end-effector
position, gripper, the object/target positions and distance, step and time left, and the keep/discard prompt at an
episode's end. Rendering happens in the caller's thread (the GL context belongs to it).

Where it goes: `ViewServer` serves the newest frame on a local web page (http://127.0.0.1:PORT, refreshed ~10x
per second; over SSH forward the port), and/or `--view-png` rewrites a PNG each step. There is no native window:
the installed OpenCV is the headless build, and MuJoCo's own viewer needs GLFW on a display.
"""

from __future__ import annotations

import http.server
import os
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inril_robot.reporting.video import fit_height

PANEL_WIDTH = 300
PAGE = b"""<!doctype html><title>inril-robot teleop view</title>
<body style="margin:0;background:#111"><img id="v" src="frame.jpg" style="max-width:100vw;max-height:100vh">
<script>const v=document.getElementById('v');
setInterval(()=>{const i=new Image();i.onload=()=>{v.src=i.src};i.src='frame.jpg?'+Date.now()},100);</script>"""


class TeleopView:
    def __init__(self, height: int = 360, workspace: bool = True) -> None:
        self.height = height
        self.workspace = workspace  # render the free-camera workspace view (simulation only)
        self._renderer: Any = None
        self._camera: Any = None

    def frame(self, env: Any, status: Any | None = None, prompt: str = "") -> np.ndarray:
        images = []
        world = getattr(env.robot, "sim", None)
        if self.workspace and world is not None:
            images.append(self._render_workspace(world))
        for cam in env.cameras:
            try:
                images.append(fit_height(cam.read_latest(max_age_s=float("inf")).image, self.height))
            except Exception:  # a camera without a frame yet: the panel still shows the numbers
                continue
        panel = self._panel(env, status, prompt)
        return np.concatenate([*[fit_height(i, self.height) for i in images], panel], axis=1)

    def _render_workspace(self, world: Any) -> np.ndarray:
        import mujoco

        if self._renderer is None:
            width = min(round(self.height * 4 / 3), int(world.model.vis.global_.offwidth))
            height = min(self.height, int(world.model.vis.global_.offheight))
            self._renderer = mujoco.Renderer(world.model, height=height, width=width)
            self._camera = mujoco.MjvCamera()
            self._camera.lookat[:] = (0.45, 0.0, 0.2)  # the table top in front of the base, seen from the front-left
            self._camera.distance, self._camera.azimuth, self._camera.elevation = 1.5, 200.0, -25.0
        self._renderer.update_scene(world.data, camera=self._camera)
        return self._renderer.render().copy()

    def _panel(self, env: Any, status: Any | None, prompt: str) -> np.ndarray:
        panel = np.full((self.height, PANEL_WIDTH, 3), 24, np.uint8)
        lines = panel_lines(env, status)
        if prompt:
            lines += ["", *prompt_lines(prompt)]
        ratio = self.height / 360
        for i, text in enumerate(lines):
            colour = (255, 210, 90) if prompt and i >= len(lines) - len(prompt_lines(prompt)) else (235, 235, 235)
            cv2.putText(
                panel,
                text,
                (8, round((i + 1) * 22 * ratio) + 4),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.45 * ratio,
                colour,
                1,
                cv2.LINE_AA,
            )
        return panel

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def prompt_lines(prompt: str, width: int = 34) -> list[str]:
    words, lines, line = prompt.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line] if line else lines


def panel_lines(env: Any, status: Any | None) -> list[str]:
    """The numbers an operator steers by, in the base frame [m]."""
    state = env.robot.state()
    ee = np.asarray(state.ee_pos, dtype=float)
    lines = [
        f"task {env.cfg.task.name}",
        f"EE     x {ee[0]:+.3f} y {ee[1]:+.3f} z {ee[2]:+.3f}",
        f"gripper width {float(state.gripper_width) * 1000:.0f} mm",
    ]
    objects = env.robot.object_poses() if hasattr(env.robot, "object_poses") else None
    for name, pose in (objects or {}).items():
        pos = np.asarray(pose.pos, dtype=float)
        lines.append(f"{name[:6]:6s} x {pos[0]:+.3f} y {pos[1]:+.3f} z {pos[2]:+.3f}")
        lines.append(f"      distance to EE {np.linalg.norm(pos - ee) * 100:.1f} cm")
    if status is not None:
        left = (env.cfg.task.max_steps - status.step) / env.cfg.robot.control_hz
        lines += [
            f"episode {status.episode_index}  step {status.step}/{env.cfg.task.max_steps} ({left:.1f} s left)",
            f"kept {status.kept}/{status.target}  discarded {status.discarded}",
        ]
    return lines


class ViewServer:
    """The newest frame on a local web page: GET / (the page), GET /frame.jpg (the frame)."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self._jpeg = b""
        self._lock = threading.Lock()
        view = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's API
                if self.path.startswith("/frame.jpg"):
                    with view._lock:
                        body, kind = view._jpeg, "image/jpeg"
                elif self.path in ("/", "/index.html"):
                    body, kind = PAGE, "text/html"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # the operator's terminal is the teleop's
                pass

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self.url = f"http://{host}:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def publish(self, rgb: np.ndarray) -> None:
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if ok:
            with self._lock:
                self._jpeg = jpeg.tobytes()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def write_png(rgb: np.ndarray, path: Path) -> None:
    """Replace `path` with the frame (written beside it, then renamed: a viewer never reads half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    os.replace(tmp, path)


class OperatorView:
    """`TeleopView` frames sent to a `ViewServer` page and/or a PNG file, once per collect status update."""

    def __init__(self, port: int | None = 8765, png: Path | None = None, height: int = 360) -> None:
        self.view = TeleopView(height)
        self.png = png
        self.server: ViewServer | None = None
        if port is not None:
            try:
                self.server = ViewServer(port)
            except OSError:  # the port is taken (another collect?): any free one
                self.server = ViewServer(0)

    def show(self, env: Any, status: Any) -> np.ndarray:
        prompt = status.last if "press k" in status.last else ""
        rgb = self.view.frame(env, status, prompt)
        if self.server is not None:
            self.server.publish(rgb)
        if self.png is not None:
            write_png(rgb, self.png)
        return rgb

    def close(self) -> None:
        self.view.close()
        if self.server is not None:
            self.server.close()
