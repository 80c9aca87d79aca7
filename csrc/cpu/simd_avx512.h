// 16-wide fp32 vectors for AVX-512 (F, BW, VL, DQ). Only included by
// *_avx512.cpp. kNativeBf16 selects the AVX-512 BF16 conversion instruction
// (vcvtneps2bf16); CPUs without it use integer round-to-nearest-even.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "shardkit/half.h"

namespace shardkit::simd_avx512 {

struct Vec {
  __m512 v;
  Vec() = default;
  Vec(__m512 x) : v(x) {}
  explicit Vec(float f) : v(_mm512_set1_ps(f)) {}
};
static inline Vec operator+(Vec a, Vec b) { return _mm512_add_ps(a.v, b.v); }
static inline Vec operator-(Vec a, Vec b) { return _mm512_sub_ps(a.v, b.v); }
static inline Vec operator*(Vec a, Vec b) { return _mm512_mul_ps(a.v, b.v); }
static inline Vec operator/(Vec a, Vec b) { return _mm512_div_ps(a.v, b.v); }
static inline Vec vsqrt(Vec a) { return _mm512_sqrt_ps(a.v); }
static inline Vec vmax(Vec a, Vec b) { return _mm512_max_ps(a.v, b.v); }

template <bool kNativeBf16>
struct Simd {
  using Vec = simd_avx512::Vec;
  static constexpr int kWidth = 16;

  static inline Vec load(const float* p) { return _mm512_loadu_ps(p); }
  static inline Vec load(const BF16* p) {
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
  static inline Vec load(const F16* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }

  static inline void store(float* p, Vec x) { _mm512_storeu_ps(p, x.v); }
  static inline __m256i pack(const BF16*, Vec x) {
    if constexpr (kNativeBf16) {
      // vcvtneps2bf16 rounds to nearest even; it treats fp32 denormal inputs
      // as zero, which only masters below 1.2e-38 could notice.
      return reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(x.v));
    } else {
      __m512i u = _mm512_castps_si512(x.v);
      __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
      __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
      __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
      __m512i abs = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
      __mmask16 is_nan = _mm512_cmpgt_epi32_mask(abs, _mm512_set1_epi32(0x7f800000));
      return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(is_nan, rounded, quiet));
    }
  }
  static inline __m256i pack(const F16*, Vec x) { return _mm512_cvtps_ph(x.v, _MM_FROUND_TO_NEAREST_INT); }

  static inline void store(BF16* p, Vec x) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), pack(p, x)); }
  static inline void store(F16* p, Vec x) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), pack(p, x)); }

  // Non-temporal store of a parameter that is written but never read (see
  // simd_avx2.h).
  template <typename T>
  static inline void store_stream(T* p, Vec x) {
    if ((reinterpret_cast<uintptr_t>(p) & 31) != 0) return store(p, x);
    _mm256_stream_si256(reinterpret_cast<__m256i*>(p), pack(p, x));
  }
  static inline void fence() { _mm_sfence(); }
};

}  // namespace shardkit::simd_avx512
