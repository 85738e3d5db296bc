"""SIGKILL a real `inril-robot collect` process at random moments: committed episodes survive bit-exact,
no partial episode is ever visible, and re-running the same command resumes to the target count."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from inril_robot.data import Dataset

TARGET = 20


def collect_cmd(out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "inril_robot.cli",
        "collect",
        "--robot",
        "sim",
        "--task",
        "lift",
        "--teleop",
        "scripted",
        "--episodes",
        str(TARGET),
        "--out",
        str(out),
        "--cameras",
        "sim_front",
        "--set",
        "cameras.front.width=32",
        "--set",
        "cameras.front.height=32",
        "--json",
    ]


def check_dataset(root: Path) -> int:
    if not (root / "dataset.json").exists():
        return 0
    ds = Dataset(root)
    names = sorted(p.name for p in (root / "episodes").iterdir())
    assert all(n.startswith("ep_") and len(n) == 9 for n in names), names  # nothing but committed episodes
    for ep in ds.episodes:
        assert ep.verify() == [], f"episode {ep.index} differs from what was committed"
        for key in ep.array_keys():
            assert ep.array(key).shape[0] == ep.length, (ep.index, key)
        assert ep.load("done")[-1] and ep.load("obs/front_rgb").shape == (ep.length, 32, 32, 3)
    return len(ds)


def test_sigkill_at_random_moments_never_loses_or_exposes_partial_episodes(tmp_path: Path) -> None:
    out = tmp_path / "demos"
    rng = np.random.default_rng(1234)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    seen = 0
    for _ in range(4):
        proc = subprocess.Popen(collect_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(float(rng.uniform(1.5, 4.5)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        count = check_dataset(out)
        assert count >= seen  # committed episodes never disappear
        seen = count
        print("after kill:", count)
    finished = subprocess.run(collect_cmd(out), capture_output=True, text=True, env=env, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert check_dataset(out) == TARGET
    seeds = [ep.meta["seed"] for ep in Dataset(out).episodes]
    assert len(set(seeds)) == len(seeds)  # a resumed run never re-records a seed


def test_sigint_drops_only_the_open_episode(tmp_path: Path) -> None:
    out = tmp_path / "demos"
    proc = subprocess.Popen(collect_cmd(out), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and check_dataset(out) < 1:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert '"interrupted": true' in stdout
    assert check_dataset(out) >= 1
    assert not (out / ".staging").exists()


def test_resuming_removes_temporaries_a_killed_writer_left(tmp_path: Path) -> None:
    from inril_robot.core.atomic import atomic_open, remove_stale_temporaries

    with atomic_open(tmp_path / "curves.png", "wb") as f:
        f.write(b"png")
    stale = tmp_path / ".curves.png.0123456789abcdef0123456789abcdef.tmp"  # what a SIGKILL mid-write leaves
    stale.write_bytes(b"half")
    keep = tmp_path / ".hidden.tmp"
    keep.write_bytes(b"not ours")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and keep.exists() and (tmp_path / "curves.png").read_bytes() == b"png"
