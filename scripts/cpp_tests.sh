#!/usr/bin/env bash
# The core's C++ unit tests (tests/cpp), built against the installed package as a C++ user builds
# against it, and run. scripts/test.sh calls it after the install.
#   bash scripts/cpp_tests.sh [BUILD_DIR]      (default build/cpp-tests)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python.sh
build=${1:-build/cpp-tests}
# asked of the installed package (from the repository root Python would import the source tree)
prefix=$(cd / && "$PY" -m swamp_ext --cmake-prefix-path)
gen=()
if command -v ninja >/dev/null 2>&1; then gen=(-G Ninja); fi
cmake -S tests/cpp -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$build" -j 2
ctest --test-dir "$build" --output-on-failure
