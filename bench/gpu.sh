#!/usr/bin/env bash
# Every GPU check and benchmark of the project in one command, for a session lent a GPU:
#   bash bench/gpu.sh            # results in bench/out/*_cuda.json, log on stdout
# With $OUT set (the device tool's result folder) the JSON files and the log are copied there.
# Each step has its own time limit, so one that hangs or fails does not cost the others.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
status=0
step() {
    local limit=$1
    shift
    echo "=== $* (limit ${limit}s)"
    local start=$SECONDS
    timeout -k 5 "$limit" "$python" "$@"
    local rc=$?
    echo "=== rc=$rc after $((SECONDS - start))s"
    [ $rc -eq 0 ] || status=1
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$python" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'
step 110 bench/check_cuda.py
step 150 bench/bench_engine.py --device cuda
step 150 bench/bench_meta.py --device cuda --batch 16 64
step 170 bench/profile_meta.py --device cuda
step 60 bench/bench_shared_forward.py --device cuda
step 45 bench/bench_metrics.py --device cuda
if [ -n "${OUT:-}" ]; then
    cp bench/out/*_cuda.json "$OUT"/ 2>/dev/null
fi
exit $status
