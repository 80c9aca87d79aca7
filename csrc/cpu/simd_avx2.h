// 8-wide fp32 vectors for AVX2 + FMA + F16C. Only included by *_avx2.cpp,
// which CMake compiles with those flags.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "shardkit/half.h"

namespace shardkit::simd_avx2 {

struct Vec {
  __m256 v;
  Vec() = default;
  Vec(__m256 x) : v(x) {}
  explicit Vec(float f) : v(_mm256_set1_ps(f)) {}
};
static inline Vec operator+(Vec a, Vec b) { return _mm256_add_ps(a.v, b.v); }
static inline Vec operator-(Vec a, Vec b) { return _mm256_sub_ps(a.v, b.v); }
static inline Vec operator*(Vec a, Vec b) { return _mm256_mul_ps(a.v, b.v); }
static inline Vec operator/(Vec a, Vec b) { return _mm256_div_ps(a.v, b.v); }
static inline Vec vsqrt(Vec a) { return _mm256_sqrt_ps(a.v); }
static inline Vec vmax(Vec a, Vec b) { return _mm256_max_ps(a.v, b.v); }

struct Simd {
  using Vec = simd_avx2::Vec;
  static constexpr int kWidth = 8;

  static inline Vec load(const float* p) { return _mm256_loadu_ps(p); }
  static inline Vec load(const BF16* p) {
    __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static inline Vec load(const F16* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }

  static inline void store(float* p, Vec x) { _mm256_storeu_ps(p, x.v); }
  // fp32 -> 8 x bf16 with integer round-to-nearest-even, NaNs kept quiet:
  // the same rule as float_to_bf16 in half.h, eight lanes at a time.
  static inline __m128i pack(const BF16*, Vec x) {
    __m256i u = _mm256_castps_si256(x.v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
    __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
    __m256i is_nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));
    __m256i bits = _mm256_and_si256(_mm256_blendv_epi8(rounded, quiet, is_nan), _mm256_set1_epi32(0xffff));
    // packus works per 128-bit lane: pack, then gather the two low quadwords.
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(bits, bits), 0xd8));
  }
  static inline __m128i pack(const F16*, Vec x) { return _mm256_cvtps_ph(x.v, _MM_FROUND_TO_NEAREST_INT); }

  static inline void store(BF16* p, Vec x) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), pack(p, x)); }
  static inline void store(F16* p, Vec x) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), pack(p, x)); }

  // Stores of data that the kernel writes but never reads (a bf16/fp16
  // parameter rebuilt from its fp32 master): non-temporal when aligned, so the
  // line is not first read from memory (2 of ~30 bytes per parameter).
  template <typename T>
  static inline void store_stream(T* p, Vec x) {
    if ((reinterpret_cast<uintptr_t>(p) & 15) != 0) return store(p, x);
    _mm_stream_si128(reinterpret_cast<__m128i*>(p), pack(p, x));
  }
  // Orders the non-temporal stores before the thread reports completion.
  static inline void fence() { _mm_sfence(); }
};

}  // namespace shardkit::simd_avx2
