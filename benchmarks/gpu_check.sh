#!/usr/bin/env bash
# On a GPU machine: build with CUDA, run the `gpu` tests and the GPU Adam
# benchmark. Finishes in under 5 minutes on one H100/H200.
#   bash benchmarks/gpu_check.sh            (results in benchmarks/out/)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 SHARDKIT_REQUIRE_NATIVE=1 SHARDKIT_ENABLE_CUDA=ON
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())"
# Build tools first, then build without isolation against them (works offline
# when they are pre-installed or carried as wheels).
python3 -m pip install -q scikit-build-core pybind11 "cmake>=3.31" ninja pytest numpy safetensors tqdm
python3 -m pip install -q --no-build-isolation --no-deps .
python3 -m shardkit.env
python3 -m pytest tests -m gpu -q -p no:cacheprovider
python3 -m shardkit.bench.adam_cuda --sizes 100M 1G
