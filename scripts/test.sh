#!/usr/bin/env bash
# Set up from nothing (first run) and run the whole test suite through CTest.
#
#   bash scripts/test.sh              # all layers: engine, mrml, views, gpu
#   bash scripts/test.sh -L engine    # extra arguments go to ctest
#
# Needs python3 >= 3.10 (or PYTHON=/path/to/python) and, on the first run,
# network access for pip. Exits non-zero when any test fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh
deepdrr_setup_venv test

# The views layer renders offscreen with OpenGL: make sure a context can be made (installs Mesa if needed).
# shellcheck source=scripts/_offscreen_gl.sh
source scripts/_offscreen_gl.sh
deepdrr_ensure_offscreen_gl "$VENV_PY"

# CMake >= 3.20 for "ctest --test-dir"; take it from pip when the system has none.
cmake_recent_enough() {
  local version
  version="$("$1" --version 2>/dev/null | head -n 1 | awk '{print $3}')" || return 1
  [ -n "$version" ] && [ "$(printf '%s\n3.20\n' "$version" | sort -V | head -n 1)" = "3.20" ]
}
venv_bin="$(dirname "$VENV_PY")"
if command -v cmake >/dev/null 2>&1 && command -v ctest >/dev/null 2>&1 && cmake_recent_enough cmake; then
  CMAKE=cmake
  CTEST=ctest
else
  if ! [ -x "$venv_bin/cmake" ] || ! cmake_recent_enough "$venv_bin/cmake"; then
    echo "==> installing cmake into the venv (pip install cmake)"
    "$VENV_PY" -m pip install --quiet "cmake>=3.20"
  fi
  CMAKE="$venv_bin/cmake"
  CTEST="$venv_bin/ctest"
fi

"$CMAKE" -S . -B build -DPython3_EXECUTABLE="$PWD/$VENV_PY" >/dev/null
rm -rf build/layer-counts
status=0
"$CTEST" --test-dir build --output-on-failure --no-tests=error "$@" || status=$?
# ctest says only whether each layer passed; show what ran inside each one.
"$VENV_PY" Testing/run_pytest_layer.py --summary build/layer-counts
exit "$status"
