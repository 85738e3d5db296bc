"""Resuming a run folder: run.yaml is compared with the resumed configuration; a field added to the configuration
since the run (absent from its run.yaml) takes its default, a real difference is refused."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from inril_robot.config import load_config
from inril_robot.learning.runs import RunFolder, RunFolderError

SECTIONS = ("policy", "finetune", "task")


def _started(out: Path, overrides: list[str]) -> None:
    cfg = load_config(robot="sim", task="reach", overrides=overrides)
    with RunFolder(out, cfg, False, ("step",), sections=SECTIONS, tensorboard=False) as run:
        run.start(cfg, up_to_step=0)


def _drop(out: Path, *paths: str) -> None:
    """run.yaml as an older version wrote it: without these fields."""
    stored = yaml.safe_load((out / "run.yaml").read_text())
    for path in paths:
        *parents, leaf = path.split(".")
        node = stored
        for p in parents:
            node = node[p]
        del node[leaf]
    (out / "run.yaml").write_text(yaml.safe_dump(stored))


def _resume(out: Path, overrides: list[str]) -> RunFolder:
    cfg = load_config(robot="sim", task="reach", overrides=overrides)
    return RunFolder(out, cfg, True, ("step",), sections=SECTIONS, tensorboard=False)


@pytest.mark.timeout(30)
def test_fields_added_since_the_run_take_their_defaults_and_are_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    _started(out, [])
    _drop(out, "finetune.offpolicy.capacity", "finetune.async_learner", "policy.horizon")
    with caplog.at_level(logging.WARNING, logger="inril_robot.learning.runs"):
        run = _resume(out, [])
    assert run.filled_defaults == ["policy.horizon", "finetune.async_learner", "finetune.offpolicy.capacity"]
    (line,) = [r.getMessage() for r in caplog.records]
    assert "policy.horizon, finetune.async_learner, finetune.offpolicy.capacity" in line and "default" in line


@pytest.mark.timeout(30)
def test_a_missing_field_the_resumed_run_sets_otherwise_and_a_real_difference_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _started(out, ["finetune.offpolicy.capacity=5000"])
    _drop(out, "finetune.offpolicy.utd")
    with pytest.raises(RunFolderError, match=r"finetune\.offpolicy\.utd was 1\.0 in that run, this run asks 3\.0"):
        _resume(out, ["finetune.offpolicy.capacity=5000", "finetune.offpolicy.utd=3"])
    with pytest.raises(RunFolderError, match=r"finetune\.offpolicy\.capacity was 5000 in that run, this run asks"):
        _resume(out, [])
    assert _resume(out, ["finetune.offpolicy.capacity=5000"]).filled_defaults == ["finetune.offpolicy.utd"]
