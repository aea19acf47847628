# Sourced by the scripts: picks the Python to install into and run with, as $PY.
#   1. $PYTHON when set; 2. the active virtual environment; 3. python3 when it can install
#   packages (pip present, not an externally managed system Python, PEP 668); 4. otherwise a
#   virtual environment .venv in the checkout (made once, reused after).
# Then checks up front for what a build needs (a C++ compiler, the Python headers), naming the
# package to install.
_here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
  PY=$VIRTUAL_ENV/bin/python
elif [ -x "$_here/.venv/bin/python" ]; then
  PY=$_here/.venv/bin/python
else
  command -v python3 >/dev/null 2>&1 || {
    echo "[setup] error: python3 not found; install Python 3.9+ (Debian/Ubuntu: apt install python3)" >&2
    exit 1
  }
  managed=$(python3 -c 'import os, sysconfig; print(int(os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))))')
  if [ "$managed" = 0 ] && python3 -m pip --version >/dev/null 2>&1; then
    PY=python3
  else
    echo "[setup] python3 cannot install packages here (externally managed or no pip): using a virtual environment in $_here/.venv"
    python3 -m venv "$_here/.venv" || {
      echo "[setup] error: cannot create a virtual environment; install the venv module (Debian/Ubuntu: apt install python3-venv)" >&2
      exit 1
    }
    PY=$_here/.venv/bin/python
    "$PY" -m pip --version >/dev/null 2>&1 || "$PY" -m ensurepip --upgrade >/dev/null
  fi
fi
if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1; then
  echo "[setup] error: no C++ compiler found; install one (Debian/Ubuntu: apt install g++)" >&2
  exit 1
fi
if ! "$PY" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
  echo "[setup] error: the Python headers (Python.h) are missing for $PY; install them (Debian/Ubuntu: apt install python3-dev)" >&2
  exit 1
fi
export PY
export PYTHON=$PY
PATH="$("$PY" -c "import os, sys; print(os.path.dirname(sys.executable))"):$PATH"
export PATH
