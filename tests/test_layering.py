"""The robot PC runs the agent, the drivers and the safety envelope without torch (DESIGN.md's dependency rule).

`lint-imports` (pyproject.toml, .ci/run) checks the rule statically; this test checks what really gets imported,
lazy imports at module level included, in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

ROBOT_PC_MODULES = [
    "inril_robot.bridge.agent",
    "inril_robot.collect",
    "inril_robot.safety",
    "inril_robot.hardware",
    "inril_robot.seeds",
    "drivers.franka.robot",
    "drivers.realsense",
    "drivers.keyboard",
    "drivers.spacemouse",
]


@pytest.mark.timeout(120)
def test_robot_pc_modules_import_without_torch() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for m in {ROBOT_PC_MODULES!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'torch' or m.startswith(("
        "'torch.', 'inril_robot.rl', 'inril_robot.inril', 'inril_robot.policies', 'inril_robot.pretrain')))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=110, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
