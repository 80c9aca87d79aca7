// The portable "vector" of width 1 used by the scalar kernel path.
#pragma once

#include "shardkit/half.h"

namespace shardkit::simd_scalar {

struct Simd {
  using Vec = float;
  static constexpr int kWidth = 1;
  static inline Vec load(const float* p) { return *p; }
  static inline Vec load(const BF16* p) { return bf16_to_float(p->bits); }
  static inline Vec load(const F16* p) { return f16_to_float(p->bits); }
  static inline void store(float* p, Vec v) { *p = v; }
  static inline void store(BF16* p, Vec v) { p->bits = float_to_bf16(v); }
  static inline void store(F16* p, Vec v) { p->bits = float_to_f16(v); }
  template <typename T>
  static inline void store_stream(T* p, Vec v) { store(p, v); }
  static inline void fence() {}
};

}  // namespace shardkit::simd_scalar
