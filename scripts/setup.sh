#!/usr/bin/env bash
# Set up .venv: torch 2.13.0 (the CPU wheel on CPU machines), then bioimage-zoo (editable) with
# its test, dask and napari extras. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# The napari plugin's tests run a real viewer on an X server with Mesa's software OpenGL (Qt's
# offscreen platform gives vispy no OpenGL context). As root (CI), install them; otherwise say what
# is missing: without Xvfb (and no DISPLAY) the napari tests are skipped.
NAPARI_APT="xvfb xauth libgl1 libegl1 libgl1-mesa-dri libxkbcommon-x11-0 libdbus-1-3 libfontconfig1 libxcb-icccm4
  libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0
  libxcb-cursor0"
if command -v apt-get >/dev/null && ! command -v Xvfb >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $NAPARI_APT >/dev/null
  else
    echo "note: the napari tests need Xvfb and Mesa; as root: apt-get install $(echo $NAPARI_APT)" >&2
  fi
fi
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q --upgrade pip
  # Pinned on purpose: a bare `torch` requirement would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
.venv/bin/python -m pip install -q -e ".[test,dask,napari,napari-test]"    # dask: zoo predict --cluster; napari: the plugin; both tested by the default suite
echo "bioimage-zoo is set up in .venv ($(.venv/bin/zoo --version))"
