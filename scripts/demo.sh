#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, build, then prune conv4_small on the
# built-in mnist5k digits with IMP and with SWAMP (4 particles) to 99.2% sparsity (8 rounds, half
# of the remaining weights a round, 3 epochs each), and end with the side-by-side comparison and
# the accuracy-against-sparsity picture. About 8 minutes on 2 CPU cores after the build.
#   OUT=folder bash scripts/demo.sh [extra `swamp-ext run` flags, e.g. --seed 1]
#   SWAMP_NO_SETUP=1 skips installing and building (use the swamp_ext already installed)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python.sh
if [ "${SWAMP_NO_SETUP:-0}" != 1 ]; then bash scripts/setup.sh plot; fi
cd "${TMPDIR:-/tmp}" >/dev/null  # import the installed package, not the source folder
OUT=${OUT:-$OLDPWD/runs/demo}
for method in imp swamp; do
  "$PY" -m swamp_ext run --model conv4_small --dataset mnist5k --method "$method" --particles 4 \
    --rounds 8 --epochs 3 --prune-ratio 0.5 --out "$OUT/$method" "$@"
done
echo
"$PY" -m swamp_ext compare "$OUT/imp" "$OUT/swamp" --at 50 75 87.5 93.75 96.9 98.4 99.2
"$PY" -m swamp_ext plot "$OUT/imp" "$OUT/swamp" -o "$OUT/accuracy.png"
echo "runs in $OUT/imp and $OUT/swamp (swamp-ext show / compare / plot / analyze / export)"
