#!/usr/bin/env bash
# Simulate fluoroscopy of the bundled pelvis CT into out/demo/.
#
# Needs python3 >= 3.10 (or PYTHON=/path/to/python) and, on the first run,
# network access for pip. Extra arguments go to "deepdrr-slicer simulate".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh
deepdrr_setup_venv ""

ct="Resources/SampleData/pelvis_ct_3mm.nii.gz"
landmarks="Resources/SampleData/pelvis_ct_3mm_landmarks.mrk.json"
out="out/demo"

# TODO(lead): keep these option names in step with DeepDRRSlicerLib/cli.py.
args=(simulate --ct "$ct" --out "$out")
if [ -f "$landmarks" ]; then
  args+=(--landmarks "$landmarks")
fi

cli="$(dirname "$VENV_PY")/deepdrr-slicer"
echo "==> deepdrr-slicer ${args[*]}${*:+ $*}"
"$cli" "${args[@]}" "$@"

echo
echo "Outputs are in $PWD/$out:"
ls -1 "$out"
