#!/bin/bash
# usage: train_arm.sh NAME [--set markers.enabled=true]
# the quickstart's lift BC recipe (50 scripted demos at expert noise 0.5, seed 0; 2000 Gaussian BC steps);
# extra --set arguments apply to both collect and pretrain (markers.enabled=true: demos hold marker-estimated poses)
set -e
# runs a frozen copy of the code (SNAP) so edits to the worktree cannot break a running job
export PYTHONPATH=${SNAP:-$PWD}
NAME=$1; shift
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
O=runs/m2/$NAME
nice -n 5 inril-robot collect --task lift --out $O/demos --episodes 50 --seed 0 --set task.expert_noise=0.5 "$@" --json
nice -n 5 inril-robot pretrain --dataset $O/demos --out $O/pretrain --policy gaussian --steps 2000 \
  --set task.expert_noise=0.5 --set train.eval_every=1000 --set train.checkpoint_every=1000 \
  --set train.eval_episodes=20 "$@" --json
