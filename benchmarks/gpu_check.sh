#!/usr/bin/env bash
# The GPU check of issue #14, on one GPU, meant to take under 8 minutes. NOT RUN ON A GPU YET (see RESULTS.md).
#
#   bash benchmarks/gpu_check.sh              # build with CUDA, then every check, in order
#   SKIP_BUILD=1 bash benchmarks/gpu_check.sh # shardkit (with _C_cuda) already importable from python/
#   bash benchmarks/gpu_check.sh --dry-cpu    # the Python checks on CPU at small sizes (tests the script itself)
#
# Checks, in order; the first failure stops the script with its reason:
#   1. the CUDA op tests (pytest -m gpu)
#   2. fused AdamW fp32 and bf16-mixed vs torch fused=True: >= 1.0x and >= 90% of the measured copy bandwidth
#   3. 30 SFT steps on CUDA, loss decreasing; peak memory (torch.cuda.max_memory_allocated) within 10% of
#      shardkit.memory.estimate
#   4. FSDP2 (fully_shard, one rank) + FusedAdamW through the SFT trainer, 10 steps
#   5. the GPU speedrun preset (shardkit speedrun --preset gpu --device cuda)
#   6. one rank of shardkit.fsdp.shard() on CUDA (transport "nccl"; with one rank no collective runs),
#      FULL_SHARD step time <= FSDP2's on the same model. Written and CPU-tested (its multi-rank device
#      path runs over gloo in tests/fsdp/test_fsdp_transport.py), never run on a GPU yet.
# Each check prints one line "CHECK <name>: PASS|FAIL ..."; rows in RESULTS.md table format go to
# benchmarks/out/gpu_check.md (figures in benchmarks/out/gpu_check.json).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/python:$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=benchmarks/out
DEVICE=cuda
if [[ "${1:-}" == "--dry-cpu" ]]; then
    DEVICE=cpu
    OUT=benchmarks/out/dry-cpu
fi
mkdir -p "$OUT"
STARTED=$SECONDS

fail() {
    echo "gpu_check: FAILED at check '$1' after $((SECONDS - STARTED)) s: $2" >&2
    echo "gpu_check: the checks after it did not run; rows so far in $OUT/gpu_check.md" >&2
    exit 1
}

run_check() {  # name, then the command; one summary line, stop at the first failure
    local name=$1
    shift
    local log="$OUT/$name.log"
    if "$@" >"$log" 2>&1; then
        grep '^CHECK ' "$log" | tail -1 || echo "CHECK $name: PASS (see $log)"
    else
        grep '^CHECK ' "$log" | tail -1 || echo "CHECK $name: FAIL"
        tail -5 "$log" >&2
        fail "$name" "see $log"
    fi
}

if [[ $DEVICE == cuda ]]; then
    python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
        || fail setup "no CUDA device visible to torch (for a dry run of the helpers: --dry-cpu)"
    python3 -c "import torch; print('gpu_check:', torch.__version__, torch.cuda.get_device_name())"
    if [[ -z "${SKIP_BUILD:-}" ]]; then
        # Build tools first, then build without isolation against them (offline when they are pre-installed).
        python3 -m pip install -q scikit-build-core pybind11 "cmake>=3.31" ninja pytest numpy safetensors tqdm \
            || fail build "pip could not install the build tools"
        SHARDKIT_ENABLE_CUDA=ON python3 -m pip wheel -q --no-deps --no-build-isolation -w "$OUT/wheel" . \
            || fail build "the CUDA build failed"
        python3 -m zipfile -e "$(ls "$OUT"/wheel/shardkit-*.whl | head -1)" "$OUT/wheel/unpacked" \
            && cp "$OUT"/wheel/unpacked/shardkit/_C*.so python/shardkit/ || fail build "no native module in the wheel"
    fi
    python3 -m shardkit.env
    export SHARDKIT_REQUIRE_NATIVE=1
    run_check ops python3 -m pytest tests -m gpu -q -p no:cacheprovider
fi
run_check adam python3 -m benchmarks.gpu_check adam --device "$DEVICE" --out "$OUT"
run_check sft python3 -m benchmarks.gpu_check sft --device "$DEVICE" --out "$OUT"
run_check fsdp2 python3 -m benchmarks.gpu_check fsdp2 --device "$DEVICE" --out "$OUT"
if [[ $DEVICE == cuda ]]; then
    run_check speedrun python3 -m shardkit speedrun --preset gpu --device cuda --out "$OUT/speedrun-gpu" --restart
fi
run_check shard python3 -m benchmarks.gpu_check shard --device "$DEVICE" --out "$OUT"
echo "gpu_check: all checks passed in $((SECONDS - STARTED)) s; rows in $OUT/gpu_check.md"
