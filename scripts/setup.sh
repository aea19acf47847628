#!/usr/bin/env bash
# Installs what is missing and builds swamp_ext against the installed torch.
#   scripts/setup.sh [extra ...]   e.g. scripts/setup.sh test  -> pip extras "datasets,io,test"
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python.sh
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)

# torch: keep the one that is installed (GPU machines carry their own); else the CPU build.
if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "[setup] installing torch==2.13.0 (CPU build)"
  "${PIP[@]}" "torch==2.13.0"
fi
# Build tools. torch is never a build requirement: we build without isolation against this torch.
"${PIP[@]}" "scikit-build-core>=0.10" ninja "numpy>=1.22"
if ! command -v cmake >/dev/null 2>&1; then "${PIP[@]}" "cmake>=3.21"; fi

extras="datasets,io"
for e in "$@"; do extras="$extras,$e"; done
echo "[setup] building and installing swamp_ext[$extras] (incremental build in build/)"
"${PIP[@]}" --no-build-isolation ".[$extras]"
