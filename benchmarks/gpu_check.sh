#!/usr/bin/env bash
# The GPU check, in one run (under 10 minutes on an H200): on a machine with an NVIDIA GPU, CUDA (nvcc),
# CuPy and PyTorch, after benchmarks/prepare_gpu_check.sh filled .gpu/ (see docs/benchmarks.md).
#
#   OUT=out/gpu_check bash benchmarks/gpu_check.sh
#
# 1. builds pycuda from its sdist against this machine's CUDA, in the background;
# 2. the GPU test layer (Testing/GPU: projector and scatter Monte Carlo) with the CuPy launcher;
# 3. the scatter Monte Carlo and material-network benchmark (bench_scatter_gpu.py);
# 4. the projector benchmark: our DRR/s with CuPy at 256^2, 512^2, 1024^2, single and batched, GPU vs
#    CPU on the chest CT, nanodrr 0.1.7 and DiffDRR 0.6.1 on the same CT, rays and GPU;
# 5. once pycuda is built: the GPU test layer and our projector benchmark with the pycuda launcher.
# Each step has a time limit, so one that hangs does not cost the others.
# Writes to $OUT: gpu_check.log, pycuda_build.log, gpu_benchmark.json, gpu_benchmark_pycuda.json,
# gpu_scatter_benchmark.json, gpu_accuracy_<launcher>.json, gpu_scatter_<launcher>.json.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-out/gpu_check}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-python3}"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
if [ ! -f .gpu/chest_ct.npz ]; then
  echo "error: .gpu/ is missing: run benchmarks/prepare_gpu_check.sh first (on a machine with network)" >&2
  exit 2
fi

site=/tmp/deepdrr-gpu-site
"$PY" -m pip install -q --no-index --no-deps --no-compile --target "$site" .gpu/wheels/*.whl || exit 2
export PYTHONPATH="$site:$PWD/.gpu/site:$PWD/DeepDRRSlicer:$PWD/Testing/Python${PYTHONPATH:+:$PYTHONPATH}"
export DEEPDRR_CHEST_CT="$PWD/.gpu/chest_ct.npz" DEEPDRR_GPU_LOG="$OUT"
echo "== machine"
nvidia-smi -L || true
nvcc --version | tail -n 1 || true
"$PY" -c "import numpy, numba, cupy, torch; print('numpy', numpy.__version__, 'numba', numba.__version__, \
'cupy', cupy.__version__, 'torch', torch.__version__)"

echo "== pycuda: building from its sdist in the background"
(
  set -e
  rm -rf /tmp/pycuda-build && mkdir -p /tmp/pycuda-build
  tar xzf .gpu/sdist/pycuda-*.tar.gz -C /tmp/pycuda-build
  cd /tmp/pycuda-build/pycuda-*
  cuda_root="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
  "$PY" configure.py --cuda-root="$cuda_root" --no-cuda-enable-curand
  "$PY" -m pip wheel -q --no-deps --no-build-isolation . -w /tmp/pycuda-build/wheel
  "$PY" -m pip install -q --no-deps --no-compile --target "$site" /tmp/pycuda-build/wheel/*.whl
) > "$OUT/pycuda_build.log" 2>&1 &
build=$!

status=0
limit() { timeout --kill-after=10 "$@"; }
echo "== GPU test layer, CuPy launcher"
DEEPDRR_CUDA_LAUNCHER=cupy limit 180 "$PY" -m pytest -q -p no:cacheprovider Testing/GPU -k "not pycuda" -rs \
  --durations=8 || status=1
echo "== benchmark: scatter Monte Carlo and the material network (CuPy)"
DEEPDRR_CUDA_LAUNCHER=cupy limit 120 "$PY" benchmarks/bench_scatter_gpu.py --ct "$DEEPDRR_CHEST_CT" --out "$OUT" \
  || status=1
echo "== benchmark: ours (CuPy), nanodrr, DiffDRR"
DEEPDRR_CUDA_LAUNCHER=cupy limit 130 "$PY" benchmarks/bench_gpu.py --ct "$DEEPDRR_CHEST_CT" --out "$OUT" \
  --launchers cupy --repeats 3 || status=1

echo "== waiting for pycuda"
if limit 20 tail --pid="$build" -f /dev/null && wait "$build"; then
  echo "== GPU test layer, pycuda launcher"
  DEEPDRR_CUDA_LAUNCHER=pycuda limit 50 "$PY" -m pytest -q -p no:cacheprovider Testing/GPU -k "not cupy" -rs \
    || status=1
  echo "== benchmark: ours (pycuda)"
  DEEPDRR_CUDA_LAUNCHER=pycuda limit 35 "$PY" benchmarks/bench_gpu.py --ct "$DEEPDRR_CHEST_CT" --out "$OUT" \
    --launchers pycuda --skip-peers --json-name gpu_benchmark_pycuda.json || status=1
else
  echo "pycuda did not build (the optional launcher): see pycuda_build.log"
  tail -n 30 "$OUT/pycuda_build.log"
  status=1
fi
echo "== done (status $status)"
exit "$status"
