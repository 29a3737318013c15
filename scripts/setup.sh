#!/usr/bin/env bash
# Set up a fresh Debian machine (Python 3.11) for napari-spt-diffusion development:
# system libraries for a virtual OpenGL display (napari tests), a virtual environment
# in .venv with the pinned CPU build of PyTorch, and the package with its test extra.
# Usage: bash scripts/setup.sh        (run from the repository root; idempotent)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

apt_packages=(
  xvfb libgl1 libegl1 libgl1-mesa-dri libxkbcommon-x11-0
  libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0
  libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0
  libdbus-1-3 libfontconfig1
)
if ! "$PY" -m venv --help >/dev/null 2>&1; then apt_packages+=(python3-venv); fi
missing=()
for p in "${apt_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The pinned CPU build first, so that the package's `torch>=2.6` needs nothing more
# (users with a GPU install their own CUDA build of torch instead).
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
echo "setup done: $(.venv/bin/python -c 'import torch, napari; print("torch", torch.__version__, "napari", napari.__version__)')"
