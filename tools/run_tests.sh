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
while [ $# -gt 0 ] && [[ "$1" =~ ^(jax|tensorflow|torch)$ ]]; do
  [[ " ${backends[*]} " == *" $1 "* ]] || backends+=("$1")
  shift
done
[ ${#backends[@]} -eq 0 ] && backends=(jax tensorflow torch)
# (nproc would follow OMP_NUM_THREADS.)
at_once=${TEST_JOBS:-$(python -c "import os; print(len(os.sched_getaffinity(0)))")}
[[ "$at_once" =~ ^[1-9][0-9]*$ ]] || { echo "TEST_JOBS must be a positive integer, not '$at_once'"; exit 1; }

# torch first and pinned: the CPU wheel. An unpinned torch pulls the CUDA stack.
python -m pip install -q "torch==2.13.0" || exit 1
python -m pip install -q -e ".[test]" || exit 1
# The real CLIP BPE merges ship inside open_clip_torch's wheel: fetched once
# here (no dependencies, not installed) so that no test downloads anything.
ls .cache/wheels/open_clip_torch-3.3.0-*.whl >/dev/null 2>&1 ||
  python -m pip download -q --no-deps "open_clip_torch==3.3.0" -d .cache/wheels || exit 1

logs=$(mktemp -d)
declare -A backend_of=()  # pid -> backend, for those running
stop_running() {  # on exit, and when killed (a CI time limit): the unfinished suites' output so far
  local pid
  for pid in "${!backend_of[@]}"; do
    echo "=== KERAS_BACKEND=${backend_of[$pid]}: stopped unfinished; its output so far ==="
    tail -c 20000 "$logs/${backend_of[$pid]}.log"
    kill -TERM -- "-$pid" "$pid" 2>/dev/null  # the suite's process group: pytest and its subprocesses
  done
  rm -rf "$logs"
}
trap stop_running EXIT
trap 'trap "" TERM INT; exit 143' TERM INT  # a second signal must not cut the report short
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
  KERAS_BACKEND=$backend setsid -w python -m pytest -q -p no:cacheprovider tests "$@" >"$logs/$backend.log" 2>&1 &
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
