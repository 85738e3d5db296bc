"""The replay log (inril_robot/data/replay.py): round trip, SIGKILL of a real writer process, torn tails, corruption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from inril_robot.data.replay import (
    EpisodeChain,
    ReplayError,
    ReplayLog,
    ReplaySpec,
    ReplayWriter,
    Step,
    load_arrays,
)

SPEC = ReplaySpec({"state": ((1, 5), "float32"), "front_rgb": ((1, 16, 16, 3), "uint8")}, (1, 7))


def episode_steps(rng: np.random.Generator, n: int, intervened: int = -1) -> list[Step]:
    obs = [
        {
            "state": rng.normal(size=(1, 5)).astype(np.float32),
            "front_rgb": rng.integers(0, 255, (1, 16, 16, 3), np.uint8),
        }
        for _ in range(n + 1)
    ]
    return [
        Step(
            obs=obs[i],
            action=rng.uniform(-1, 1, (1, 7)).astype(np.float32),
            executed=rng.normal(size=(1, 7)).astype(np.float32),
            reward=float(i == n - 1),
            terminated=i == n - 1,
            truncated=False,
            intervention=i == intervened,
            step=i,
            steps=1,
            policy_version=3,
            next_obs=obs[i + 1],
        )
        for i in range(n)
    ]


def write_episode(writer: ReplayWriter, steps: list[Step], robot: str = "arm1", robot_episode: int = 0) -> None:
    chain = EpisodeChain(robot, robot_episode, writer.new_episode(), flush_every=8)
    for s in steps:
        chain.add(s)
    records = chain.take(closing=True)
    for i, arrays in enumerate(records):
        writer.append(
            arrays, robot=robot, robot_episode=robot_episode, episode=chain.episode, closed=i == len(records) - 1
        )


@pytest.mark.timeout(30)
def test_round_trip_keeps_every_field_and_shares_next_observations(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    steps = episode_steps(rng, 20, intervened=4)
    with ReplayWriter(tmp_path / "log", SPEC) as w:
        write_episode(w, steps)
        assert w.transitions == 20
    arrays, summary = load_arrays(tmp_path / "log")
    assert summary.transitions == 20 and summary.records == 3 and summary.episodes == 1  # 8 + 8 + 4
    assert summary.interventions == 1 and summary.torn_tail is None and summary.robots == ["arm1"]
    for i, s in enumerate(steps):
        np.testing.assert_array_equal(arrays["obs/front_rgb"][i], s.obs["front_rgb"])
        np.testing.assert_array_equal(arrays["next_obs/state"][i], s.next_obs["state"])
        np.testing.assert_array_equal(arrays["action"][i], s.action)
        assert arrays["intervention"][i] == s.intervention and arrays["terminated"][i] == s.terminated
        assert arrays["step"][i] == i
    assert arrays["obs/front_rgb"].dtype == np.uint8


@pytest.mark.timeout(30)
def test_wrong_shapes_and_non_finite_values_are_refused_by_name(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    with ReplayWriter(tmp_path / "log", SPEC) as w:
        chain = EpisodeChain("arm1", 0, 0)
        for s in episode_steps(rng, 2):
            chain.add(s)
        arrays = chain.take(closing=True)[0]
        bad = {**arrays, "reward": np.array([np.nan, 0.0], np.float32)}
        with pytest.raises(ReplayError, match="'reward' holds non-finite"):
            w.append(bad, robot="arm1", robot_episode=0, episode=0, closed=True)
        bad = {**arrays, "action": np.zeros((2, 6), np.float32)}
        with pytest.raises(ReplayError, match="'action' has shape"):
            w.append(bad, robot="arm1", robot_episode=0, episode=0, closed=True)
    with pytest.raises(ReplayError, match="another shape"):
        ReplayWriter(tmp_path / "log", ReplaySpec({"state": ((1, 4), "float32")}, (1, 7)))


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {tests!r})
    from test_replay_log import SPEC, episode_steps, write_episode
    from inril_robot.data.replay import ReplayWriter
    rng = np.random.default_rng(7)
    with ReplayWriter({root!r}, SPEC) as w:
        for e in range(10_000):
            write_episode(w, episode_steps(rng, 30), robot_episode=e)
            print(w.transitions, flush=True)
    """
)


@pytest.mark.timeout(60)
def test_sigkill_of_a_writer_process_loses_nothing_it_reported_written(tmp_path: Path) -> None:
    root = tmp_path / "log"
    script = WRITER.format(tests=str(Path(__file__).parent), root=str(root))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=os.environ)
    assert proc.stdout is not None
    reported = [int(proc.stdout.readline()) for _ in range(5)]
    os.kill(proc.pid, signal.SIGKILL)  # mid-episode: it writes on
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    log = ReplayLog(root)
    before = log.summary()
    assert before.transitions >= reported[-1] and before.transitions % 30 in (0, 8, 16, 24)  # whole records only
    records = list(log.records())
    assert sum(r.n for r in records) == before.transitions
    # a new writer appends after the survivors (cutting a torn tail first, if the kill left one)
    with ReplayWriter(root, SPEC) as w:
        assert w.transitions == before.transitions
        write_episode(w, episode_steps(np.random.default_rng(8), 5), robot_episode=99)
    after = ReplayLog(root).summary()
    assert after.transitions == before.transitions + 5 and after.torn_tail is None
    assert ReplayLog(root).checksum(records=before.records) == before.checksum


@pytest.mark.timeout(30)
def test_a_torn_tail_is_reported_then_cut_off_and_corruption_elsewhere_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "log"
    rng = np.random.default_rng(2)
    with ReplayWriter(root, SPEC) as w:
        for e in range(3):
            write_episode(w, episode_steps(rng, 6), robot_episode=e)
    intact = ReplayLog(root).summary()
    segment = root / "seg_000000.log"
    data = segment.read_bytes()
    segment.write_bytes(data + data[: len(data) // 5])  # a record cut short, as a kill during write() leaves it
    log = ReplayLog(root)
    torn = log.summary()
    assert (torn.transitions, torn.checksum) == (intact.transitions, intact.checksum)
    assert torn.torn_tail is not None and "torn record" in torn.torn_tail
    messages: list[str] = []
    with ReplayWriter(root, SPEC, log=messages.append) as w:
        write_episode(w, episode_steps(rng, 6), robot_episode=3)
    assert messages and "cut off a torn tail" in messages[0]
    assert ReplayLog(root).summary().transitions == intact.transitions + 6
    assert ReplayLog(root).summary().torn_tail is None
    # a flipped byte inside a record that is not the last segment's tail: corruption, named
    data = bytearray(segment.read_bytes())
    data[200] ^= 0xFF
    segment.write_bytes(bytes(data))
    (root / "seg_000001.log").write_bytes(b"")
    with pytest.raises(ReplayError, match=r"seg_000000.log is corrupt at offset 0: sha256 mismatch"):
        ReplayLog(root).summary()


@pytest.mark.timeout(30)
def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    with ReplayWriter(tmp_path / "log", SPEC), pytest.raises(ReplayError, match="another process"):
        ReplayWriter(tmp_path / "log", SPEC)
