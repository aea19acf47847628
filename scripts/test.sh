#!/usr/bin/env bash
# One command for the whole test suite on a fresh machine: installs what is missing, builds,
# checks style (ruff, clang-format) and runs the tests: the core's C++ unit tests (tests/cpp) and
# pytest (the C++ examples build as a test).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python.sh
bash scripts/setup.sh test

echo "[test] ruff"
"$PY" -m ruff check swamp_ext python_tests benchmarks scripts docs
echo "[test] clang-format"
find csrc examples tests/cpp -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' | sort \
  | xargs clang-format --dry-run --Werror

echo "[test] C++ unit tests (tests/cpp)"
bash scripts/cpp_tests.sh

echo "[test] pytest"
# Run from python_tests/ so that the installed package is imported. The tests use what the
# machine has (torch's default thread count); those that start processes limit their threads.
cd python_tests
"$PY" -m pytest -q "$@"
