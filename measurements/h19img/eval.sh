#!/bin/bash
# usage: eval.sh CHECKPOINT OUTDIR SEED EPISODES [extra --set ...] — held-out eval, seeds SEED..SEED+EPISODES-1
set -e
export PYTHONPATH=${SNAP:-$(cd "$(dirname "$0")/../.." && pwd)} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
CK=$1; OUTD=$2; SEED=$3; N=$4; shift 4
exec nice -n 5 python3 -m inril_robot.cli eval --checkpoint "$CK" --out "$OUTD" --seed "$SEED" --episodes "$N" "$@" --json
