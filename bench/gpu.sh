#!/usr/bin/env bash
# Every GPU check and benchmark of the project in one command, for a session lent a GPU:
#   bash bench/gpu.sh            # results in bench/out/*_cuda.json, log on stdout
#   BACKSAL_BENCH_DEVICE=cpu bash bench/gpu.sh   # a dry run of every step at tiny sizes, on
#                                # the CPU (no CUDA check), to smoke-test the script without a GPU
# With $OUT set (the device tool's result folder) the JSON files are copied there. The scripts
# write them to bench/out/, or to $BACKSAL_BENCH_OUT where it is set (tests/test_bench.py runs
# the CPU dry run that way, so that a script that no longer runs is seen before a GPU session).
# Each step has its own time limit, so one that hangs or fails does not cost the others, and no
# step starts once BACKSAL_GPU_BUDGET_S is spent (default 540 s, under the device tool's 10
# minutes a call; 1800 s for the CPU dry run). The steps run most important first: the CUDA
# checks, then the issues' targets (engine overhead, meta-saliency, deletion / insertion), then
# the profiles.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
status=0
device=${BACKSAL_BENCH_DEVICE:-cuda}
if [ "$device" = cuda ]; then budget=${BACKSAL_GPU_BUDGET_S:-540}; else budget=${BACKSAL_GPU_BUDGET_S:-1800}; fi
deadline=$((SECONDS + budget))
step() {
    local limit=$1
    shift
    local left=$((deadline - SECONDS))
    if [ "$left" -lt 15 ]; then
        echo "=== $* skipped: ${budget}s budget spent"
        status=1
        return
    fi
    [ "$limit" -le "$left" ] || limit=$left
    echo "=== $* (limit ${limit}s)"
    local start=$SECONDS
    timeout -k 5 "$limit" "$python" "$@"
    local rc=$?
    echo "=== rc=$rc after $((SECONDS - start))s"
    [ $rc -eq 0 ] || status=1
}
"$python" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'
if [ "$device" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    step 110 bench/check_cuda.py
    step 150 bench/bench_engine.py --device cuda
    # meta per row / plain engine per row is printed by bench_meta.py ("x the plain engine")
    step 150 bench/bench_meta.py --device cuda --batch 16 64
    # the per-pixel reference loop launches a kernel per pixel copied: keep it small (one
    # curve per row, one timed run; the loop's time grows with every map and mode)
    step 60 bench/bench_deletion.py --device cuda --rows 2 --steps 8 --maps 1 --modes deletion --repeats 1
    step 45 bench/bench_sanity.py --device cuda
    step 170 bench/profile_meta.py --device cuda
    step 45 bench/bench_metrics.py --device cuda
    step 60 bench/bench_shared_forward.py --device cuda
else
    # tiny sizes: the same code paths (a few minutes in all), figures meaningless
    step 300 bench/bench_engine.py --device "$device" --size 32 --batch 2 --repeats 1 --skip-per-pair
    step 300 bench/bench_meta.py --device "$device" --size 32 --batch 2
    step 300 bench/bench_shared_forward.py --device "$device" --size 32 --images 2 --classes 1 2
    step 300 bench/bench_metrics.py --device "$device" --queries 16 --repeats 1
    step 300 bench/bench_deletion.py --device "$device" --rows 1 --steps 2 --size 32 --repeats 1
    step 300 bench/bench_sanity.py --device "$device" --rows 1 --size 32
    step 300 bench/profile_meta.py --device "$device" --size 32 --batch 2 --arch resnet50 --top 3
fi
if [ -n "${OUT:-}" ]; then
    cp "${BACKSAL_BENCH_OUT:-bench/out}"/*_"$device"*.json "$OUT"/ 2>/dev/null
fi
exit $status
