"""`inril-robot collect`, `dataset` and `safety-check` end to end, in process, against the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from inril_robot.cli import app
from inril_robot.data.store import array_checksum

runner = CliRunner()
SMALL_CAMERA = ["--cameras", "sim_front", "--set", "cameras.front.width=48", "--set", "cameras.front.height=48"]


def invoke(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, [*args, "--json"])
    payload = json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else {}
    return result.exit_code, payload


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demos") / "lift"
    code, payload = invoke("collect", "--task", "lift", "--episodes", "3", "--out", str(out), *SMALL_CAMERA)
    assert code == 0, payload
    assert payload["kept"] == 3 and not payload["interrupted"]
    return out


def test_collect_then_info_shows_the_episodes(demos: Path) -> None:
    code, info = invoke("dataset", "info", str(demos))
    assert code == 0
    assert info["episodes"] == 3 and info["successes"] == 3 and info["cameras"] == {"front": [48, 48]}
    assert "front_rgb" in info["observation_keys"]


def test_view_writes_a_playable_video(demos: Path, tmp_path: Path) -> None:
    code, payload = invoke("dataset", "view", str(demos), "--episode", "1", "--out", str(tmp_path / "ep.mp4"))
    assert code == 0
    cap = cv2.VideoCapture(payload["out"])
    assert cap.isOpened() and cap.get(cv2.CAP_PROP_FRAME_COUNT) > 5
    ok, frame = cap.read()
    assert ok and frame.std() > 5


def test_stats_and_recorded_fields(demos: Path) -> None:
    code, payload = invoke("dataset", "stats", str(demos))
    assert code == 0 and "action/executed" in payload["keys"] and (demos / "stats.json").exists()
    from inril_robot.data import Dataset

    ep = Dataset(demos)[0]
    assert ep.meta["authority"][0]["to_state"] == "policy"  # reset -> policy (the scripted expert drives)
    assert ep.load("state/joint_pos").shape == (ep.length, 7)
    assert np.all(ep.load("control") == 2)  # scripted


def test_resume_appends_only_what_is_missing(demos: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(demos, copy)
    code, payload = invoke("collect", "--task", "lift", "--episodes", "4", "--out", str(copy), *SMALL_CAMERA)
    assert code == 0 and payload["kept_before"] == 3 and payload["kept"] == 1


def test_contract_mismatch_is_refused_naming_the_field(demos: Path) -> None:
    result = runner.invoke(
        app,
        [
            "collect",
            "--task",
            "lift",
            "--episodes",
            "5",
            "--out",
            str(demos),
            "--cameras",
            "sim_front",
            "--set",
            "cameras.front.width=64",
            "--set",
            "cameras.front.height=48",
        ],
    )
    assert result.exit_code == 2
    assert "observations.front_rgb.shape" in result.output


def test_safety_check_passes_clean_data_and_finds_a_planted_violation(demos: Path, tmp_path: Path) -> None:
    import shutil

    code, report = invoke("safety-check", str(demos))
    assert code == 0 and report["ok"] and report["steps"] > 0
    planted = tmp_path / "planted"
    shutil.copytree(demos, planted)
    executed = zarr.open_array(str(planted / "episodes" / "ep_000001" / "action" / "executed"), mode="r+")
    bad = executed[4]
    bad[0] = 0.2  # 20 cm in one 10 Hz step: ten times the sim's max_step
    executed[4] = bad
    # as if recorded that way (an older envelope let it through): the episode's stored checksum matches the data,
    # otherwise the reader refuses the episode as corrupt before any replay
    meta_file = planted / "episodes" / "ep_000001" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["checksums"]["action/executed"] = array_checksum(np.asarray(executed[...]))
    meta_file.write_text(json.dumps(meta))
    code, report = invoke("safety-check", str(planted))
    assert code == 1 and not report["ok"]
    assert [(v["episode"], v["step"]) for v in report["violations"]] == [(1, 4)]
    assert report["violations"][0]["limit"] in {"max_step", "max_ee_speed"}
    code, only_other = invoke("safety-check", str(planted), "--episode", "0")
    assert code == 0 and only_other["episodes"] == 1


def test_collect_records_the_calibration_files_it_was_taken_with(tmp_path: Path) -> None:
    from inril_robot.config import load_config
    from inril_robot.data import Dataset
    from inril_robot.runtime.collect import collect
    from inril_robot.runtime.env import RobotEnv
    from inril_robot.runtime.registry import make_teleop
    from tests.test_sim2real import front_calibration

    calib = front_calibration(tmp_path / "front.yaml")
    cfg = load_config(
        robot="sim",
        task="reach",
        cameras="sim_front",
        overrides=[f"cameras.front.calibration={calib}", "cameras.front.width=32", "cameras.front.height=32"],
    )
    with RobotEnv(cfg) as env:
        collect(cfg, tmp_path / "demos", 1, env, make_teleop(cfg, env))
    recorded = Dataset(tmp_path / "demos").info["calibration"]
    assert recorded.startswith(f"front={calib}#sha256:")
    calib.write_text(calib.read_text() + "# re-solved in place\n")
    cfg.cameras[0].calibration = str(calib)
    from inril_robot.data.provenance import calibration_field

    assert calibration_field(cfg) != recorded  # a changed file is a different calibration
