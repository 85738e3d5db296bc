"""Every shell example in README.md runs: its ```bash blocks are extracted and each command is run in order in one
scratch folder, as a new user would run them.

The default run uses short variants (fewer episodes, steps and env steps: the substitutions below, nothing else) and
runs the commands in-process; `-m slow` runs every command exactly as written, as subprocesses. A README command
that this file does not know fails `test_every_readme_command_is_covered`, so new examples get a plan here.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def shell_blocks(path: Path) -> list[list[str]]:
    """The commands of each ```bash block: continuation lines joined, comments and blank lines dropped."""
    blocks = re.findall(r"```(?:bash|sh|shell)\n(.*?)```", path.read_text(), flags=re.S)
    out = []
    for block in blocks:
        joined = block.replace("\\\n", " ")
        commands = [" ".join(shlex.split(line, comments=True)) for line in joined.splitlines()]
        out.append([c for c in commands if c])
    return out


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@dataclass(frozen=True)
class Plan:
    short: tuple[tuple[str, str], ...] = ()  # substitutions giving the default run's short variant
    slow_only: bool = False  # needs a long prerequisite (the quickstart): only in the slow run
    exit_codes: tuple[int, ...] = (0,)
    skip: str = ""  # why it is never run by a test (installs system packages, runs the test suite itself)


PLANS: dict[str, Plan] = {
    "bash scripts/setup.sh && inril-robot quickstart": Plan(skip="installs Debian packages and torch (sudo)"),
    "bash scripts/setup.sh --dev && python3 -m pytest -q": Plan(skip="installs packages and runs this test suite"),
    "inril-robot collect --task lift --teleop scripted --episodes 20 --out demos/lift --cameras sim_front_wrist":
        Plan(short=(("--episodes 20", "--episodes 2"),)),
    "inril-robot dataset info demos/lift": Plan(),
    "inril-robot dataset view demos/lift --episode 0 --out ep0.mp4": Plan(),
    # exit 1 is the answer "some executed actions would break the real robot's limits"
    "inril-robot safety-check demos/lift --robot franka": Plan(exit_codes=(0, 1)),
    "inril-robot collect --task reach --episodes 50 --out demos/reach":
        Plan(short=(("--episodes 50", "--episodes 4"),)),
    "inril-robot pretrain --dataset demos/reach --policy gaussian --out runs/reach_bc --set train.steps=600":
        Plan(short=(("train.steps=600", "train.steps=20 --set train.eval_episodes=2"),)),
    "inril-robot eval --checkpoint runs/reach_bc/last.pt --task reach --episodes 20 --video runs/reach_bc/eval.mp4":
        Plan(short=(("--episodes 20", "--episodes 2"),)),
    "inril-robot finetune --robot sim --checkpoint runs/quickstart/pretrain/last.pt --demos runs/quickstart/demos "
    "--out runs/lift_inril --algo ppo --il-every 5 --separation pcgrad --env-steps 20000": Plan(slow_only=True),
    "inril-robot eval --checkpoint runs/lift_inril/last.pt --episodes 50": Plan(slow_only=True),
    "inril-robot keys generate --robot arm1": Plan(),
    "inril-robot calibrate board": Plan(),
    "inril-robot calibrate board --out board.png": Plan(),
    "inril-robot doctor": Plan(short=(("doctor", "doctor --no-render-probe"),)),
}
# The slow run first makes what the fine-tuning block needs, with the quickstart as a user would (small budget).
SLOW_PREREQUISITE = "inril-robot quickstart --demos 10 --steps 200 --env-steps 1000 --episodes 10"


def readme_commands() -> list[str]:
    return [c for block in shell_blocks(README) for c in block]


def short_variant(command: str) -> str:
    for old, new in PLANS[command].short:
        assert old in command, f"{old!r} is not in {command!r}"
        command = command.replace(old, new)
    return command


def test_every_readme_command_is_covered() -> None:
    commands = readme_commands()
    assert len(commands) >= 12
    unknown = [c for c in commands if c not in PLANS]
    assert not unknown, f"README commands without a plan in tests/test_readme.py: {unknown}"
    stale = [c for c in PLANS if c not in commands]
    assert not stale, f"plans for commands no longer in README.md: {stale}"


def _run_in_process(command: str, cwd: Path) -> tuple[int, str]:
    from inril_robot.cli import app

    argv = shlex.split(command)
    assert argv[0] == "inril-robot", command
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, argv[1:], catch_exceptions=False)
    finally:
        os.chdir(old)
    return result.exit_code, result.output


@pytest.mark.timeout(240)
def test_readme_blocks_short_variants(tmp_path: Path) -> None:
    """Every runnable README command in order (short variants), in one folder; checks what the next one needs."""
    ran = []
    for command in readme_commands():
        plan = PLANS[command]
        if plan.skip or plan.slow_only:
            continue
        code, output = _run_in_process(short_variant(command), tmp_path)
        assert code in plan.exit_codes, f"{short_variant(command)} -> exit {code}\n{output[-3000:]}"
        ran.append(command)
    assert (tmp_path / "demos/lift/dataset.json").is_file()
    assert (tmp_path / "ep0.mp4").stat().st_size > 0
    assert (tmp_path / "runs/reach_bc/last.pt").is_file()
    assert (tmp_path / "runs/reach_bc/eval.mp4").stat().st_size > 0
    assert (tmp_path / "keys/server.key").is_file() and (tmp_path / "keys/authorized/arm1.key").is_file()
    assert (tmp_path / "board.pdf").stat().st_size > 0 and (tmp_path / "board.png").stat().st_size > 0
    assert len(ran) >= 11


@pytest.mark.timeout(60)
def test_readme_python_block_runs(tmp_path: Path) -> None:
    (block,) = python_blocks(README)
    code = "import drivers.sim\n" + block + "\nenv.reset(seed=0)\nenv.close()\n"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=tmp_path)


@pytest.mark.timeout(30)
def test_keys_and_board_as_written_from_the_shell(tmp_path: Path) -> None:
    """The two examples that used to fail as written, through the installed entry point."""
    for command in ("inril-robot keys generate", "inril-robot calibrate board"):
        subprocess.run([sys.executable, "-m", "inril_robot.cli", *shlex.split(command)[1:]], check=True, timeout=30,
                       cwd=tmp_path, capture_output=True)
    assert (tmp_path / "keys/server.key").is_file()
    assert (tmp_path / "board.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_readme_blocks_as_written(tmp_path: Path) -> None:
    """Every README command exactly as written, through the shell entry point, in README order."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    prerequisite = subprocess.run(shlex.split(SLOW_PREREQUISITE), cwd=tmp_path, env=env, capture_output=True,
                                  text=True, timeout=1800)
    assert prerequisite.returncode == 0, prerequisite.stderr[-3000:]
    for command in readme_commands():
        plan = PLANS[command]
        if plan.skip:
            continue
        proc = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=1800)
        assert proc.returncode in plan.exit_codes, f"{command} -> exit {proc.returncode}\n{proc.stderr[-3000:]}"
