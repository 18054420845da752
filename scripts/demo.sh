#!/usr/bin/env bash
# Simulate fluoroscopy of the bundled pelvis CT into out/demo/.
#
# Needs python3 >= 3.10 (or PYTHON=/path/to/python) and, on the first run,
# network access for pip. Extra arguments go to "deepdrr-slicer simulate".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh
# The network extra brings PyTorch (pinned to 2.13.0 by scripts/constraints.txt) for the default
# material decomposition, the segmentation network.
deepdrr_setup_venv network

ct="Resources/SampleData/pelvis_ct_3mm.nii.gz"
landmarks="Resources/SampleData/pelvis_ct_3mm_landmarks.mrk.json"
out="out/demo"

# AP view centred on the landmarks; SOD 800 mm (patient near the detector) fits the whole pelvis
# on the 30 cm detector. Trilinear interpolation hides the 3 mm voxel grid of this CT.
args=(simulate --ct "$ct" --out "$out" --sod 800 --algorithm trilinear)
if [ -f "$landmarks" ]; then
  args+=(--landmarks "$landmarks")
fi

cli="$(dirname "$VENV_PY")/deepdrr-slicer"
echo "==> deepdrr-slicer ${args[*]}${*:+ $*}"
"$cli" "${args[@]}" "$@"

echo
echo "Outputs are in $PWD/$out:"
ls -1 "$out"
