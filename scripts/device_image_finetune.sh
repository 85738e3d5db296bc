#!/bin/bash
# Issue 19's image measurement on lift in the real-like cell (front + wrist cameras at 64 px + proprioception, no
# privileged state), end to end, sized for a 16-core machine with an NVIDIA GPU in under 8 minutes:
#   1. 100 scripted demos (parallel collects, seeds 0..99) + labelled detector episodes (parallel) + env steps/s probe
#   2. image BC (Gaussian, 1,500 steps, batch 64) without random shift (the default, 0) and with DrQ's 4 px, on the GPU
#      + the success detector trained on the detector episodes
#   3. PPO fine-tuning of the BC policy twice from the same seed: reward from the simulator's success (the scripted
#      operator) vs reward from the success detector; the env-step budget is sized from the measured steps/s
#   4. held-out evaluations, 100 seeds each (EVAL_SEED_BASE + i, never a demo's), of bc, bc_shift4, ft_sim,
#      ft_detector, always judged by the simulator's success; then summary.json / summary.md
# Results: at most 6 files in $OUT (summary.json, summary.md, log.txt, detector.json, ft_sim.csv, ft_detector.csv).
#
# Run from the repository root:   OUT=/some/dir bash scripts/device_image_finetune.sh
# Knobs (env): TOTAL=450 (s: the fine-tuning time box shrinks so that the whole run ends near it) DEMOS=100 BC_STEPS=1500 FT_SECONDS=150 HELDOUT=100 DET_EPISODES=80 DET_STEPS=600 JOBS=$(nproc) PX=64
#   DEVICE=cuda (torch: cuda or cpu) FT_NUM_ENVS=7 (per fine-tuning; two run at once) IL_EVERY=0 (PPO, RL only)
#   WORK=/tmp/h19dev (scratch; wiped) MUJOCO_GL=egl FT_MIN_STEPS=500 FT_SETS="" (more --set for both fine-tunings)
# A smoke run on a laptop: OUT=/tmp/x DEMOS=4 BC_STEPS=20 FT_SECONDS=1 FT_MIN_STEPS=40 HELDOUT=4 DET_EPISODES=8 DET_STEPS=20 \
#   JOBS=4 DEVICE=cpu FT_NUM_ENVS=1 FT_SETS="finetune.episodes_per_iteration=2 finetune.ppo.minibatch_size=16" bash ...
set -uo pipefail
: "${OUT:?set OUT to the folder for the results}"
DEMOS=${DEMOS:-100} BC_STEPS=${BC_STEPS:-1500} FT_SECONDS=${FT_SECONDS:-150} HELDOUT=${HELDOUT:-100} TOTAL=${TOTAL:-450}
DET_EPISODES=${DET_EPISODES:-80} DET_STEPS=${DET_STEPS:-600} JOBS=${JOBS:-$(nproc)} PX=${PX:-64} DEVICE=${DEVICE:-cuda}
FT_NUM_ENVS=${FT_NUM_ENVS:-7} IL_EVERY=${IL_EVERY:-0} WORK=${WORK:-/tmp/h19dev} FT_MIN_STEPS=${FT_MIN_STEPS:-500}
FT_EXTRA=()
for s in ${FT_SETS:-}; do FT_EXTRA+=(--set "$s"); done
export MUJOCO_GL=${MUJOCO_GL:-egl} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
HERE=$(dirname "$0")
rm -rf "$WORK" && mkdir -p "$WORK" "$OUT"
LOG="$OUT/log.txt"
CLI="python3 -m inril_robot.cli"
CAM=(--cameras sim_front_wrist)
for c in front wrist; do for d in width height; do CAM+=(--set "cameras.$c.$d=$PX"); done; done
CELL=(--set cell=real-like --set task.observation=image)
HELDOUT_SEED=1000000000  # inril_robot.core.seeds.EVAL_SEED_BASE
T0=$(date +%s)
say() { echo "[$(($(date +%s) - T0)) s] $*" | tee -a "$LOG"; }
stage_start=$T0
stage() { local now; now=$(date +%s); printf '%s\t%s\n' "$1" $((now - stage_start)) >>"$WORK/stages.tsv"; stage_start=$now; say "stage $1 done"; }
finish() {
  python3 "$HERE/device_image_finetune.py" summary "$WORK" "$OUT" >>"$LOG" 2>&1 || say "summary failed"
  for r in ft_sim ft_detector; do [ -f "$WORK/$r/metrics.csv" ] && cp "$WORK/$r/metrics.csv" "$OUT/$r.csv"; done
  [ -f "$WORK/detector.json" ] && cp "$WORK/detector.json" "$OUT/detector.json"
  say "total $(($(date +%s) - T0)) s; results in $OUT"
}
trap finish EXIT
say "jobs $JOBS, device $DEVICE, MUJOCO_GL $MUJOCO_GL, $(python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' 2>&1)"

# 1. demos, detector episodes and the steps/s probe, all at once
per=$(((DEMOS + 9) / 10))
parts=()
for ((s = 0; s < DEMOS; s += per)); do
  n=$((DEMOS - s < per ? DEMOS - s : per))
  timeout -s INT 200 $CLI collect --task lift --teleop scripted --episodes "$n" --seed "$s" --out "$WORK/demos_part$s" "${CAM[@]}" "${CELL[@]}" \
    --json >"$WORK/collect_$s.json" 2>>"$WORK/collect.err" &
  parts+=("$WORK/demos_part$s")
done
dparts=()
det_per=$(((DET_EPISODES + 3) / 4))
DSET=()
for c in front wrist; do for d in width height; do DSET+=(--set "cameras.$c.$d=$PX"); done; done
for ((k = 0; k < 4; k++)); do
  timeout -s INT 200 python3 "$HERE/device_image_finetune.py" detector-data "$WORK/det_part$k" --episodes "$det_per" --seed $((500000 + 1000 * k)) \
    "${DSET[@]}" >>"$LOG" 2>>"$WORK/detdata.err" &
  dparts+=("$WORK/det_part$k")
done
python3 "$HERE/device_image_finetune.py" rate "$WORK/rate.json" --seconds 15 "${DSET[@]}" >>"$LOG" 2>>"$WORK/rate.err" &
wait
python3 "$HERE/device_image_finetune.py" merge "$WORK/demos" "${parts[@]}" >>"$LOG" 2>&1 || { say "demos failed"; tail -5 "$WORK/collect.err" | tee -a "$LOG"; exit 1; }
python3 "$HERE/device_image_finetune.py" merge "$WORK/det_data" "${dparts[@]}" >>"$LOG" 2>&1 || say "detector data failed"
stage data

# 2. BC with and without random shift (paired: same demos, steps and seed) + the detector
bc() {  # name, extra args
  local name=$1; shift
  timeout -s INT 240 $CLI pretrain --dataset "$WORK/demos" --out "$WORK/$name" --policy gaussian "${CAM[@]}" "${CELL[@]}" --steps "$BC_STEPS" \
    --set train.batch_size=64 --set train.eval_every=0 --set train.checkpoint_every=500 --set train.device="$DEVICE" \
    --set train.num_threads=2 "$@" --json >"$WORK/$name.json" 2>"$WORK/$name.err" || say "BC $name failed: $(tail -2 "$WORK/$name.err")"
}
bc bc &
bc bc_shift4 --set policy.image.random_shift=4 &
OMP_NUM_THREADS=4 timeout -s INT 180 $CLI detector train --dataset "$WORK/det_data" --out "$WORK/detector.pt" --steps "$DET_STEPS" --json \
  >"$WORK/detector.json" 2>"$WORK/detector.err" || say "detector failed: $(tail -2 "$WORK/detector.err")"
wait
stage bc_detector

# 3. fine-tuning, simulator reward vs detector reward, same seed, in parallel
RATE=$(python3 -c "import json; print(json.load(open('$WORK/rate.json'))['steps_per_s'])" 2>/dev/null || echo 20)
# envs per run x probe rate x time box, halved for policy inference and PPO updates
BOX=$((TOTAL - ($(date +%s) - T0) - 100))  # leave ~100 s for the held-out evaluations
BOX=$((BOX < FT_SECONDS ? BOX : FT_SECONDS)); BOX=$((BOX > 10 ? BOX : 10))
STEPS=$(python3 -c "print(max($FT_MIN_STEPS, int($FT_NUM_ENVS * $RATE * $BOX * 0.5)))")
say "fine-tuning budget $STEPS env steps per run (probe $RATE steps/s, $FT_NUM_ENVS envs, $BOX s box)"
echo "{\"env_steps\": $STEPS, \"num_envs\": $FT_NUM_ENVS, \"il_every\": $IL_EVERY, \"bc_steps\": $BC_STEPS, \"demos\": $DEMOS, \"px\": $PX, \"device\": \"$DEVICE\"}" >"$WORK/settings.json"
ft() {  # name, extra args
  local name=$1; shift
  # cut (SIGINT) a minute after the box: the last checkpoint (every 2 iterations) is what gets evaluated
  timeout -s INT $((BOX + 60)) $CLI finetune --checkpoint "$WORK/bc/last.pt" --out "$WORK/$name" --demos "$WORK/demos" --robot sim --algo ppo \
    --il-every "$IL_EVERY" --env-steps "$STEPS" --num-envs "$FT_NUM_ENVS" "${CAM[@]}" "${CELL[@]}" \
    --set finetune.device="$DEVICE" --set finetune.eval_every=0 --set finetune.eval_episodes=8 \
    --set finetune.checkpoint_every=2 --seed 0 "${FT_EXTRA[@]}" "$@" --json \
    >"$WORK/$name.json" 2>"$WORK/$name.err" || say "fine-tuning $name failed: $(tail -2 "$WORK/$name.err")"
}
if [ -f "$WORK/bc/last.pt" ]; then
  ft ft_sim --set reward.source=operator &
  [ -f "$WORK/detector.pt" ] && ft ft_detector --set reward.source=detector --set reward.detector="$WORK/detector.pt" &
  wait
fi
stage finetune

# 4. held-out evaluations: every arm on the same seeds, judged by the simulator's success (the scripted operator)
chunks=$((JOBS / 4 > 0 ? JOBS / 4 : 1))
per_chunk=$(((HELDOUT + chunks - 1) / chunks))
for arm in bc bc_shift4 ft_sim ft_detector; do
  ck="$WORK/$arm/last.pt"
  [ -f "$ck" ] || { say "no $ck: $arm not evaluated"; continue; }
  for ((i = 0; i < HELDOUT; i += per_chunk)); do
    n=$((HELDOUT - i < per_chunk ? HELDOUT - i : per_chunk))
    timeout -s INT 150 $CLI eval --checkpoint "$ck" --out "$WORK/eval/$arm/$i" --seed $((HELDOUT_SEED + i)) --episodes "$n" \
      --set reward.source=operator --json >/dev/null 2>>"$WORK/eval_$arm.err" &
  done
done
wait
stage heldout
