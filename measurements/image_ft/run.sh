#!/bin/bash
# image fine-tuning on real-like lift (issue 19): PPO + IN-RIL m=5 from an image BC (BC=..., default the 97% one; P=prefix of the run names), reward from the scripted
# operator (the simulator's success) vs from the success detector; 2 seeds each; then 100 held-out episodes per arm.
set -u
cd /work/main
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MUJOCO_GL=egl PYTHONUNBUFFERED=1
W=/work/img; BC=${BC:-/tmp/h19img/bc_shift0/last.pt}; DEMOS=/tmp/h19img/demos_lift64
STEPS=${STEPS:-5000}; IL=${IL:-5}
CAM=(--cameras sim_front_wrist); for c in front wrist; do for d in width height; do CAM+=(--set "cameras.$c.$d=64"); done; done
CELL=(--set cell=real-like --set task.observation=image)
ft() { # name seed extra...
  local name=$1 seed=$2; shift 2
  [ -f $W/$name/last.pt ] && [ -f $W/$name.json ] && [ -s $W/$name.json ] && return 0
  python3 -m inril_robot.cli finetune --checkpoint $BC --out $W/$name --demos $DEMOS --robot sim --algo ppo \
    --il-every $IL --env-steps $STEPS --num-envs 1 "${CAM[@]}" "${CELL[@]}" --set finetune.eval_every=0 \
    --set finetune.eval_episodes=8 --set finetune.checkpoint_every=1 --seed $seed "$@" --json > $W/$name.json 2> $W/$name.err
  echo "$(date +%T) ft $name rc $?"
}
ev() { # arm checkpoint first n
  local arm=$1 ck=$2 first=$3 n=$4
  [ -f $W/eval/$arm/$first/eval.json ] && return 0
  python3 -m inril_robot.cli eval --checkpoint $ck --out $W/eval/$arm/$first --seed $((1000000000 + first)) --episodes $n \
    --set reward.source=operator --json > /dev/null 2>> $W/eval_$arm.err
  echo "$(date +%T) eval $arm $first rc $?"
}
P=${P:-}
DET=(--set reward.source=detector --set reward.detector=$W/detector.pt)
OP=(--set reward.source=operator)
SEEDS=${SEEDS:-0 1}
for s in $SEEDS; do ft ${P}ft_sim_s$s $s "${OP[@]}" & ft ${P}ft_det_s$s $s "${DET[@]}" & wait; done
for arm in ${P}bc $(for s in $SEEDS; do echo ${P}ft_sim_s$s ${P}ft_det_s$s; done); do
  ck=$W/$arm/last.pt; [ $arm = ${P}bc ] && ck=$BC
  ev $arm $ck 0 50 & ev $arm $ck 50 50 & wait
done
echo "$(date +%T) all done"
