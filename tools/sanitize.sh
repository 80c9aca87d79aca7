#!/usr/bin/env bash
# Build shardkit._C with AddressSanitizer + UndefinedBehaviorSanitizer and run
# the native tests against it.
#
#   tools/sanitize.sh                 # build, then every native test (~5 min of tests on 2 cores)
#   tools/sanitize.sh --quick         # build, then CI's smaller set (~2 min of tests)
#   tools/sanitize.sh tests/ops -k x  # build, then these pytest arguments instead
#
# CMake is driven directly (not pip; no LTO, which would undo the -O1 and
# makes linking slow), into build/sanitize/ (override with
# SHARDKIT_SANITIZE_BUILD). The sanitized _C goes into a private copy of
# python/shardkit under that folder, put first on PYTHONPATH: the _C*.so in
# python/shardkit (and any installed shardkit) is never touched. CUDA is off.
#
# The sanitizer runtimes are preloaded into the (uninstrumented) Python with
# LD_PRELOAD; the env is inherited by the multi-process tests' children
# (spawn/forkserver), so their native code is checked too. Any finding aborts
# the process that made it, which fails the test (or the run) that did it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${SHARDKIT_SANITIZE_BUILD:-$ROOT/build/sanitize}
JOBS=${SHARDKIT_SANITIZE_JOBS:-2}
PYTHON=${PYTHON:-python}
CXX=${CXX:-g++}
start=$(date +%s)
mkdir -p "$BUILD"

# pybind11's CMake config: from the environment if it has pybind11, else a
# private copy under the build folder (pip's build isolation fetched it for
# the normal build, so a plain test environment may not have it).
if ! PYBIND11_DIR=$("$PYTHON" -m pybind11 --cmakedir 2>/dev/null); then
  if ! PYBIND11_DIR=$(PYTHONPATH="$BUILD/pydeps" "$PYTHON" -m pybind11 --cmakedir 2>/dev/null); then
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check --target "$BUILD/pydeps" "pybind11>=2.12"
    PYBIND11_DIR=$(PYTHONPATH="$BUILD/pydeps" "$PYTHON" -m pybind11 --cmakedir)
  fi
fi

generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
cmake -S "$ROOT" -B "$BUILD/cmake" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INTERPROCEDURAL_OPTIMIZATION=OFF \
  -DCMAKE_CXX_COMPILER="$CXX" \
  -DSHARDKIT_ENABLE_CUDA=OFF \
  -DSHARDKIT_SANITIZE=address,undefined \
  -DPython_EXECUTABLE="$(command -v "$PYTHON")" \
  -Dpybind11_DIR="$PYBIND11_DIR" >"$BUILD/cmake.log" 2>&1 || { cat "$BUILD/cmake.log"; exit 1; }
grep "shardkit: _C" "$BUILD/cmake.log" || true
cmake --build "$BUILD/cmake" --target _C -j "$JOBS"
built=$(date +%s)

# A private package copy holding the sanitized _C and no _C_cuda.
rm -rf "$BUILD/pkg"
mkdir -p "$BUILD/pkg"
cp -r "$ROOT/python/shardkit" "$BUILD/pkg/"
find "$BUILD/pkg" -name '*.so' -delete
find "$BUILD/pkg" -name '__pycache__' -prune -exec rm -rf {} +
cp "$BUILD/cmake/"_C*.so "$BUILD/pkg/shardkit/"

# The runtime of the compiler that built _C; libasan first, as ASan requires.
libasan=$("$CXX" -print-file-name=libasan.so)
libubsan=$("$CXX" -print-file-name=libubsan.so)
export LD_PRELOAD="$libasan $libubsan${LD_PRELOAD:+ $LD_PRELOAD}"
# detect_leaks=0         CPython and torch keep allocations alive until exit on
#                        purpose; LeakSanitizer would report those, not ours.
# abort_on_error=1       a finding ends the process with SIGABRT (the test fails,
#                        a child's death fails its parent's test).
# handle_segv=1          print the stack of a native crash.
# strict_init_order=1, check_initialization_order=1  static-init order bugs.
# detect_stack_use_after_return=1  dangling pointers to a returned frame.
# allocator_may_return_null=1  a huge-size request fails like malloc (the
#                        tests check those errors) instead of aborting.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:handle_segv=1:strict_init_order=1:check_initialization_order=1:detect_stack_use_after_return=1:allocator_may_return_null=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
# print_stacktrace=1     where the undefined behaviour happened
# halt_on_error=1        matches -fno-sanitize-recover: stop at the first one.
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export PYTHONPATH="$BUILD/pkg${PYTHONPATH:+:$PYTHONPATH}"
export SHARDKIT_REQUIRE_NATIVE=1

# The sanitized module is the one imported, with the sanitizer linked in.
"$PYTHON" - "$BUILD/pkg/shardkit" <<'EOF'
import os, sys
import shardkit, shardkit._native as n
where = os.path.dirname(os.path.realpath(n.C.__file__))
assert where == os.path.realpath(sys.argv[1]), f"imported {n.C.__file__}, not the sanitized copy"
maps = open("/proc/self/maps").read()
assert "libasan" in maps and "libubsan" in maps, "sanitizer runtimes not loaded"
print(f"sanitized shardkit._C: {n.C.__file__}")
EOF

# Children started with spawn/forkserver (the multi-process tests) are new
# processes that inherit LD_PRELOAD and PYTHONPATH: the sanitized module again.
"$PYTHON" -c '
import subprocess, sys
probe = "import shardkit._native as n; print(n.C.__file__, \"libasan\" in open(\"/proc/self/maps\").read())"
where, asan = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout.split()
assert asan == "True" and "/pkg/shardkit/" in where, (where, asan)
print("child processes: sanitized too")
'

if [ "${1:-}" = "--quick" ]; then
  # CI's set (a few minutes): the BPE core (parsing arbitrary bytes), the
  # optimizer kernels, the shared-memory collectives at 2 ranks, the fuzzers.
  shift
  set -- tests/ops tests/tokenizer tests/fuzz tests/comm/test_comm_reduce_kernel.py \
    "tests/comm/test_comm_collectives.py::test_all_collectives_match_gloo[2]" -m "not gpu" -q -p no:cacheprovider "$@"
elif [ "$#" -eq 0 ]; then
  # Every test that runs native code: the optimizer kernels (also inside
  # FSDP2/TP/DDP), the BPE core, the shared-memory transport and collectives
  # at 2-4 ranks with their fault cases, and the fuzzers.
  set -- tests/ops tests/optim tests/tokenizer tests/fuzz tests/comm/test_comm_reduce_kernel.py \
    tests/comm/test_comm_collectives.py tests/comm/test_comm_init.py tests/comm/test_comm_faults.py \
    -m "not gpu" -q -p no:cacheprovider
fi
"$PYTHON" -m pytest "$@"
end=$(date +%s)
echo "sanitize.sh: build $((built - start)) s, tests $((end - built)) s"
