#!/bin/bash
# The gripper test on franky-sim, RUNS times (default 6), while two busy loops load both cores (issue 14: the old
# driver's grasp_async/move_async blocked apply() here). Each run is killed after 100 s; a killed run prints nothing
# from pytest. Run from a checkout (PYTHONPATH set to it): scripts/gripper_load_repro.sh [RUNS]
RUNS=${1:-6}
BUSY=()
for _ in 1 2; do ( while :; do :; done ) & BUSY+=($!); done
trap 'kill "${BUSY[@]}" 2>/dev/null' EXIT
for i in $(seq 1 "$RUNS"); do
  start=$(date +%s)
  timeout 100 python3 -m pytest -q -p no:cacheprovider -o addopts="" --timeout 60 \
    "tests/test_franka.py::test_gripper_moves_without_blocking" 2>&1 | tail -1
  echo "run $i: $(( $(date +%s) - start )) s"
done
