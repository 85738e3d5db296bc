#!/bin/bash
# usage: bc.sh DEMOS OUT STEPS [extra --set ...]
# images-only lift BC in the real-like cell (front + wrist 64 px + proprio), Gaussian, batch 64, 1 torch thread,
# no in-training evaluation (its seeds are the held-out ones): last.pt is what gets evaluated.
# SNAP: a frozen copy of the code (default: this worktree) so edits cannot change a running job.
set -e
export PYTHONPATH=${SNAP:-$(cd "$(dirname "$0")/../.." && pwd)} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
DEMOS=$1; OUT=$2; STEPS=$3; shift 3
S="--set cameras.front.width=64 --set cameras.front.height=64 --set cameras.wrist.width=64 --set cameras.wrist.height=64"
exec nice -n 5 python3 -m inril_robot.cli pretrain --dataset "$DEMOS" --out "$OUT" --policy gaussian \
  --cameras sim_front_wrist $S --set cell=real-like --set task.observation=image --steps "$STEPS" \
  --set train.batch_size=64 --set train.eval_every=0 --set train.checkpoint_every=500 --set train.num_threads=1 "$@" --json
