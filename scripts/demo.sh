#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, build, then run SWAMP and IMP with
# lenet_300_100 on the built-in mnist5k digits and compare them round by round.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python.sh
bash scripts/setup.sh
cd "${TMPDIR:-/tmp}" >/dev/null  # import the installed package, not the source folder
OUT=${OUT:-$OLDPWD/runs}
for method in imp swamp; do
  "$PY" -m swamp_ext run --model lenet_300_100 --dataset mnist5k --method "$method" --particles 4 \
    --rounds 8 --epochs 10 --out "$OUT/$method" "$@"
done
echo "results in $OUT/imp and $OUT/swamp (results.json, model.safetensors)"
