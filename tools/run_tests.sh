#!/usr/bin/env bash
# Installs keras_sam3 with its test extra and runs the whole suite once per
# Keras backend named on the command line (default: all three).
#   bash tools/run_tests.sh                 # jax, tensorflow, torch
#   bash tools/run_tests.sh torch -k parity # one backend, extra pytest args
set -uo pipefail
cd "$(dirname "$0")/.."

backends=()
while [ $# -gt 0 ] && [[ "$1" =~ ^(jax|tensorflow|torch)$ ]]; do backends+=("$1"); shift; done
[ ${#backends[@]} -eq 0 ] && backends=(jax tensorflow torch)

# torch first and pinned: the CPU wheel. An unpinned torch pulls the CUDA stack.
python -m pip install -q "torch==2.13.0" || exit 1
python -m pip install -q -e ".[test]" || exit 1
# The real CLIP BPE merges ship inside open_clip_torch's wheel: fetched once
# here (no dependencies, not installed) so that no test downloads anything.
ls .cache/wheels/open_clip_torch-3.3.0-*.whl >/dev/null 2>&1 ||
  python -m pip download -q --no-deps "open_clip_torch==3.3.0" -d .cache/wheels || exit 1

failed=()
for backend in "${backends[@]}"; do
  echo "=== KERAS_BACKEND=$backend ==="
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider tests "$@" || failed+=("$backend")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED on: ${failed[*]}"
  exit 1
fi
echo "all backends passed: ${backends[*]}"
