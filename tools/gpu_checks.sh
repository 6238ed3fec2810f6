#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one script for a lent GPU machine
# (see docs/parity.md and docs/benchmarks.md, "On a GPU"):
#   A. correctness, concurrently: the ROI-align stand-in against the real
#      torchvision (CPU and CUDA); the parity, ops, loss, metric and fit tests
#      with Keras on the GPU (JAX and PyTorch backends; the reference runs on
#      CPU with the real torchvision); full-size fidelity at $SIZE px.
#   B. alone on the machine: the segmenter benchmark at $SIZE px, ours, the
#      reference and keras-hub's port, all on the GPU, TF32 off.
# Logs and JSON go to $OUT (default out/gpu). Where keras, keras-hub and
# transformers are missing, put their wheels in .whl/ (README of the device
# tool): they are installed into /tmp/site.
#   bash tools/gpu_checks.sh
#   SIZE=336 CHECKS_S=120 BENCH_S=200 bash tools/gpu_checks.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
SIZE=${SIZE:-1008}
CHECKS_S=${CHECKS_S:-200}
BENCH_S=${BENCH_S:-360}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
WHEELS=${WHEELS:-.whl}
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
{
  date -u; nvidia-smi -L 2>&1; nproc
  python3 -c "import torch, transformers, keras, jax; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), '| transformers', transformers.__version__, '| keras', keras.__version__, '| jax', jax.__version__, jax.default_backend())"
  python3 -c "import torchvision; print('torchvision', torchvision.__version__)"
  for b in torch jax; do KERAS_BACKEND=$b timeout 120 python3 tools/check_roi_align_standin.py; echo "roi_align check ($b) exit $?"; done
} > "$OUT/env_roi_align.log" 2>&1 &
for b in jax torch; do
  (KERAS_BACKEND=$b timeout "$CHECKS_S" nice -n 10 python3 -m pytest -v -p no:cacheprovider tests/parity tests/ops tests/losses \
     tests/metrics tests/models/test_fit.py > "$OUT/tests_$b.log" 2>&1; echo "pytest exit $?" >> "$OUT/tests_$b.log") &
done
timeout "$CHECKS_S" python3 tools/full_size_fidelity.py --sizes "$SIZE" --backends jax,torch \
  --json "$OUT/fidelity.json" > "$OUT/fidelity.log" 2>&1
echo "fidelity exit $?" >> "$OUT/fidelity.log"
wait
timeout "$BENCH_S" python3 tools/benchmark_segmenter.py --image-size "$SIZE" --repeats 3 --backends torch,jax \
  --peers ours,reference,keras_hub --json "$OUT/benchmark.json" > "$OUT/benchmark.log" 2>&1
echo "benchmark exit $?" >> "$OUT/benchmark.log"
for f in "$OUT"/*.log; do echo "=== $f"; grep -E "passed|failed|PASSED|FAILED|ERROR|exit|worst|^\|" "$f" | grep -v "^tests/.* PASSED" | tail -40; done
