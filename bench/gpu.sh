#!/usr/bin/env bash
# Every GPU check and benchmark of the project in one command, for a session lent a GPU:
#   bash bench/gpu.sh            # results in bench/out/*_cuda.json, log on stdout
#   BACKSAL_BENCH_DEVICE=cpu bash bench/gpu.sh   # a dry run of every step at tiny sizes, on
#                                # the CPU (no CUDA check), to smoke-test the script without a GPU
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
device=${BACKSAL_BENCH_DEVICE:-cuda}
"$python" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'
if [ "$device" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    step 110 bench/check_cuda.py
    step 150 bench/bench_engine.py --device cuda
    # meta per row / plain engine per row is printed by bench_meta.py ("x the plain engine")
    step 150 bench/bench_meta.py --device cuda --batch 16 64
    step 170 bench/profile_meta.py --device cuda
    step 60 bench/bench_shared_forward.py --device cuda
    step 45 bench/bench_metrics.py --device cuda
else
    # tiny sizes: the same code paths (a few minutes in all), figures meaningless
    step 300 bench/bench_engine.py --device "$device" --size 32 --batch 2 --repeats 1 --skip-per-pair
    step 300 bench/bench_meta.py --device "$device" --size 32 --batch 2
    step 300 bench/bench_shared_forward.py --device "$device" --size 32 --images 2 --classes 1 2
    step 300 bench/bench_metrics.py --device "$device" --queries 16 --repeats 1
fi
if [ -n "${OUT:-}" ]; then
    cp bench/out/*_"$device"*.json "$OUT"/ 2>/dev/null
fi
exit $status
