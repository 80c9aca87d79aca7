// Scalar bf16/fp16 <-> fp32 conversions with round-to-nearest-even, written
// with integer arithmetic so the scalar kernel needs no special CPU features.
#pragma once

#include <cstdint>
#include <cstring>

#include "shardkit/common.h"

namespace shardkit {

// Storage tags: a 16-bit pattern, so kernels can template on the element type.
struct BF16 {
  uint16_t bits;
};
struct F16 {
  uint16_t bits;
};

SHARDKIT_HD uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

SHARDKIT_HD float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

SHARDKIT_HD float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

SHARDKIT_HD uint16_t float_to_bf16(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return static_cast<uint16_t>(u >> 16);
}

SHARDKIT_HD float f16_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1fu) return bits_float(sign | 0x7f800000u | (mant << 13));  // inf / nan
  if (exp == 0) {
    if (mant == 0) return bits_float(sign);
    // Subnormal: value = mant * 2^-24.
    float value = static_cast<float>(mant) * 5.9604644775390625e-08f;
    return sign ? -value : value;
  }
  return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

SHARDKIT_HD uint16_t float_to_f16(float f) {
  uint32_t u = float_bits(f);
  uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // nan
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow rounds to inf
  if (abs < 0x38800000u) {
    // Result is subnormal (or zero) in fp16: scale so that the fp16 subnormal
    // LSB (2^-24) lands on an integer, and let fp32 rounding (RNE) do the work.
    float scaled = bits_float(abs) * 16777216.0f;  // * 2^24
    // Adding 2^23 forces rounding at integer granularity, ties to even.
    float rounded = (scaled + 8388608.0f) - 8388608.0f;
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(rounded));
  }
  // Normal: rebias the exponent and round the 13 dropped mantissa bits.
  uint32_t mant_odd = (abs >> 13) & 1u;
  abs += 0xc8000fffu + mant_odd;  // rebias (-112 << 23) plus rounding bias
  return static_cast<uint16_t>(sign | (abs >> 13));
}

}  // namespace shardkit
