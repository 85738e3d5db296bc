"""The simulated Franka: MuJoCo physics of the FR3 + Franka Hand on a table, with offscreen cameras.

MuJoCo reads MUJOCO_GL once, when it is first imported, so the rendering backend is chosen here, before any
submodule imports mujoco: EGL when libEGL is present (headless GPU or Mesa software), OSMesa otherwise. Set
MUJOCO_GL yourself (egl, osmesa, glfw) to override; it cannot be a config setting, since configs load after imports.
"""

from __future__ import annotations

import ctypes.util
import os
import sys


def choose_gl_backend() -> str:
    if "mujoco" in sys.modules or "MUJOCO_GL" in os.environ:
        return os.environ.get("MUJOCO_GL", "glfw")
    backend = "egl" if ctypes.util.find_library("EGL") else "osmesa"
    os.environ["MUJOCO_GL"] = backend
    os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    return backend


GL_BACKEND = choose_gl_backend()
