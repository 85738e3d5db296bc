#!/usr/bin/env bash
# Install inril-robot and everything it needs on a fresh Debian/Ubuntu machine (root or sudo).
#   bash scripts/setup.sh          # the package with the simulator (sim extra)
#   bash scripts/setup.sh --dev    # + test tools (dev extra: pytest, hypothesis, ruff, franky-sim)
set -euo pipefail
cd "$(dirname "$0")/.."

extras="sim"
[[ "${1:-}" == "--dev" ]] && extras="dev"

SUDO=""
[[ "$(id -u)" != "0" ]] && command -v sudo >/dev/null && SUDO="sudo"
if command -v apt-get >/dev/null; then
  # EGL/OSMesa: offscreen MuJoCo rendering; libusb: RealSense; ffmpeg libs come inside opencv's wheel.
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    libegl1 libgl1 libosmesa6 libusb-1.0-0 >/dev/null
fi

python3 -m pip install --quiet --upgrade pip
# The CPU wheel of torch first: an unpinned torch would pull a multi-GB CUDA build. GPU boxes: see README.
python3 -m pip install --quiet "torch==2.13.0"
python3 -m pip install --quiet -e ".[${extras}]"
echo "inril-robot installed with extras [${extras}]: $(command -v inril-robot)"
