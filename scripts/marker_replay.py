"""Record marker detections of rendered lift episodes once, then replay the tracker on them offline (issue 19).

Rendering and detecting 640x480 frames is most of a marker step's cost; the tracker's choices (plausibility
checks, outlier rejection, lone squares, which cameras) only need the detections. `record` runs the scripted expert
(acting on the simulator's truth) with extra marker cameras and stores every step's detections, capture times, TCP
pose and the truth; `replay` runs `MarkerTracker.update_detections` over them for a camera subset and prints the
pose error (all fresh steps, and near the grasp: TCP within 6 cm of the object), the lost fraction and the rejection
reasons.

    python scripts/marker_replay.py record --out runs/m2/trace.pkl --episodes 30
    python scripts/marker_replay.py replay runs/m2/trace.pkl --cameras marker_front,marker_side
"""

from __future__ import annotations

import argparse
import collections
import json
import pickle
import sys
from pathlib import Path

import numpy as np

from inril_robot.config import CameraConfig, load_config
from inril_robot.hardware.scene import ObjectPose
from inril_robot.runtime.env import RobotEnv
from inril_robot.runtime.marker_state import base_from_tcp
from inril_robot.vision import markers as mk

EXTRA = {
    "marker_left": CameraConfig(
        name="marker_left", width=640, height=480, fovy_deg=42.0, pos=(0.55, 0.65, 0.5), lookat=(0.5, 0.0, 0.03)
    ),
    "marker_rear": CameraConfig(
        name="marker_rear", width=640, height=480, fovy_deg=42.0, pos=(0.25, 0.5, 0.25), lookat=(0.5, 0.0, 0.03)
    ),
    "marker_wrist": CameraConfig(name="marker_wrist", width=640, height=480, fovy_deg=58.0, mount="wrist"),
}
NEAR_M = 0.06


def record(out: Path, episodes: int, seed: int, noise: float) -> None:
    cfg = load_config(robot="sim", task="lift", overrides=["markers.enabled=true", f"task.expert_noise={noise}"])
    cfg = cfg.model_copy(
        update={"markers": cfg.markers.model_copy(update={"cameras": [*cfg.markers.cameras, *EXTRA.values()]})}
    )
    trace: dict = {"episodes": []}
    with RobotEnv(cfg) as env:
        src = env.marker_source
        trace["models"] = src.models
        trace["objects"] = src.tracker.objects
        for ep in range(episodes):
            env.reset(seed=seed + ep)
            steps, done = [], False
            while not done:
                state = env.robot.state()
                frames = {c.name: c.read_latest(max_age_s=1.0) for c in src.cameras}
                dets = src.tracker.detect({k: f.image for k, f in frames.items()})
                truth = env.robot.object_poses()["cube"]
                steps.append(
                    {
                        "t": {k: float(f.timestamp) for k, f in frames.items()},
                        "dets": {k: [(d.marker_id, d.corners) for d in v] for k, v in dets.items()},
                        "tcp": base_from_tcp(state),
                        "truth": (truth.pos.copy(), truth.quat.copy()),
                    }
                )
                _, _, success, truncated, _ = env.step(env.expert_action())
                done = success or truncated
            trace["episodes"].append(steps)
            print(f"episode {ep + 1}/{episodes}: {len(steps)} steps", file=sys.stderr, flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(pickle.dumps(trace))  # after every episode: replay works on a recording in progress


def replay(path: Path, cameras: list[str], **constants: float) -> dict:
    for name, value in constants.items():  # e.g. SQUARE_PX=1e9 turns a check off
        setattr(mk, name, value)
    trace = pickle.loads(path.read_bytes())
    models = {k: v for k, v in trace["models"].items() if k in cameras}
    tracker = mk.MarkerTracker(trace["objects"], models, "DICT_APRILTAG_36h11", 0.5)
    errs: dict[str, list[tuple[float, float]]] = {"fresh": [], "near_fresh": [], "near_observed": []}
    reasons: collections.Counter = collections.Counter()
    lost = total = unseen = 0
    for steps in trace["episodes"]:
        tracker.reset()
        for s in steps:
            dets = {k: ([mk.Detection(i, c) for i, c in s["dets"][k]], s["t"][k]) for k in cameras}
            est = tracker.update_detections(dets, s["tcp"]).get("cube")
            reasons.update(r.reason.split(" ")[0] if r.reason[0].isalpha() else r.reason for r in tracker.rejected)
            total += 1
            if est is None:
                unseen += 1
                continue
            truth = ObjectPose(*s["truth"])
            e = mk.pose_error(est.pose, truth)
            near = np.linalg.norm(s["tcp"][:3, 3] - truth.pos) < NEAR_M
            lost += est.lost
            if est.age_s == 0.0:
                errs["fresh"].append(e)
                if near:
                    errs["near_fresh"].append(e)
            if near:
                errs["near_observed"].append(e)
    out: dict = {"cameras": cameras, "steps": total, "no_pose": unseen, "lost_fraction": lost / max(total, 1)}
    for k, v in errs.items():
        if v:
            a = np.asarray(v)
            out[k] = {
                "steps": len(a),
                "pos_median_mm": round(float(np.median(a[:, 0])) * 1000, 2),
                "pos_p95_mm": round(float(np.percentile(a[:, 0], 95)) * 1000, 2),
                "rot_median_deg": round(float(np.degrees(np.median(a[:, 1]))), 2),
                "rot_p95_deg": round(float(np.degrees(np.percentile(a[:, 1], 95))), 2),
            }
    out["rejected"] = dict(reasons.most_common(8))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--episodes", type=int, default=30)
    r.add_argument("--seed", type=int, default=2000)
    r.add_argument("--noise", type=float, default=0.5)
    q = sub.add_parser("replay")
    q.add_argument("trace", type=Path)
    q.add_argument("--cameras", default="marker_front,marker_side")
    q.add_argument("--set", action="append", default=[], help="a markers.py constant, e.g. SQUARE_PX=2")
    a = p.parse_args()
    if a.cmd == "record":
        record(a.out, a.episodes, a.seed, a.noise)
    else:
        consts = {k: float(v) for k, v in (s.split("=") for s in a.set)}
        print(json.dumps(replay(a.trace, a.cameras.split(","), **consts)))


if __name__ == "__main__":
    main()
