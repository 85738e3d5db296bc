"""The episode store: atomic commits, contract checks, locking, checksums, window sampling and statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inril_robot.core.contract import Contract, ContractMismatch, ObsSpec
from inril_robot.data import Dataset, DatasetError, DatasetWriter
from inril_robot.data.normalization import compute_stats, write_stats
from inril_robot.data.sampler import WindowSampler

CONTRACT = Contract(
    observations={"ee_pos": ObsSpec(shape=(3,), dtype="float32"), "front_rgb": ObsSpec(shape=(8, 8, 3), dtype="uint8")},
    cameras={"front": (8, 8)},
)


def step_obs(t: int) -> dict[str, np.ndarray]:
    return {"ee_pos": np.array([t, 2 * t, 3 * t], np.float32), "front_rgb": np.full((8, 8, 3), t % 256, np.uint8)}


def write_episode(writer: DatasetWriter, length: int, success: bool = True, seed: int = 0) -> int:
    ep = writer.begin_episode(seed=seed, notes="n")
    for t in range(length):
        action = np.full(7, t / 100, np.float32)
        ep.add_step(
            step_obs(t),
            action,
            action * 0.5,
            float(t == length - 1),
            t == length - 1,
            "scripted",
            capture_times={"front": t * 0.1},
            wall_time=1000.0 + t,
            state_time=t * 0.1,
        )
    return ep.commit(success=success)


def test_round_trip_is_exact(tmp_path: Path) -> None:
    with DatasetWriter(tmp_path, CONTRACT, task="lift") as w:
        assert write_episode(w, 40) == 0
        assert write_episode(w, 70, success=False, seed=5) == 1  # crosses the 32-step flush boundary twice
    ds = Dataset(tmp_path)
    assert len(ds) == 2 and ds.num_steps == 110
    ep = ds.episode(1)
    assert ep.length == 70 and not ep.success and ep.meta["seed"] == 5 and ep.meta["task"] == "lift"
    np.testing.assert_array_equal(ep.load("obs/ee_pos")[69], [69, 138, 207])
    assert ep.load("obs/front_rgb").dtype == np.uint8 and ep.load("obs/front_rgb")[33, 0, 0, 0] == 33
    np.testing.assert_allclose(ep.load("action/executed"), ep.load("action/proposed") * 0.5)
    np.testing.assert_array_equal(ep.load("time/capture/front")[:3], np.array([0, 0.1, 0.2]))
    assert ep.load("done").sum() == 1 and ep.load("control")[0] == 2
    assert ep.verify() == []


def test_corruption_is_detected_by_checksums(tmp_path: Path) -> None:
    with DatasetWriter(tmp_path, CONTRACT, task="lift") as w:
        write_episode(w, 10)
    ep = Dataset(tmp_path).episode(0)
    arr = ep.group["obs/ee_pos"]
    import zarr

    zarr.open_array(str(ep.path / "obs" / "ee_pos"), mode="r+")[3] = np.array([9, 9, 9], np.float32)
    del arr
    assert Dataset(tmp_path).episode(0).verify() == ["obs/ee_pos"]


def test_uncommitted_episode_is_invisible_and_dropped(tmp_path: Path) -> None:
    writer = DatasetWriter(tmp_path, CONTRACT, task="lift")
    write_episode(writer, 5)
    ep = writer.begin_episode()
    for t in range(40):  # forces a flush into .staging
        ep.add_step(step_obs(t), np.zeros(7), np.zeros(7), 0.0, False, "human")
    assert any((tmp_path / ".staging").iterdir())
    assert len(Dataset(tmp_path)) == 1
    writer.close()  # like Ctrl-C: the open episode is dropped
    assert len(Dataset(tmp_path)) == 1 and not (tmp_path / ".staging").exists()


def test_stale_staging_from_a_killed_writer_is_removed(tmp_path: Path) -> None:
    with DatasetWriter(tmp_path, CONTRACT, task="lift") as w:
        write_episode(w, 5)
    (tmp_path / ".staging" / "ep_000001.dead").mkdir(parents=True)
    with DatasetWriter(tmp_path, CONTRACT, task="lift") as w:
        assert not (tmp_path / ".staging" / "ep_000001.dead").exists()
        assert write_episode(w, 5) == 1  # resume appends


def test_contract_mismatch_refuses_naming_the_field(tmp_path: Path) -> None:
    with DatasetWriter(tmp_path, CONTRACT, task="lift") as w:
        write_episode(w, 3)
    other = CONTRACT.model_copy(update={"control_hz": 20.0})
    with pytest.raises(ContractMismatch, match="control_hz"):
        DatasetWriter(tmp_path, other, task="lift")
    bigger = CONTRACT.model_copy(
        update={"observations": {**CONTRACT.observations, "front_rgb": ObsSpec(shape=(16, 16, 3), dtype="uint8")}}
    )
    with pytest.raises(ContractMismatch, match=r"observations\.front_rgb\.shape"):
        DatasetWriter(tmp_path, bigger, task="lift")
    with pytest.raises(DatasetError, match="task"):
        DatasetWriter(tmp_path, CONTRACT, task="push")
    with DatasetWriter(tmp_path, CONTRACT, task="lift"):  # the failed opens released the lock
        pass


def test_single_writer_lock(tmp_path: Path) -> None:
    with DatasetWriter(tmp_path, CONTRACT, task="lift"), pytest.raises(DatasetError, match="another process"):
        DatasetWriter(tmp_path, CONTRACT, task="lift")


def test_bad_steps_are_rejected_with_the_field_named(tmp_path: Path) -> None:
    with DatasetWriter(tmp_path, CONTRACT, task="lift") as w:
        ep = w.begin_episode()
        bad = step_obs(0) | {"front_rgb": np.zeros((8, 8, 3), np.float32)}
        with pytest.raises(ContractMismatch, match=r"observations\.front_rgb\.dtype"):
            ep.add_step(bad, np.zeros(7), np.zeros(7), 0.0, False, "human")
        with pytest.raises(DatasetError, match="control"):
            ep.add_step(step_obs(0), np.zeros(7), np.zeros(7), 0.0, False, "robot")
        with pytest.raises(DatasetError, match="no steps"):
            ep.commit(success=True)
        ep.discard()


def test_corrupt_dataset_json_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not an inril-robot dataset"):
        Dataset(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="corrupt"):
        Dataset(tmp_path)


def test_window_sampler_pads_and_batches(tmp_path: Path) -> None:
    with DatasetWriter(tmp_path, CONTRACT, task="lift") as w:
        write_episode(w, 10)
        write_episode(w, 4, success=False)
    ds = Dataset(tmp_path)
    sampler = WindowSampler(ds, ["obs/ee_pos", "action/executed"], horizon=6)
    assert len(sampler) == 14
    last = sampler[13]  # episode 1, start 3: one real step then padding with the last step
    np.testing.assert_array_equal(last["obs/ee_pos"][:, 0], [3, 3, 3, 3, 3, 3])
    unpadded = WindowSampler(ds, ["obs/ee_pos"], horizon=6, pad=False)
    assert len(unpadded) == 5  # only episode 0 is long enough: starts 0..4
    batch = sampler.sample(32, np.random.default_rng(0))
    assert batch["obs/ee_pos"].shape == (32, 6, 3) and batch["action/executed"].shape == (32, 6, 7)
    assert len(WindowSampler(ds, ["obs/ee_pos"], 2, successful_only=True)) == 10
    with pytest.raises(DatasetError, match="no array 'obs/missing'"):
        WindowSampler(ds, ["obs/missing"], 2)


def test_stats_match_numpy(tmp_path: Path) -> None:
    with DatasetWriter(tmp_path, CONTRACT, task="lift") as w:
        write_episode(w, 10)
        write_episode(w, 7)
    ds = Dataset(tmp_path)
    stats = compute_stats(ds)
    assert "obs/front_rgb" not in stats and "time/wall" not in stats
    all_pos = np.concatenate([ds[i].load("obs/ee_pos") for i in range(2)])
    np.testing.assert_allclose(stats["obs/ee_pos"]["mean"], all_pos.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["obs/ee_pos"]["std"], all_pos.std(0), rtol=1e-6)
    assert stats["obs/ee_pos"]["count"] == 17
    path = write_stats(ds, stats)
    assert json.loads(path.read_text())["steps"] == 17
