// AVX-512 build of the optimizer loops, with and without the AVX-512 BF16
// conversion instruction (compiled with -mavx512f -mavx512bf16 ...).
#include "cpu/optim_loop.h"
#include "cpu/simd_avx512.h"

namespace shardkit {

OptimIsa optim_isa_avx512(bool native_bf16) {
  return native_bf16 ? optim_loop::make_table<simd_avx512::Simd<true>>()
                     : optim_loop::make_table<simd_avx512::Simd<false>>();
}

}  // namespace shardkit
