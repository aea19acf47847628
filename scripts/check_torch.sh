#!/usr/bin/env bash
# Compile check against another torch release: builds swamp_core and the Python module against
# that release's headers and libraries (its wheel, downloaded once without dependencies into
# ~/.cache/swamp_ext/torch-wheels and unpacked beside it). The build is not run: it shows that the
# sources compile and link against that torch. Not part of CI (a wheel is 0.5-1 GB).
#
#   bash scripts/check_torch.sh 2.11.0      # the GPU machine's torch
#   bash scripts/check_torch.sh 2.4.0       # the oldest release pyproject.toml admits
#
# A CUDA build of torch needs a CUDA toolkit (nvcc) to configure; CUDA_HOME or /usr/local/cuda.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:?usage: scripts/check_torch.sh TORCH_VERSION}
PY=${PYTHON:-python3}
CACHE=${SWAMP_TORCH_CACHE:-$HOME/.cache/swamp_ext/torch-wheels}
mkdir -p "$CACHE"
PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
wheel=$(ls "$CACHE"/torch-"$VERSION"-"$PYTAG"-*.whl 2>/dev/null | head -1 || true)
if [ -z "$wheel" ]; then
  echo "[check_torch] downloading torch==$VERSION ($PYTAG, no dependencies)"
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$CACHE" "torch==$VERSION"
  wheel=$(ls "$CACHE"/torch-"$VERSION"-"$PYTAG"-*.whl | head -1)
fi
root="$CACHE/unpacked-$VERSION-$PYTAG"
if [ ! -d "$root/torch" ]; then
  echo "[check_torch] unpacking $(basename "$wheel")"
  rm -rf "$root" && mkdir -p "$root"
  "$PY" -m zipfile -e "$wheel" "$root"
fi
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export PATH="$CUDA_HOME/bin:$PATH"
build="build/check-torch-$VERSION"
mkdir -p "$build"
# Older CUDA builds of torch (<= 2.5) require NVTX 2 (CUDA::nvToolsExt), which CUDA 13 toolkits no
# longer ship: for this compile check an empty stand-in is declared (swamp_core does not use it).
cat > "$build.shim.cmake" <<'SHIM'
if(NOT TARGET CUDA::nvToolsExt)
  add_library(CUDA::nvToolsExt INTERFACE IMPORTED)
endif()
SHIM
echo "[check_torch] configuring against $root/torch (CUDA toolkit: $CUDA_HOME)"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PROJECT_INCLUDE_BEFORE="$PWD/$build.shim.cmake" \
  -DTorch_DIR="$root/torch/share/cmake/Torch" -DSWAMP_BUILD_PYTHON=ON -DSWAMP_WERROR=ON \
  -DPython_EXECUTABLE="$(command -v "$PY")" > "$build.configure.log" 2>&1 || {
  tail -40 "$build.configure.log"; echo "[check_torch] FAILED: configure (log: $build.configure.log)"; exit 1; }
echo "[check_torch] building (log: $build.log)"
if cmake --build "$build" --parallel -- -k 0 > "$build.log" 2>&1; then
  echo "[check_torch] torch $VERSION: swamp_core and the Python module compile and link"
else
  grep -E "error|Error" "$build.log" | head -40
  echo "[check_torch] FAILED: torch $VERSION (log: $build.log)"
  exit 1
fi
