#!/usr/bin/env bash
# Installs keras_sam3 with its test extra and runs the whole suite once per
# Keras backend named on the command line (default: all three).
#   bash tools/run_tests.sh                 # jax, tensorflow, torch
#   bash tools/run_tests.sh torch -k parity # one backend, extra pytest args
# Backends run side by side, as many at once as there are CPU cores
# (TEST_JOBS=1: one after another): a suite keeps about one core busy, most
# of its time going to compiling and dispatching tiny graphs. Each backend's
# output is printed whole when it ends, in the order they end.
set -uo pipefail
cd "$(dirname "$0")/.."
((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] >= 501)) || { echo "tools/run_tests.sh needs bash 5.1 or later (wait -n -p)"; exit 1; }

backends=()
while [ $# -gt 0 ] && [[ "$1" =~ ^(jax|tensorflow|torch)$ ]]; do backends+=("$1"); shift; done
[ ${#backends[@]} -eq 0 ] && backends=(jax tensorflow torch)
at_once=${TEST_JOBS:-$(nproc)}
[[ "$at_once" =~ ^[1-9][0-9]*$ ]] || { echo "TEST_JOBS must be a positive integer, not '$at_once'"; exit 1; }

# torch first and pinned: the CPU wheel. An unpinned torch pulls the CUDA stack.
python -m pip install -q "torch==2.13.0" || exit 1
python -m pip install -q -e ".[test]" || exit 1
# The real CLIP BPE merges ship inside open_clip_torch's wheel: fetched once
# here (no dependencies, not installed) so that no test downloads anything.
ls .cache/wheels/open_clip_torch-3.3.0-*.whl >/dev/null 2>&1 ||
  python -m pip download -q --no-deps "open_clip_torch==3.3.0" -d .cache/wheels || exit 1

logs=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$logs"' EXIT
declare -A backend_of=()  # pid -> backend, for those running
finish_one() {  # waits for whichever running backend ends first and prints its output
  local pid rc backend
  wait -n -p pid "${!backend_of[@]}"
  rc=$?
  backend=${backend_of[$pid]}
  unset "backend_of[$pid]"
  echo "=== KERAS_BACKEND=$backend ==="
  cat "$logs/$backend.log"
  [ "$rc" -eq 0 ] || failed+=("$backend")
  reported+=("$backend")
}

failed=()
reported=()
started=$SECONDS
for backend in "${backends[@]}"; do
  [ ${#backend_of[@]} -ge "$at_once" ] && finish_one
  echo "--- KERAS_BACKEND=$backend starts ($((SECONDS - started)) s in)"
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider tests "$@" >"$logs/$backend.log" 2>&1 &
  backend_of[$!]=$backend
done
while [ ${#backend_of[@]} -gt 0 ]; do finish_one; done
echo "--- $((SECONDS - started)) s for ${backends[*]} (${at_once} at once)"
if [ ${#reported[@]} -ne ${#backends[@]} ]; then
  echo "FAILED: ran ${reported[*]:-nothing} of ${backends[*]}"
  exit 1
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED on: ${failed[*]}"
  exit 1
fi
echo "all backends passed: ${backends[*]}"
