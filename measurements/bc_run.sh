#!/bin/bash
# usage: bc_run.sh NAME POLICY STEPS [extra --set ...]
# runs a frozen copy of the code (SNAP, default /tmp/h19a_snap) so edits to the worktree cannot break a running job
# images-only lift BC (front + wrist 64 px + proprio), 1 torch thread, eval on held-out seeds
set -e
cd /work/wt/h19a
export PYTHONPATH=${SNAP:-/tmp/h19a_snap} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
NAME=$1; POLICY=$2; STEPS=$3; shift 3
S="--set cameras.front.width=64 --set cameras.front.height=64 --set cameras.wrist.width=64 --set cameras.wrist.height=64"
exec nice -n 5 inril-robot pretrain --dataset measurements/demos_lift64 --out measurements/$NAME --policy $POLICY \
  --cameras sim_front_wrist $S --set task.observation=image --steps $STEPS --set train.batch_size=64 \
  --set train.eval_every=$((STEPS/2)) --set train.eval_episodes=20 --set train.checkpoint_every=500 "$@" --json
