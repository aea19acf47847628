#!/usr/bin/env bash
# One command for the whole test suite on a fresh machine: installs what is missing, builds,
# checks style (ruff, clang-format) and runs the tests (pytest; the C++ example builds as a test).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/setup.sh test

echo "[test] ruff"
"$PY" -m ruff check swamp_ext python_tests benchmarks
echo "[test] clang-format"
find csrc examples -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' | sort \
  | xargs clang-format --dry-run --Werror

echo "[test] pytest"
# Run from python_tests/ so that the installed package is imported; one torch process at a time.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
cd python_tests
"$PY" -m pytest -q "$@"
