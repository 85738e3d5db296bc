"""Reports that say when they miss: bench/doctor targets, exit codes, --report-only; progress lines in log files."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from inril_robot.cli import app
from inril_robot.cli._common import finish_targets
from inril_robot.doctor import _explain_probe_failure
from inril_robot.reporting.progress import LineProgress, make_progress
from inril_robot.reporting.targets import Target, targets_payload

ROOT = Path(__file__).resolve().parents[1]


def test_target_met_and_payload() -> None:
    low, high = Target("p50 ratio", 1.92, 1.5, "<=", "x"), Target("speed", 7.0, 1.0, ">=", "x")
    assert not low.met and high.met
    payload = targets_payload([low, high])
    assert payload["met"] is False
    assert [t["met"] for t in payload["targets"]] == [False, True]
    assert "1.92x (target <= 1.5x)" in low.text()


def test_finish_targets_exit_code_and_report_only() -> None:
    missed = [Target("p50 ratio", 1.92, 1.5, "<=", "x")]
    with pytest.raises(typer.Exit) as e:
        finish_targets(missed, report_only=False)
    assert e.value.exit_code == 1
    finish_targets(missed, report_only=True)  # only reports
    finish_targets([Target("x", 1.0, 1.5, "<=")], report_only=False)  # all met: no exit


@pytest.mark.timeout(180)
def test_bench_latency_forced_miss_exits_nonzero() -> None:
    """A target the bridge cannot meet (p50 at most 1% of a raw echo of the same bytes) must fail the command."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "inril_robot.cli",
            "bench",
            "latency",
            "--repeats",
            "50",
            "--learner-seconds",
            "1",
            "--target-p50-ratio",
            "0.01",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=170,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 1, proc.stderr
    payload = json.loads(proc.stdout)
    bridge = next(t for t in payload["targets"] if t["name"].startswith("bridge p50"))
    assert bridge["met"] is False and bridge["limit"] == 0.01 and bridge["value"] > 0.01
    assert payload["met"] is False
    assert "MISSED bridge p50" in proc.stderr


@pytest.mark.timeout(120)
def test_doctor_franka_error_row_is_not_ok() -> None:
    """An unreachable robot is an error row: ok false and exit 1; --report-only only reports."""
    args = ["doctor", "--robot", "franka", "--host", "127.0.0.9", "--no-render-probe", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    payload = json.loads(result.stdout.splitlines()[0])
    assert payload["ok"] is False and "franka" in payload["required_areas"]
    fci = next(c for c in payload["checks"] if c["item"] == "FCI reachable")
    assert fci["status"] == "error" and fci["met"] is False
    assert all(c["met"] for c in payload["checks"] if c["status"] in ("ok", "warn"))
    assert CliRunner().invoke(app, [*args, "--report-only"]).exit_code == 0


def test_osmesa_probe_failure_is_explained() -> None:
    detail = _explain_probe_failure("osmesa", "AttributeError: 'NoneType' object has no attribute 'glGetError'")
    assert detail == "the OSMesa library could not be loaded (is libosmesa6 installed?)"
    assert "AttributeError" not in detail


def test_line_progress_in_a_file() -> None:
    stream = io.StringIO()
    console = Console(file=stream, width=40)
    progress = make_progress(console=console)
    assert isinstance(progress, LineProgress)
    progress.period_s = 0.0
    with progress:
        task = progress.add_task("pretrain gaussian · reach", total=100, status="")
        for step in range(1, 101, 10):
            progress.update(task, completed=step, status=f"loss {1 / step:.3f} · 100 samples/s")
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 10
    assert "pretrain gaussian · reach 91/100 (91%)" in lines[-1] and "loss 0.011" in lines[-1]
    assert any("ETA" in line and "/s" in line for line in lines)
    assert all(len(line) > 40 for line in lines)  # never cut to the console width


@pytest.mark.timeout(120)
def test_sim_run_progress_lines_when_stderr_is_a_file(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    with log.open("w") as f:
        subprocess.run(
            [sys.executable, "-m", "inril_robot.cli", "sim", "run", "--task", "reach", "--episodes", "3"],
            stdout=f,
            stderr=f,
            check=True,
            timeout=110,
            env=dict(os.environ, PYTHONPATH=str(ROOT), INRIL_PROGRESS_PERIOD="0"),
        )
    lines = [ln for ln in log.read_text().splitlines() if "reach · scripted" in ln and "/3" in ln]
    assert len(lines) >= 3, log.read_text()
    assert "3/3 (100%)" in lines[-1] and "success 3/3" in lines[-1]
