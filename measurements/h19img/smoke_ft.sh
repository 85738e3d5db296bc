#!/bin/bash
# the device script's fine-tuning + eval commands, at a tiny budget, on the smoke test's BC checkpoint and detector
cd /work/wt/h19img
export PYTHONPATH=/tmp/h19img/siteprobe:/work/wt/h19img OMP_NUM_THREADS=1 IMPORT_PROBE=/tmp/h19img/imports.txt
W=/tmp/h19img/devtest
CAM=(--cameras sim_front_wrist); for c in front wrist; do for d in width height; do CAM+=(--set "cameras.$c.$d=64"); done; done
CELL=(--set cell=real-like --set task.observation=image)
rm -rf $W/ft_sim $W/ft_detector $W/eval/ft_*
for arm in sim detector; do
  extra=(--set reward.source=operator); [ $arm = detector ] && extra=(--set reward.source=detector --set reward.detector=$W/detector.pt)
  timeout -s INT 900 python3 -m inril_robot.cli finetune --checkpoint $W/bc/last.pt --out $W/ft_$arm --demos $W/demos --robot sim --algo ppo \
    --il-every 0 --env-steps 40 --num-envs 1 "${CAM[@]}" "${CELL[@]}" --set finetune.device=cpu --set finetune.eval_every=0 \
    --set finetune.eval_episodes=2 --set finetune.checkpoint_every=2 --seed 0 --set finetune.episodes_per_iteration=2 \
    --set finetune.ppo.minibatch_size=16 "${extra[@]}" --json > $W/ft_$arm.json 2> $W/ft_$arm.err; echo "ft $arm rc $?"
  timeout -s INT 600 python3 -m inril_robot.cli eval --checkpoint $W/ft_$arm/last.pt --out $W/eval/ft_$arm/0 --seed 1000000000 --episodes 2 \
    --set reward.source=operator --json > /dev/null 2>> $W/eval_ft_$arm.err; echo "eval $arm rc $?"
done
