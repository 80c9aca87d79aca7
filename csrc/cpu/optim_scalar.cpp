// Portable build of the optimizer loops (any CPU).
#include "cpu/optim_loop.h"
#include "cpu/simd_scalar.h"

namespace shardkit {

OptimIsa optim_isa_scalar() { return optim_loop::make_table<simd_scalar::Simd>(); }

}  // namespace shardkit
