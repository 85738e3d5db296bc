"""Table of the IDQL lift measurement from the held-out JSONs (heldout_idql.py) and the runs' result JSON (log tail).

usage: python summarize.py RUNS_DIR  -> prints markdown rows and writes summary.json next to this file
"""

import json
import sys
from pathlib import Path

R = Path(sys.argv[1])
MODES = ("diffusion_det", "diffusion_sto", "idql_det", "idql_explore")


def cell(r: dict) -> str:
    s = r["success"]
    return f"{s['successes']}/{s['trials']} [{100 * s['ci95_low']:.0f}, {100 * s['ci95_high']:.0f}]"


rows = {}
bc = json.loads((R / "bc10k_heldout100.json").read_text())
rows["bc_diffusion_10k"] = {m: bc[m]["success"] for m in MODES if m in bc}
print("| policy | " + " | ".join(MODES) + " | in-run eval 0 -> 10k (32 eps) | wall s |")
print("|---|" + "---|" * (len(MODES) + 2))
print("| diffusion BC (10k steps) | " + " | ".join(cell(bc[m]) if m in bc else "—" for m in MODES) + " | | |")
for run in sorted(R.glob("idql_m*_s*/heldout100.json")):
    name = run.parent.name
    h = json.loads(run.read_text())
    log = (R / f"{name}.log").read_text()
    res = json.loads(log[log.index('{"') :])
    evals = " -> ".join(f"{100 * e['success_rate']:.0f}" for e in res["evals"])
    rows[name] = {m: h[m]["success"] for m in MODES} | {"evals": res["evals"], "wall_s": res["wall_s"]}
    rows[name]["env_steps"] = res["env_steps"]
    print(
        f"| {name} ({res['env_steps']} steps) | "
        + " | ".join(cell(h[m]) for m in MODES)
        + f" | {evals} | {res['wall_s']:.0f} |"
    )
(Path(__file__).parent / "summary.json").write_text(json.dumps(rows, indent=1))
