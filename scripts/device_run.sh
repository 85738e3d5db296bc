#!/bin/bash
# Issue 18/19's measurements that 2 CPU cores cannot reach, as ONE device call (16 cores + H200, < 10 min), every part
# in parallel, each niced by how much its timing matters:
#   A. the off-policy learner on CUDA: tensors on the device and updates/s (scripts/offpolicy_device_check.py)
#   B. the bridge at 10 Hz with the asynchronous learner on CUDA, kill -9 + serve --resume (scripts/offpolicy_resume_check.py)
#   C. peg, off-policy arms at 30k env steps, 3 seeds (bench sample-efficiency --jobs)               [nice 5]
#   D. lift images in the real-like cell: BC, fine-tuning with simulator vs detector rewards          [nice 10]
#
# Prepare here (PyPI and apt are reachable here, nothing is there), from the repository root:
#   bash scripts/device_wheels.sh                                    # .whl/: the Python 3.12 wheels the image lacks
#   echo /.gl/ >>.git/info/exclude; mkdir -p .gl; (cd .gl && apt-get download libvulkan1 libegl1 libglvnd0 libopengl0 \
#       libgl1 libglx0 libgles2)                                     # EGL loaders for MUJOCO_GL=egl
#   bash scripts/device_prepare.sh                                   # .devcarry/devrun.tgz: peg + lift checkpoints
#   device run: command "bash scripts/device_run.sh", carry [".whl", ".gl", ".devcarry"], timeout_s 590
# Results come back as $OUT/results.tgz (re-written every 30 s, so a run cut at its limit still returns what it has).
# Smoke run on this machine (no GPU, tiny budgets): SMOKE=1 DEVICE=cpu OUT=/tmp/o RES=/tmp/r A_UPDATES=5 B_EPISODES=3 \
#   B_KILL=1 B_BASELINE=1 C_SEEDS=1 C_BUDGET=300 C_JOBS=2 D_JOBS=2 D_ENVS=1 DEMOS=4 BC_STEPS=20 FT_SECONDS=1 \
#   FT_MIN_STEPS=40 HELDOUT=4 DET_EPISODES=8 DET_STEPS=20 DEADLINE_S=1500 bash scripts/device_run.sh
set -u
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
if [ -z "${SMOKE:-}" ]; then  # on the device machine (a local smoke run skips this)
  for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 3
  export MUJOCO_GL=egl
fi
tar xzf .devcarry/devrun.tgz
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
echo "setup $(el) s; $(nproc) cores; $(nvidia-smi --query-gpu=name --format=csv,noheader)"
python3 -c "import inril_robot.cli, mujoco, zmq, torch; print('imports ok', mujoco.__version__, torch.__version__, torch.cuda.is_available())" || exit 4
R=${RES:-/tmp/res}; mkdir -p $R/x
# A
( for algo in sac idql; do
    ck=.devrun/lift/pretrained/pretrain/last.pt; [ $algo = idql ] && ck=.devrun/pegB/peg/pretrained_diffusion/last.pt
    python3 scripts/offpolicy_device_check.py --checkpoint $ck --device ${DEVICE:-cuda} --updates ${A_UPDATES:-300} --set finetune.algo=$algo --json $R/x/device_$algo.json
  done > $R/x/device_check.log 2>&1; echo "A done $(el) s" ) &
# B
( python3 scripts/offpolicy_resume_check.py --checkpoint .devrun/lift/pretrained/pretrain/last.pt \
    --demos .devrun/lift/pretrained/demos --out /tmp/bridge --episodes ${B_EPISODES:-24} --kill-after ${B_KILL:-10} \
    --baseline-episodes ${B_BASELINE:-6} --set finetune.device=${DEVICE:-cuda} ${B_SETS:-} > $R/x/bridge.json 2> $R/x/bridge.log
  echo "B rc $? $(el) s" ) &
# C
( nice -n 5 python3 -m inril_robot.cli bench sample-efficiency --regime B --task peg --arm idql --arm "idql in-ril m=5" \
    ${C_ARMS:-} --seeds ${C_SEEDS:-3} --env-steps ${C_BUDGET:-30000} --out .devrun/pegB --jobs ${C_JOBS:-6} --json \
    --set finetune.offpolicy.eval_every_env_steps=0 --set finetune.eval_episodes=10 ${C_SETS:-} > $R/x/peg.json 2> $R/x/peg.log
  echo "C rc $? $(el) s"; tar czf $R/x/pegruns.tgz --exclude='*.pt' --exclude='events.*' --exclude=demos .devrun/pegB/peg ) &
# D
( OUT=$R/img DEVICE=${DEVICE:-cuda} JOBS=${D_JOBS:-8} FT_NUM_ENVS=${D_ENVS:-3} TOTAL=${D_TOTAL:-520} FT_SECONDS=${D_FT:-240} nice -n 10 bash scripts/device_image_finetune.sh > $R/x/img_stdout.log 2>&1
  echo "D rc $? $(el) s" ) &
while [ $(jobs -r | wc -l) -gt 0 ] && [ $(el) -lt ${DEADLINE_S:-565} ]; do
  sleep 30; tar czf $OUT/results.tgz -C $(dirname $R) $(basename $R) 2>/dev/null; echo "t=$(el)s load $(cut -d' ' -f1-3 /proc/loadavg) | $(tail -c 300 $R/x/peg.log | tr '\r\n' '  ' | tail -c 160)"
done
tar czf $OUT/results.tgz -C $(dirname $R) $(basename $R); echo "end $(el) s"; ls -la $R/x $R/img 2>/dev/null; tail -3 $R/x/*.log
