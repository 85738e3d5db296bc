#!/bin/bash
# Downloads (here, where PyPI is reachable) the Python 3.12 x86-64 wheels that scripts/device_image_finetune.sh and
# scripts/device_run.sh need on the GPU machine beyond its image's packages (torch, numpy, pyyaml, opencv, matplotlib,
# protobuf, absl-py, cloudpickle are there; typer and rich are carried at our versions: the CLI uses typer 0.29's
# vendored click), into .whl/ (about 30 MB; ignored by git through .git/info/exclude). franky-sim's COLLADA meshes
# (unused by MuJoCo, 19 -> 11 MB) are dropped so the working tree and the wheels stay under the 64 MiB a call carries.
# On the machine: python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
set -euo pipefail
cd "$(dirname "$0")/.."
EXCLUDE="$(git rev-parse --git-common-dir)/info/exclude"
grep -qx '/.whl/' "$EXCLUDE" 2>/dev/null || echo /.whl/ >>"$EXCLUDE"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl \
  mujoco==3.8.1 etils==1.15.0 glfw==2.11.0 PyOpenGL==3.1.10 franky-sim==1.0.4 \
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 \
  pyzmq==27.3.0 msgspec==0.23.0 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 \
  gymnasium==1.4.0 farama-notifications==0.0.6 tensorboardX==2.6.5 \
  typer==0.29.2 rich==15.0.0 shellingham==1.5.4 annotated-doc==0.0.7 typing-extensions==4.16.0
zip -q -d .whl/franky_sim-1.0.4-py3-none-any.whl 'franky_sim/assets/meshes/*.dae' || true
du -sh .whl
