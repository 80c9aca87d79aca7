// Entry points of the per-ISA builds of optim_loop.h (optim_scalar.cpp,
// optim_avx2.cpp, optim_avx512.cpp): tables of span functions, each updating
// elements [lo, hi) of tensor i. optim_cpu.cpp picks a table at run time and
// splits the work across threads.
#pragma once

#include <cstddef>
#include <cstdint>

#include "shardkit/optim.h"
#include "shardkit/optim_math.h"

namespace shardkit {

struct ProbeBuffers {
  float* a;
  float* b;
  float* c;
  const float* d;
};

struct OptimIsa {
  using AdamSpan = void (*)(const OptimTensors&, size_t, int64_t, int64_t, const AdamConsts&);
  using SgdSpan = void (*)(const OptimTensors&, size_t, int64_t, int64_t, const SgdConsts&);
  using ProbeSpan = void (*)(const ProbeBuffers&, int64_t, int64_t);
  AdamSpan adam[3][3];  // [param dtype][grad dtype]: 0 fp32, 1 bf16, 2 fp16
  SgdSpan sgd[3][3];
  ProbeSpan probe;
};

OptimIsa optim_isa_scalar();
#if defined(SHARDKIT_X86)
OptimIsa optim_isa_avx2();
OptimIsa optim_isa_avx512(bool native_bf16);
#endif

}  // namespace shardkit
