#!/bin/bash
# One lane of the IDQL-from-a-weaker-BC measurement (issue 18): for each seed, the run's step-0 policy (BC actor, fresh
# critics: `step0.py`) and its held-out success acting as deployed; the 10,000-env-step IDQL run; the held-out success
# of its last.pt acting as deployed and of its actor alone (eta 1).
# usage: lane.sh M SEPARATION SEED...   (run from the repo root with PYTHONPATH set; R, BC, DEMOS override the paths;
# EXTRA: more finetune options, e.g. "--set finetune.offpolicy.eval_every_env_steps=0" (evaluate at the end only);
# SKIP_STEP0=1: leave the step-0 evaluation to another process)
R=${R:-/work/idql_runs2}
BC=${BC:-/work/idql_runs/diff3k/last.pt}
DEMOS=${DEMOS:-/work/idql_runs/demos}
D=measurements/idql_lift2
m=$1; sep=$2; shift 2
for s in "$@"; do
  out=$R/idql_m${m}_s$s
  # the step-0 policy depends on the seed only (the same bytes for every m): evaluated in the m=0 lane
  if [ "$m" = 0 ] && [ -z "$SKIP_STEP0" ] && [ ! -f $R/step0_s$s.json ]; then
    echo "$(date -u +%T) step0 seed $s"
    python $D/step0.py $BC $s $R/step0_s$s.pt > /dev/null && python $D/heldout.py $R/step0_s$s.pt 100 $R/step0_s$s.json deployed
  fi
  if [ ! -f $out/last.train.pt ] || ! grep -q last_checkpoint $out.log 2>/dev/null; then
    echo "$(date -u +%T) run $out"
    inril-robot finetune --robot sim --task lift --algo idql --checkpoint $BC --demos $DEMOS \
      --out $out --il-every $m --separation $sep --env-steps 10000 --seed $s \
      --set finetune.offpolicy.demo_fraction=0 $EXTRA --json > $out.log 2>&1
  fi
  echo "$(date -u +%T) heldout $out"
  python $D/heldout.py $out/last.pt 100 $out.heldout.json deployed diffusion_eta1
  echo "$(date -u +%T) done $out"
done
