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

# AP view of the bony pelvis (sacrum, hip joints, pubic symphysis, most of the iliac wings) on an
# angiography C-arm's 40 x 30 cm panel at its usual distances. The isocentre (RAS mm) sits 3 cm above
# the landmarks' centroid, so that no ray leaves through the CT's last slice (it ends just below the
# pubic symphysis) or its cut flanks: the image has no truncated pixels (see truncation.png). The
# wings' outer rims need a wider field, which this CT's cut flanks would truncate (see README).
args=(simulate --ct "$ct" --out "$out" --detector angio-30x40 --isocenter -3 164 205)
if [ -f "$landmarks" ]; then
  args+=(--landmarks "$landmarks")
fi

cli="$(dirname "$VENV_PY")/deepdrr-slicer"
echo "==> deepdrr-slicer ${args[*]}${*:+ $*}"
"$cli" "${args[@]}" "$@"

echo
echo "Outputs are in $PWD/$out:"
ls -1 "$out"
