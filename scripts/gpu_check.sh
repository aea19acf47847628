#!/usr/bin/env bash
# The GPU check in one command: builds swamp_ext against this machine's torch (every core, no
# build isolation, no network), runs the device test tier, runs the GPU benchmarks, and writes
# OUTDIR/gpu_report.md + OUTDIR/gpu_report.json with the logs (build.log, tests.log, bench.log).
#
#   bash scripts/gpu_check.sh --device cuda OUTDIR          # on a GPU machine (<= 9 minutes)
#   bash scripts/gpu_check.sh --device cpu --quick OUTDIR   # the dry run (CI runs it)
#   options: --budget SECONDS   the whole check's time (default 540 cuda, 300 --quick)
#            --skip build,tests,bench   --bench rounds,run,zoo,prune,dataset   -k EXPR
#
# Each step has its own time box; a failing step is recorded and the next one runs. The exit
# status is 0 only when every step passed. Needs: python3 with torch, pip, scikit-build-core,
# ninja, cmake, pytest (all on the GPU machine); nothing is downloaded.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch, scikit_build_core" 2>/dev/null; then
  echo "[gpu_check] error: $PY lacks torch or scikit-build-core; install them first (the check downloads nothing)" >&2
  exit 2
fi
exec "$PY" scripts/gpu_check.py "$@"
