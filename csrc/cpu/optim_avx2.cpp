// AVX2 + FMA + F16C build of the optimizer loops (compiled with those flags).
#include "cpu/optim_loop.h"
#include "cpu/simd_avx2.h"

namespace shardkit {

OptimIsa optim_isa_avx2() { return optim_loop::make_table<simd_avx2::Simd>(); }

}  // namespace shardkit
