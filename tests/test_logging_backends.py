"""Run logs in the tools people use: TensorBoard reads the event files, wandb mirrors them (offline mode)."""

from __future__ import annotations

from pathlib import Path

import pytest

from inril_robot.reporting.tb import TBWriter


def test_tensorboard_reads_the_event_files(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with TBWriter(tmp_path) as tb:
        for step in range(5):
            tb.add_scalars({"train/loss": 1.0 / (step + 1), "eval/success": step / 4}, step * 10)
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"train/loss", "eval/success"}
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [0, 10, 20, 30, 40]
    assert loss[-1].value == pytest.approx(0.2)


@pytest.mark.timeout(120)
def test_wandb_offline_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("INRIL_WANDB", "inril-test")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.yaml").write_text("seed: 3\n")
    with TBWriter(run) as tb:
        assert tb._wandb is not None and tb._wandb.config["seed"] == 3
        for step in range(5):
            tb.add_scalars({"train/loss": 1.0 / (step + 1)}, step)
    (record,) = run.glob("wandb/offline-run-*/run-*.wandb")
    assert record.read_bytes().count(b"train/loss") >= 5  # one history row per add_scalars
    monkeypatch.delenv("INRIL_WANDB")
    with TBWriter(tmp_path / "plain") as tb:
        assert tb._wandb is None
