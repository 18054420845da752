# Shared by scripts/test.sh and scripts/demo.sh; source it, do not run it.
#
#   deepdrr_setup_venv ""       # engine + CLI (pip install -e .)
#   deepdrr_setup_venv network  # engine + PyTorch for the segmentation network (pip install -e ".[network]")
#   deepdrr_setup_venv test     # engine + test extras (pip install -e ".[test]"; includes the network's torch)
#
# Creates .venv/ with $PYTHON (default python3) when absent, and (re)installs
# the project only when it is missing or pyproject.toml / constraints changed,
# so a second run costs well under a second. Sets VENV_PY.

DEEPDRR_VENV="${DEEPDRR_VENV:-.venv}"

deepdrr_setup_venv() {
  local extras="$1"
  local python="${PYTHON:-python3}"

  if [ -x "$DEEPDRR_VENV/bin/python" ]; then
    VENV_PY="$DEEPDRR_VENV/bin/python"
  elif [ -x "$DEEPDRR_VENV/Scripts/python.exe" ]; then
    VENV_PY="$DEEPDRR_VENV/Scripts/python.exe"
  else
    if ! command -v "$python" >/dev/null 2>&1; then
      echo "error: '$python' not found; install Python >= 3.10 or set PYTHON=/path/to/python3" >&2
      return 1
    fi
    echo "==> creating $DEEPDRR_VENV with $("$python" --version 2>&1)"
    "$python" -m venv "$DEEPDRR_VENV"
    if [ -x "$DEEPDRR_VENV/bin/python" ]; then
      VENV_PY="$DEEPDRR_VENV/bin/python"
    else
      VENV_PY="$DEEPDRR_VENV/Scripts/python.exe"
    fi
  fi

  # A fingerprint of what decides the install; both stamps are written by a
  # test install (it is a superset of the plain one).
  local fingerprint
  fingerprint="$("$VENV_PY" - <<'PY'
import hashlib, sys
h = hashlib.sha256()
for name in ("pyproject.toml", "scripts/constraints.txt"):
    with open(name, "rb") as f:
        h.update(f.read())
h.update(sys.version.encode())
print(h.hexdigest())
PY
)"
  local stamp_name="${extras:-base}"
  local stamp="$DEEPDRR_VENV/.deepdrr-install-$stamp_name"

  # Installed, from this checkout, and unchanged since? Then nothing to do.
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ] && "$VENV_PY" - "$PWD" <<'PY'
import importlib.util, os, sys
spec = importlib.util.find_spec("DeepDRRSlicerLib")
root = os.path.realpath(sys.argv[1])
paths = list(spec.submodule_search_locations or []) if spec else []
ok = any(os.path.realpath(p).startswith(root + os.sep) for p in paths if os.path.isdir(p))
sys.exit(0 if ok else 1)
PY
  then
    return 0
  fi

  local target="."
  if [ -n "$extras" ]; then
    target=".[$extras]"
  fi
  echo "==> installing the project into $DEEPDRR_VENV (pip install -e \"$target\")"
  "$VENV_PY" -m pip install --quiet -c scripts/constraints.txt -e "$target"
  echo "$fingerprint" > "$stamp"
  if [ "$stamp_name" = "test" ]; then
    echo "$fingerprint" > "$DEEPDRR_VENV/.deepdrr-install-base"
    echo "$fingerprint" > "$DEEPDRR_VENV/.deepdrr-install-network"
  fi
}
