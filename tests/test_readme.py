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
        # drop "  # comment" tails (no '#' appears inside a command here), keep quotes, collapse whitespace
        commands = [" ".join(re.sub(r"(^|\s)#.*$", "", line).split()) for line in joined.splitlines()]
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
    "inril-robot collect --task lift --teleop scripted --episodes 20 --out demos/lift --cameras sim_front_wrist": Plan(
        short=(("--episodes 20", "--episodes 2"),)
    ),
    "inril-robot dataset info demos/lift": Plan(),
    "inril-robot dataset view demos/lift --episode 0 --out ep0.mp4": Plan(),
    # exit 1 is the answer "some executed actions would break the real robot's limits"
    "inril-robot safety-check demos/lift --robot franka": Plan(exit_codes=(0, 1)),
    "inril-robot collect --task reach --episodes 50 --out demos/reach": Plan(
        short=(("--episodes 50", "--episodes 4"),)
    ),
    "inril-robot pretrain --dataset demos/reach --policy gaussian --out runs/reach_bc --set train.steps=600": Plan(
        short=(("train.steps=600", "train.steps=20 --set train.eval_episodes=2"),)
    ),
    "inril-robot eval --checkpoint runs/reach_bc/last.pt --task reach --episodes 20 --video runs/reach_bc/eval.mp4": Plan(  # noqa: E501 (the README command, verbatim)
        short=(("--episodes 20", "--episodes 2"),)
    ),
    "inril-robot finetune --robot sim --checkpoint runs/quickstart/pretrain/last.pt --demos runs/quickstart/demos "
    "--out runs/lift_inril --algo ppo --il-every 5 --separation pcgrad --env-steps 20000": Plan(slow_only=True),
    "inril-robot eval --checkpoint runs/lift_inril/last.pt --episodes 50": Plan(slow_only=True),
    "inril-robot finetune --robot sim --checkpoint runs/quickstart/pretrain/last.pt --demos runs/quickstart/demos "
    "--out runs/lift_rlpd --algo residual-sac --il-every 0 --env-steps 10000": Plan(slow_only=True),
    "inril-robot keys generate --robot arm1": Plan(),
    "inril-robot calibrate board": Plan(),
    "inril-robot calibrate board --out board.png": Plan(),
    "inril-robot doctor": Plan(short=(("doctor", "doctor --no-render-probe"),)),
}
# The slow run first makes what the fine-tuning block needs, with the quickstart as a user would (small budget).
SLOW_PREREQUISITE = "inril-robot quickstart --demos 10 --steps 200 --env-steps 1000 --episodes 10"


def readme_commands() -> list[str]:
    return [c for block in shell_blocks(README) for c in block]


# docs/: every shell command has a plan too: run here (default), or a reason it is not run by a test
HARDWARE = "needs root, the real robot or its PC setup"
DOC_RUN = [
    "inril-robot calibrate board --out board.pdf",
    "inril-robot calibrate board --out board.png --dpi 254",
    "inril-robot calibrate board --out big.pdf --squares 7x5 --square-mm 50 --marker-mm 37 --page a3",
    "inril-robot markers print --task lift --out markers/ --dpi 300",
]
DOC_NOT_RUN = {
    # docs/image_policies.md: the image fine-tuning measurement, run on a GPU machine through the device tool
    "for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/"
    "share/glvnd/egl_vendor.d/10_nvidia.json; python3 -m pip install -q --no-index --no-deps --no-compile "
    "--no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; TOTAL=420 bash "
    "scripts/device_image_finetune.sh": "a 16-core GPU machine (scripts/device_image_finetune.sh; smoke-tested on CPU)",
    "inril-robot calibrate hand-eye --robot sim --camera front": "tests/test_calibration_sim.py runs it (slow)",
    "inril-robot calibrate hand-eye --robot sim --camera wrist": "tests/test_calibration_sim.py runs it (slow)",
    "inril-robot calibrate intrinsics --robot sim --camera wrist": "tests/test_calibration_sim.py runs it (slow)",
    "inril-robot calibrate hand-eye --robot franka --camera front --execute --config my_cameras.yaml --out "
    "cal/front.yaml": HARDWARE,
    "inril-robot sim run --task lift --cameras sim_front --set cameras.front.calibration=calibrations/front.yaml "
    "--render a.mp4": "needs calibrations/front.yaml from the hand-eye run",
    "sudo apt-get install -y libegl1 libgl1 libosmesa6 libusb-1.0-0 libhidapi-hidraw0": HARDWARE,
    "bash scripts/setup.sh": "installs Debian packages and torch (sudo)",
    "pip install 'inril-robot[franka,camera,teleop]'": "installs packages",
    "sudo groupadd -f realtime && sudo usermod -aG realtime $USER": HARDWARE,
    "printf '@realtime - rtprio 99\\n@realtime - memlock 102400\\n' | sudo tee "
    "/etc/security/limits.d/99-realtime.conf": HARDWARE,
    "sudo curl -fsSL https://raw.githubusercontent.com/IntelRealSense/librealsense/master/config/"
    "99-realsense-libusb.rules -o /etc/udev/rules.d/99-realsense-libusb.rules": HARDWARE,
    'echo \'KERNEL=="hidraw*", ATTRS{idVendor}=="256f", MODE="0666"\' | sudo tee '
    "/etc/udev/rules.d/99-spacemouse.rules": HARDWARE,
    "sudo udevadm control --reload-rules && sudo udevadm trigger": HARDWARE,
    "inril-robot doctor --robot franka --host 172.16.0.2 [--server tcp://10.0.0.20:5555] [--json]": HARDWARE,
    "inril-robot collect --robot franka --set robot.franka.host=172.16.0.2 --teleop keyboard --episodes 1 --out "
    "/tmp/dry": HARDWARE,
    "inril-robot safety-check /tmp/dry --robot franka": "needs the /tmp/dry recording from the real robot",
    "python3 -m pytest -q tests/test_realsense.py tests/test_doctor.py": "runs part of this test suite",
    "python3 -m pytest -q -m slow tests/test_franka.py": "runs part of this test suite",
    "franky-sim -s mujoco &": "tests/test_franka.py starts franky-sim on its own address",
    "inril-robot doctor --robot franka --host 127.0.0.1": "needs franky-sim on 127.0.0.1 (tests/test_franka.py)",
    "inril-robot serve --checkpoint runs/pre/last.pt --demos demos/reach --out runs/serve": "a server that runs until stopped; tests/test_bridge.py runs it",  # noqa: E501 (the README command, verbatim)
    "inril-robot finetune --robot franka --execute --server tcp://127.0.0.1:5555 --checkpoint runs/pre/last.pt "
    "--out runs/arm1": HARDWARE,
    "inril-robot finetune --robot sim --bridge --checkpoint runs/pre/last.pt --demos demos/reach --out runs/dry "
    "--speed 0": "tests/test_bridge.py runs the bridge end to end",
    "inril-robot detector train --dataset demos/lift_images --out detector.pt --json": "needs a recorded image "
    "dataset; tests/test_success_detector.py trains through the CLI",
}


def docs_commands() -> list[str]:
    return [c for path in sorted((ROOT / "docs").glob("*.md")) for block in shell_blocks(path) for c in block]


def test_every_docs_command_has_a_plan() -> None:
    commands = docs_commands()
    unknown = [c for c in commands if c not in DOC_RUN and c not in DOC_NOT_RUN]
    assert not unknown, f"docs/ commands without a plan in tests/test_readme.py: {unknown}"
    stale = [c for c in [*DOC_RUN, *DOC_NOT_RUN] if c not in commands]
    assert not stale, f"plans for commands no longer in docs/: {stale}"


@pytest.mark.timeout(60)
def test_docs_commands_run(tmp_path: Path) -> None:
    for command in DOC_RUN:
        code, output = _run_in_process(command, tmp_path)
        assert code == 0, f"{command} -> exit {code}\n{output[-2000:]}"
    assert {p.name for p in tmp_path.iterdir()} >= {"board.pdf", "board.png", "big.pdf"}


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
    code = "import inril_robot.drivers.sim\n" + block + "\nenv.reset(seed=0)\nenv.close()\n"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=tmp_path)


@pytest.mark.timeout(30)
def test_keys_and_board_as_written_from_the_shell(tmp_path: Path) -> None:
    """The two examples that used to fail as written, through the installed entry point."""
    for command in ("inril-robot keys generate", "inril-robot calibrate board"):
        subprocess.run(
            [sys.executable, "-m", "inril_robot.cli", *shlex.split(command)[1:]],
            check=True,
            timeout=30,
            cwd=tmp_path,
            capture_output=True,
        )
    assert (tmp_path / "keys/server.key").is_file()
    assert (tmp_path / "board.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_readme_blocks_as_written(tmp_path: Path) -> None:
    """Every README command exactly as written, through the shell entry point, in README order."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    prerequisite = subprocess.run(
        shlex.split(SLOW_PREREQUISITE), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800
    )
    assert prerequisite.returncode == 0, prerequisite.stderr[-3000:]
    for command in readme_commands():
        plan = PLANS[command]
        if plan.skip:
            continue
        proc = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
        assert proc.returncode in plan.exit_codes, f"{command} -> exit {proc.returncode}\n{proc.stderr[-3000:]}"
