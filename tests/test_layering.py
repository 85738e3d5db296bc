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
    "inril_robot.runtime.collect",
    "inril_robot.runtime.loop",
    "inril_robot.runtime.resets",
    "inril_robot.runtime.env",
    "inril_robot.runtime.registry",
    "inril_robot.vision.board",
    "inril_robot.core.safety",
    "inril_robot.hardware",
    "inril_robot.core.seeds",
    "inril_robot.drivers.franka.robot",
    "inril_robot.drivers.realsense",
    "inril_robot.drivers.keyboard",
    "inril_robot.drivers.spacemouse",
]


@pytest.mark.timeout(120)
def test_robot_pc_modules_import_without_torch() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for m in {ROBOT_PC_MODULES!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'torch' or m.startswith(("
        "'torch.', 'inril_robot.learning')))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=110, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.timeout(60)
def test_user_facing_errors_share_one_base_and_keep_their_old_one() -> None:
    from inril_robot.core.contract import ContractMismatch
    from inril_robot.core.errors import ConfigError, InrilError
    from inril_robot.data.store import DatasetError
    from inril_robot.hardware.calibration_file import CalibrationFileError
    from inril_robot.learning.policies.checkpoint import CheckpointError
    from inril_robot.runtime.registry import DriverUnavailable

    for cls, old in (
        (ConfigError, ValueError),
        (ContractMismatch, ValueError),
        (DatasetError, RuntimeError),
        (CheckpointError, RuntimeError),
        (DriverUnavailable, RuntimeError),
        (CalibrationFileError, ValueError),
    ):
        assert issubclass(cls, InrilError) and issubclass(cls, old), cls


@pytest.mark.timeout(60)
def test_the_cli_turns_an_inril_error_into_one_line_and_exit_2(tmp_path) -> None:
    from typer.testing import CliRunner

    from inril_robot.cli import app

    # `dataset info` no longer catches DatasetError itself: the app's one handler (cli_common.InrilGroup) does
    result = CliRunner().invoke(app, ["dataset", "info", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: ") and "dataset" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
