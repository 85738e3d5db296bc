"""Merge demo datasets collected in parallel (seed ranges of one `collect`) into one, episodes renumbered in order.

    python measurements/markers2/merge_demos.py OUT PART [PART ...]

Each part was `inril-robot collect --seed 1000*FIRST --episodes N ...`, so episode i of a part has the seed that
episode FIRST+i of a single collect would have had (`seed + 1000 * index + attempt`).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from inril_robot.data.store import Dataset


def main(out: Path, parts: list[Path]) -> None:
    if out.exists():
        sys.exit(f"{out} exists; merge into a new folder")
    first = Dataset(parts[0])
    for p in parts[1:]:
        if Dataset(p).contract != first.contract:
            sys.exit(f"{p}: another contract than {parts[0]}")
    (out / "episodes").mkdir(parents=True)
    shutil.copy(parts[0] / "dataset.json", out / "dataset.json")
    index = 0
    for p in parts:
        for ep in Dataset(p).episodes:
            dest = out / "episodes" / f"ep_{index:06d}"
            shutil.copytree(ep.path, dest)
            meta_file = dest / "zarr.json"
            meta = json.loads(meta_file.read_text())
            meta["attributes"]["index"] = index
            meta_file.write_text(json.dumps(meta))
            index += 1
    merged = Dataset(out)
    merged.require_intact()
    print(json.dumps({"out": str(out), "episodes": len(merged), "steps": merged.num_steps}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
