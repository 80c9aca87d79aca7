// The per-ISA table of the collectives' reduction kernels (comm_reduce_impl.h).
#pragma once

#include "shardkit/comm.h"

namespace shardkit {

struct ReduceKernels {
  void (*to_acc)(void* acc_out, const void* acc_in, const void* local, int64_t n, DType dtype, ReduceOp op);
  void (*acc_acc)(void* acc_out, const void* a, const void* b, int64_t n, DType dtype, ReduceOp op);
  void (*finish)(void* out, void* out2, const void* acc_in, const void* local, int64_t n, DType dtype, ReduceOp op,
                 int world);
};

namespace reduce_scalar { ReduceKernels kernels(); }
namespace reduce_avx2 { ReduceKernels kernels(); }
namespace reduce_avx512 { ReduceKernels kernels(); }

}  // namespace shardkit
