"""Helpers of scripts/device_image_finetune.sh (issue 19's image measurement on a many-core GPU machine).

Subcommands (each prints one JSON object):
  rate OUT_JSON [--seconds S] [--set ...]       env steps/s of one real-like lift env with its cameras (expert actions)
  detector-data OUT --episodes N --seed S [--set ...]   labelled scripted episodes (half cut early: failures)
  merge OUT PART...                                     one episode store from parts recorded in parallel
  summary WORK OUT_DIR                                  the held-out results, paired, into summary.json + summary.md

Episode i of a part recorded with --seed S has seed S + i, so parts with seeds 0, 10, 20, ... of 10 episodes each
hold exactly the episodes one sequential `collect --seed 0` would.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

LIFT = ["cell=real-like", "task.observation=image"]


def _config(overrides: list[str]) -> Any:
    from inril_robot.config import load_config

    return load_config(robot="sim", task="lift", cameras="sim_front_wrist", overrides=LIFT + overrides)


def rate(out: Path, seconds: float, overrides: list[str]) -> dict[str, Any]:
    from inril_robot.runtime.env import RobotEnv

    env = RobotEnv(_config(overrides))
    env.reset(seed=0)
    steps = episodes = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, _ = env.step(env.expert_action())
        steps += 1
        if terminated or truncated:
            episodes += 1
            env.reset(seed=episodes)
    wall = time.perf_counter() - start
    env.close()
    result = {"steps": steps, "episodes": episodes, "wall_s": wall, "steps_per_s": steps / wall}
    out.write_text(json.dumps(result))
    return result


def detector_data(out: Path, episodes: int, seed: int, overrides: list[str]) -> dict[str, Any]:
    from inril_robot.bench.detector import record_labelled_episodes

    dataset = record_labelled_episodes(_config(overrides), out, episodes, seed=seed)
    return {"dataset": str(out), "episodes": len(dataset), "successes": sum(e.success for e in dataset.episodes)}


def merge(out: Path, parts: list[Path]) -> dict[str, Any]:
    """Copy the parts' committed episodes, renumbered in part order, into `out` (the first part's dataset.json)."""
    from inril_robot.data.store import Dataset

    if out.exists():
        raise SystemExit(f"merge: {out} exists; give a new folder")
    datasets = [Dataset(p) for p in parts]
    for d in datasets[1:]:
        d.contract.require_match(datasets[0].contract, context=f"merging {d.root} into {parts[0]}")
    (out / "episodes").mkdir(parents=True)
    shutil.copy2(parts[0] / "dataset.json", out / "dataset.json")
    index = 0
    for d in datasets:
        for episode in d.episodes:
            shutil.copytree(episode.path, out / "episodes" / f"ep_{index:06d}")
            index += 1
    merged = Dataset(out)
    merged.require_intact()
    return {"dataset": str(out), "episodes": len(merged), "steps": merged.num_steps}


def _heldout(folder: Path) -> dict[str, Any] | None:
    """Pooled success over the eval chunks in `folder`/*/eval.json (seed -> success), or None if none ran."""
    from inril_robot.reporting.rates import wilson_interval

    per_seed: dict[int, bool] = {}
    for path in sorted(folder.glob("*/eval.json")):
        for ep in (_read_json(path) or {}).get("per_episode", []):
            per_seed[int(ep["seed"])] = bool(ep["success"])
    if not per_seed:
        return None
    return {"per_seed": per_seed, **wilson_interval(sum(per_seed.values()), len(per_seed)).to_dict()}


def _read_json(path: Path) -> Any:
    """A stage's JSON output, or None where the stage did not finish (missing, empty or cut file)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def summary(work: Path, out_dir: Path) -> dict[str, Any]:
    from inril_robot.reporting.rates import wilson_interval

    result: dict[str, Any] = {"stages_s": {}, "heldout": {}, "paired": {}}
    timings = work / "stages.tsv"
    if timings.is_file():
        for line in timings.read_text().splitlines():
            name, seconds = line.split("\t")
            result["stages_s"][name] = float(seconds)
    for name in ("rate", "detector", "settings"):
        result[name] = _read_json(work / f"{name}.json")
    for arm in sorted(p.name for p in (work / "eval").iterdir() if p.is_dir()) if (work / "eval").is_dir() else []:
        pooled = _heldout(work / "eval" / arm)
        if pooled is not None:
            result["heldout"][arm] = pooled
    arms = result["heldout"]
    for a, b in (("ft_sim", "ft_detector"), ("bc", "ft_sim"), ("bc", "ft_detector"), ("bc_shift4", "bc")):
        if a in arms and b in arms:
            seeds = sorted(set(arms[a]["per_seed"]) & set(arms[b]["per_seed"]))
            only_a = sum(arms[a]["per_seed"][s] and not arms[b]["per_seed"][s] for s in seeds)
            only_b = sum(arms[b]["per_seed"][s] and not arms[a]["per_seed"][s] for s in seeds)
            result["paired"][f"{a}_vs_{b}"] = {"seeds": len(seeds), f"only_{a}": only_a, f"only_{b}": only_b}
    for run in ("ft_sim", "ft_detector"):
        payload = _read_json(work / f"{run}.json")
        result[run] = {k: v for k, v in payload.items() if not isinstance(v, list | dict)} if payload else None
    lines = ["| arm | held-out success | Wilson 95% |", "|---|---|---|"]
    for arm, r in arms.items():
        w = wilson_interval(r["successes"], r["trials"])
        lines.append(f"| {arm} | {r['successes']}/{r['trials']} = {w.value:.0%} | [{w.low:.0%}, {w.high:.0%}] |")
    lines += ["", "paired: " + json.dumps(result["paired"]), "stages [s]: " + json.dumps(result["stages_s"])]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(result, indent=1))
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    return {k: v for k, v in result.items() if k != "heldout"} | {
        "heldout": {a: {k: v for k, v in r.items() if k != "per_seed"} for a, r in arms.items()}
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("rate")
    p.add_argument("out", type=Path)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--set", action="append", default=[])
    p = sub.add_parser("detector-data")
    p.add_argument("out", type=Path)
    p.add_argument("--episodes", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--set", action="append", default=[])
    p = sub.add_parser("merge")
    p.add_argument("out", type=Path)
    p.add_argument("parts", type=Path, nargs="+")
    p = sub.add_parser("summary")
    p.add_argument("work", type=Path)
    p.add_argument("out_dir", type=Path)
    a = parser.parse_args(argv)
    if a.cmd == "rate":
        result = rate(a.out, a.seconds, a.set)
    elif a.cmd == "detector-data":
        result = detector_data(a.out, a.episodes, a.seed, a.set)
    elif a.cmd == "merge":
        result = merge(a.out, a.parts)
    else:
        result = summary(a.work, a.out_dir)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
