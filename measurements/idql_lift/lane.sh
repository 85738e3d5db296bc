#!/bin/bash
# One lane of the IDQL lift measurement: for each seed, the fine-tuning run (skipped if finished), then the held-out
# evaluation (100 episodes on HELDOUT seeds) of its diffusion policy and its implicit policy.
# usage: lane.sh M SEPARATION SEED...   (R=/work/idql_runs; run from the repo root with PYTHONPATH set)
R=${R:-/work/idql_runs}
m=$1; sep=$2; shift 2
for s in "$@"; do
  out=$R/idql_m${m}_s$s
  if [ ! -f $out/last.train.pt ] || ! grep -q last_checkpoint $out.log 2>/dev/null; then
    echo "$(date -u +%T) run $out"
    inril-robot finetune --robot sim --task lift --algo idql --checkpoint $R/diff10k/last.pt --demos $R/demos \
      --out $out --il-every $m --separation $sep --env-steps 10000 --seed $s \
      --set finetune.offpolicy.demo_fraction=0 --json > $out.log 2>&1
  fi
  echo "$(date -u +%T) heldout $out"
  python measurements/idql_lift/heldout_idql.py $out/run.yaml $out/last.pt $out/last.train.pt 100 $out/heldout100.json \
    > $out.heldout.log 2>&1
  echo "$(date -u +%T) done $out: $(tr '\n' ' ' < $out.heldout.log)"
done
