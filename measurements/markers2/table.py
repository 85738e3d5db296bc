"""The lift table from `bench markers` JSON files (runs of some arms each, same seeds): success per arm with Wilson
intervals, paired counts, pose errors of the marker arms.

    python measurements/markers2/table.py measurements/markers2/bench_ab40.json measurements/markers2/bench_c40.json
"""

from __future__ import annotations

import json
import sys

from inril_robot.bench.markers import paired_counts


def main(paths: list[str]) -> None:
    arms: dict = {}
    for p in paths:
        with open(p) as f:
            run = json.load(f)
        for key, arm in run["arms"].items():
            arms[key] = {**arm, "seed": run["seed"], "episodes": run["episodes"]}
    if len({(a["seed"], a["episodes"]) for a in arms.values()}) > 1:
        sys.exit("the runs do not share seeds and episode counts: no pairing")
    print("| arm | success | position p95 near grasp (fresh / observed) | rotation p95 near grasp | lost |")
    print("|---|---|---|---|---|")
    for key in sorted(arms):
        a = arms[key]
        s = a["success"]
        rate = f"{s['rate']:.0%} [{s['ci95_low']:.0%}, {s['ci95_high']:.0%}] ({s['successes']}/{s['trials']})"
        row = f"| {key}: {a['label']} | {rate} |"
        if "pose_error_near_fresh" in a:
            nf, no = a["pose_error_near_fresh"], a["pose_error_near_observed"]
            nan = float("nan")
            row += f" {nf.get('position_p95_mm', nan):.1f} / {no.get('position_p95_mm', nan):.1f} mm |"
            row += f" {nf.get('rotation_p95_deg', nan):.1f} / {no.get('rotation_p95_deg', nan):.1f} deg |"
            row += f" {a['lost_fraction']:.1%} |"
        else:
            row += " (simulator's poses) | | |"
        print(row)
    print()
    print(json.dumps(paired_counts({k: a["successes"] for k, a in arms.items()})))
    for key in sorted(arms):
        if "pose_error_fresh" in arms[key]:
            print(key, {k: arms[key][k] for k in arms[key] if k.startswith("pose_error") or k == "rejected_markers"})


if __name__ == "__main__":
    main(sys.argv[1:])
