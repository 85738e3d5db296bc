"""The operator's view while recording (scene, cameras, positions, prompt) and keep/discard at every episode end."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

import inril_robot.drivers.sim  # noqa: F401 - GL backend before mujoco
from inril_robot.cli import app
from inril_robot.config import load_config
from inril_robot.hardware import Teleop, TeleopCommand
from inril_robot.runtime.collect import CollectStatus, collect
from inril_robot.runtime.env import RobotEnv
from inril_robot.runtime.teleop_view import TeleopView, ViewServer, panel_lines


class IdleOperator(Teleop):
    """Presses nothing during the episode (it runs into its time limit), then answers keep or discard."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = list(answers)
        self.waiting = False

    def read(self) -> TeleopCommand:
        if not self.waiting:
            return TeleopCommand()
        answer = self.answers.pop(0)
        self.waiting = False
        return TeleopCommand(keep=answer == "keep", discard=answer == "discard")

    def close(self) -> None:
        pass


@pytest.mark.timeout(120)
def test_time_limit_asks_keep_or_discard_and_the_view_shows_it(tmp_path: Path) -> None:
    cfg = load_config(robot="sim", task="reach", overrides=["teleop.kind=keyboard", "task.max_steps=4"])
    operator = IdleOperator(["discard", "keep"])
    prompts: list[str] = []
    view = TeleopView(height=120)
    frames: list[np.ndarray] = []

    def on_update(status: CollectStatus) -> None:
        if "press k" in status.last and not operator.waiting:
            prompts.append(status.last)
            frames.append(view.frame(env, status, status.last))
            operator.waiting = True  # the operator reads the prompt and answers

    with RobotEnv(cfg) as env:
        result = collect(cfg, tmp_path / "demos", 1, env, operator, on_update=on_update, pace=False)
    view.close()
    assert result.kept == 1 and result.discarded == 1  # the first time-limited episode discarded, then one kept
    assert len(prompts) == 2 and all("failed (time limit)" in p and "x to discard" in p for p in prompts)
    assert frames[0].shape[0] == 120 and frames[0].shape[1] > 300  # the workspace view beside the panel


def test_panel_names_positions_and_distance(make_env) -> None:  # make_env: conftest fixture
    env = make_env("reach")
    env.reset(seed=0)
    lines = panel_lines(env, CollectStatus(target=3, step=5))
    text = "\n".join(lines)
    assert "EE     x" in text and "target x" in text and "step 5/50" in text
    distance = np.linalg.norm(env.robot.object_poses()["target"].pos - env.robot.state().ee_pos) * 100
    assert f"distance to EE {distance:.1f} cm" in text


def test_view_server_serves_page_and_frame() -> None:
    server = ViewServer(0)
    try:
        frame = np.zeros((40, 60, 3), np.uint8)
        frame[:, 30:] = (255, 0, 0)
        server.publish(frame)
        page = urllib.request.urlopen(server.url, timeout=10).read()
        assert b"frame.jpg" in page
        jpeg = urllib.request.urlopen(server.url + "frame.jpg", timeout=10).read()
        decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert decoded.shape == (40, 60, 3) and decoded[20, 50, 2] > 200  # red on the right (BGR)
    finally:
        server.close()


@pytest.mark.timeout(120)
def test_collect_view_png(tmp_path: Path) -> None:
    png = tmp_path / "view.png"
    result = CliRunner().invoke(
        app,
        [
            "collect",
            "--task",
            "reach",
            "--episodes",
            "1",
            "--out",
            str(tmp_path / "d"),
            "--view",
            "--view-port",
            "0",
            "--view-png",
            str(png),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "view: http://127.0.0.1:" in result.output
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] == 360 and image.std() > 10
