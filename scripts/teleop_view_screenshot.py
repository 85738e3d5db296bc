"""Write docs/img/teleop_view.png: the operator's view while recording lift demos in simulation (the scene, the
front and wrist cameras, positions, and the keep/discard prompt of an episode that hit its time limit).

    PYTHONPATH=. python3 scripts/teleop_view_screenshot.py [OUT.png]
"""

from __future__ import annotations

import sys
from pathlib import Path

import inril_robot.drivers.sim  # noqa: F401 - GL backend before mujoco
from inril_robot.config import load_config
from inril_robot.runtime.collect import CollectStatus
from inril_robot.runtime.env import RobotEnv
from inril_robot.runtime.teleop_view import TeleopView, write_png


def main(out: Path) -> None:
    cfg = load_config(robot="sim", task="lift", cameras="sim_front_wrist")
    with RobotEnv(cfg) as env:
        env.reset(seed=3)
        for _ in range(25):  # the expert approaches the cube: the arm is mid-way, the gripper open
            env.step(env.expert_action())
        status = CollectStatus(target=20, kept=4, discarded=1, episode_index=5, step=cfg.task.max_steps)
        prompt = "episode 5 over: failed (time limit) - press k to keep, x to discard"
        view = TeleopView(height=360)
        try:
            write_png(view.frame(env, status, prompt), out)
        finally:
            view.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs/img/teleop_view.png")
