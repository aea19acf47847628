#!/usr/bin/env bash
# Builds the documentation site into docs/_build/html (warnings are errors). The reference pages
# are generated from the installed package (Config fields, CLI, Python API) and the public C++
# headers; anything public left undocumented fails the build.
#   bash scripts/docs.sh            (after scripts/setup.sh; installs the docs tools if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python.sh
if ! "$PY" -c "import sphinx, myst_parser, furo" 2>/dev/null; then
  "$PY" -m pip install --quiet --disable-pip-version-check "sphinx>=7.2,<10" "myst-parser>=3,<6" "furo>=2024.1"
fi
cd docs
# from docs/, with the source folder off sys.path: the reference documents the installed package
exec "$PY" -m sphinx -E -W --keep-going -q -b html -d _build/doctrees . _build/html
