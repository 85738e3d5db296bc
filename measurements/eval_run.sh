#!/bin/bash
# usage: eval_run.sh CHECKPOINT OUTDIR SEED EPISODES — held-out eval (seeds SEED..SEED+EPISODES-1), frozen code copy
set -e
cd /work/wt/h19a
export PYTHONPATH=${SNAP:-/tmp/h19a_snap} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
exec nice -n 5 inril-robot eval --checkpoint "$1" --out "$2" --seed "$3" --episodes "$4" --json
