#!/bin/bash
# What scripts/device_run.sh starts from, made here and packed into .devcarry/devrun.tgz (ignored by git):
#   .devrun/pegB/peg/{pretrained,pretrained_diffusion}: bench sample-efficiency regime B on peg (100 scripted demos at
#     noise 0.2, Gaussian BC 300 steps, diffusion BC 2,000 steps) with their held-out evaluations cached;
#   .devrun/lift/pretrained/{demos,pretrain}: the quickstart's lift demos and Gaussian BC (the bridge run's policy).
# Each stage resumes. About 30-40 min on 2 quiet cores (peg demos and the held-out evaluations dominate).
set -euo pipefail
cd "$(dirname "$0")/.."
EXCLUDE="$(git rev-parse --git-common-dir)/info/exclude"
for d in /.devrun/ /.devcarry/; do grep -qx "$d" "$EXCLUDE" 2>/dev/null || echo "$d" >>"$EXCLUDE"; done
# regime B's preparation, then no run: --report-only stops with "no finished runs" once the checkpoints are made
python3 -m inril_robot.cli bench sample-efficiency --regime B --task peg --arm idql --seeds 1 --out .devrun/pegB \
  --report-only || true
python3 - <<'PY'
from pathlib import Path
from inril_robot.cli.quickstart import prepare_pretrained, quickstart_config
prepare_pretrained(quickstart_config("lift", 0.5, 2000, []), Path(".devrun/lift/pretrained"), 50, print)
PY
mkdir -p .devcarry
tar czf .devcarry/devrun.tgz --exclude='events.*' .devrun/pegB/peg/pretrained .devrun/pegB/peg/pretrained_diffusion \
  .devrun/lift/pretrained
du -sh .devcarry/devrun.tgz
