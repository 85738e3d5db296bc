"""Corrupted training data are refused, naming the episode (issue 15): every corruption of a committed episode —
flipped bytes, truncated, emptied, deleted or swapped chunks, damaged array metadata, a missing array, a wrong
length — stops `dataset info`, `dataset verify`, `pretrain` and `finetune`. Real zarr stores written by `collect`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inril_robot.cli import app
from inril_robot.data.store import Dataset, DatasetError

runner = CliRunner()
EPISODE = 1


def _chunk(ep: Path, key: str) -> Path:
    return next(p for p in (ep / key / "c").rglob("*") if p.is_file())


def _edit_json(path: Path, **changes: object) -> None:
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def _flip(path: Path, at: float) -> None:
    data = bytearray(path.read_bytes())
    data[int(at * (len(data) - 1))] ^= 0x10
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "flipped byte mid-chunk": lambda ep: _flip(_chunk(ep, "obs/ee_pos"), 0.5),
    "flipped last byte": lambda ep: _flip(_chunk(ep, "action/executed"), 1.0),
    "flipped header byte": lambda ep: _flip(_chunk(ep, "reward"), 0.0),
    "truncated chunk": lambda ep: _chunk(ep, "obs/ee_pos").write_bytes(_chunk(ep, "obs/ee_pos").read_bytes()[:20]),
    "emptied chunk": lambda ep: _chunk(ep, "action/executed").write_bytes(b""),
    "deleted chunk (reads back as zeros)": lambda ep: _chunk(ep, "obs/target_pos").unlink(),
    "chunk swapped in from another episode": lambda ep: shutil.copy(
        _chunk(ep.parent / "ep_000000", "obs/ee_pos"), _chunk(ep, "obs/ee_pos")
    ),
    "deleted array": lambda ep: shutil.rmtree(ep / "action" / "executed"),
    "garbled array metadata": lambda ep: (ep / "reward" / "zarr.json").write_text("{garbage"),
    "array metadata: another dtype": lambda ep: _edit_json(ep / "reward" / "zarr.json", data_type="int32"),
    "array metadata: another fill value, chunk deleted": lambda ep: (
        _edit_json(ep / "obs" / "ee_pos" / "zarr.json", fill_value=1.0),
        _chunk(ep, "obs/ee_pos").unlink(),
    ),
    "episode length edited": lambda ep: _edit_json(
        ep / "zarr.json",
        attributes={
            **json.loads((ep / "zarr.json").read_text())["attributes"],
            "length": json.loads((ep / "zarr.json").read_text())["attributes"]["length"] + 3,
        },
    ),
}


@pytest.fixture
def intact(small_reach_policy: tuple[Path, Path]) -> tuple[Path, Path]:
    checkpoint, demos = small_reach_policy
    return demos, checkpoint


def test_an_intact_dataset_verifies(intact: tuple[Path, Path]) -> None:
    demos, _ = intact
    assert Dataset(demos).verify() == {}
    result = runner.invoke(app, ["dataset", "verify", str(demos), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["corrupt"] == 0
    assert runner.invoke(app, ["dataset", "info", str(demos)]).exit_code == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_every_corruption_is_refused_naming_the_episode(
    intact: tuple[Path, Path], tmp_path: Path, corruption: str
) -> None:
    demos, checkpoint = intact
    bad = tmp_path / "demos"
    shutil.copytree(demos, bad)
    CORRUPTIONS[corruption](bad / "episodes" / f"ep_{EPISODE:06d}")
    name = f"episode {EPISODE}"

    with pytest.raises(DatasetError, match=name):
        Dataset(bad).require_intact()
    verify = runner.invoke(app, ["dataset", "verify", str(bad), "--json"])
    assert verify.exit_code == 1 and list(json.loads(verify.stdout)["problems"]) == [str(EPISODE)]
    info = runner.invoke(app, ["dataset", "info", str(bad)])
    assert info.exit_code == 2 and f"{EPISODE}: its array" in info.output and "Traceback" not in info.output
    pre = runner.invoke(
        app,
        [
            "pretrain",
            "--dataset",
            str(bad),
            "--policy",
            "gaussian",
            "--out",
            str(tmp_path / "p"),
            "--set",
            "train.steps=2",
            "--set",
            "train.eval_every=0",
        ],
    )
    assert pre.exit_code == 2 and name in pre.output and "corrupt" in pre.output, pre.output
    fine = runner.invoke(
        app,
        [
            "finetune",
            "--robot",
            "sim",
            "--checkpoint",
            str(checkpoint),
            "--demos",
            str(bad),
            "--out",
            str(tmp_path / "f"),
            "--env-steps",
            "10",
            "--set",
            "finetune.num_envs=1",
            "--set",
            "finetune.subprocess_envs=false",
        ],
    )
    assert fine.exit_code == 2 and name in fine.output and "corrupt" in fine.output, fine.output
