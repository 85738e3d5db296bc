"""One (arm, seed) of `inril-robot bench sample-efficiency --regime A --task lift --env-steps 10000 --set
finetune.offpolicy.eval_every_env_steps=2500` (same folder layout, overrides and held-out evaluation) with extra
overrides, so chosen seeds can run in parallel processes; `bench ... --report-only` over the same OUT summarises them.

PYTHONPATH=. python3 measurements/residual_lift/run_seed.py OUT ARM SEED [override ...]   (OUT/lift/pretrained)"""

import json
import sys
from pathlib import Path

import inril_robot.drivers.sim  # noqa: F401
from inril_robot.bench.sample_efficiency import run_arm
from inril_robot.data.store import Dataset


def main() -> None:
    out, arm, seed, extra = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    overrides = ["finetune.eval_episodes=50", "finetune.offpolicy.eval_every_env_steps=2500", *extra]
    pre = out / "lift" / "pretrained"
    heldout_pre = json.loads((pre / "pretrain" / "heldout.json").read_text())["result"]["success"]["rate"]
    folder = out / "lift" / arm.replace(" ", "_").replace("=", "") / f"seed{seed}"
    o = run_arm(
        "lift", arm, seed, pre / "pretrain" / "last.pt", Dataset(pre / "demos"), folder, 10_000, overrides, heldout_pre
    )
    print(json.dumps(o.row()), flush=True)


if __name__ == "__main__":
    main()
