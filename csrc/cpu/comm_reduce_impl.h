// Element-wise reduction loops of the collectives, written once and compiled
// per ISA: comm_reduce_{scalar,avx2,avx512}.cpp include this file inside
// their own namespace (SHARDKIT_REDUCE_NS) with their own compiler flags, so
// the plain loops below are auto-vectorised to that ISA's width. Half types
// are processed in blocks: convert to fp32, reduce, convert back.
#include <algorithm>
#include <cstring>
#include <type_traits>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "cpu/comm_reduce_isa.h"
#include "shardkit/half.h"

namespace shardkit {
namespace SHARDKIT_REDUCE_NS {
namespace {

constexpr int64_t kBlock = 512;  // elements per fp32 staging block (2 KiB, stays in L1)

template <typename A>
inline A pick_max(A a, A b) {
  // NaN propagates, as in torch.maximum: a NaN `a` fails `a == a`.
  return (a > b || a != a) ? a : b;
}
template <typename A>
inline A pick_min(A a, A b) {
  return (a < b || a != a) ? a : b;
}

// d[i] = x[i] op y[i] on the accumulation type; d may alias x or y.
template <typename A>
void combine(A* d, const A* x, const A* y, int64_t n, ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      for (int64_t i = 0; i < n; ++i) d[i] = x[i] + y[i];
      break;
    case ReduceOp::kMax:
      for (int64_t i = 0; i < n; ++i) d[i] = pick_max(x[i], y[i]);
      break;
    case ReduceOp::kMin:
      for (int64_t i = 0; i < n; ++i) d[i] = pick_min(x[i], y[i]);
      break;
  }
}

template <typename A>
void divide(A* d, int64_t n, int world) {
  const A w = static_cast<A>(world);
  for (int64_t i = 0; i < n; ++i) d[i] = d[i] / w;
}

// 16-bit <-> fp32 conversions of one block.
void widen(float* d, const BF16* s, int64_t n) {
  const uint16_t* bits = reinterpret_cast<const uint16_t*>(s);
  for (int64_t i = 0; i < n; ++i) d[i] = bits_float(static_cast<uint32_t>(bits[i]) << 16);
}
void narrow(BF16* d, const float* s, int64_t n) {
  uint16_t* bits = reinterpret_cast<uint16_t*>(d);
  for (int64_t i = 0; i < n; ++i) bits[i] = float_to_bf16(s[i]);
}
void widen(float* d, const F16* s, int64_t n) {
  const uint16_t* bits = reinterpret_cast<const uint16_t*>(s);
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bits + i))));
  }
#endif
  for (; i < n; ++i) d[i] = f16_to_float(bits[i]);
}
void narrow(F16* d, const float* s, int64_t n) {
  uint16_t* bits = reinterpret_cast<uint16_t*>(d);
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(bits + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
  }
#endif
  for (; i < n; ++i) bits[i] = float_to_f16(s[i]);
}

// Same-type storage (fp32, fp64, int32, int64): reduce in place, no staging.
template <typename T>
struct Direct {
  static void to_acc(T* acc_out, const T* acc_in, const T* local, int64_t n, ReduceOp op) {
    if (acc_in == nullptr) {
      if (acc_out != local) std::memmove(acc_out, local, n * sizeof(T));
    } else {
      combine(acc_out, acc_in, local, n, op);
    }
  }
  static void finish(T* out, T* out2, const T* acc_in, const T* local, int64_t n, ReduceOp op, int world) {
    if (local != nullptr) {
      combine(out, acc_in, local, n, op);
    } else if (out != acc_in) {
      std::memmove(out, acc_in, n * sizeof(T));
    }
    if (op == ReduceOp::kAvg) divide(out, n, world);
    if (out2 != nullptr) std::memcpy(out2, out, n * sizeof(T));
  }
};

// 16-bit storage accumulated in fp32.
template <typename H>
struct Staged {
  static void to_acc(float* acc_out, const float* acc_in, const H* local, int64_t n, ReduceOp op) {
    float tmp[kBlock];
    for (int64_t b = 0; b < n; b += kBlock) {
      const int64_t m = std::min(kBlock, n - b);
      if (acc_in == nullptr) {
        widen(acc_out + b, local + b, m);
      } else {
        widen(tmp, local + b, m);
        combine(acc_out + b, acc_in + b, tmp, m, op);
      }
    }
  }
  static void finish(H* out, H* out2, const float* acc_in, const H* local, int64_t n, ReduceOp op, int world) {
    float tmp[kBlock];
    for (int64_t b = 0; b < n; b += kBlock) {
      const int64_t m = std::min(kBlock, n - b);
      if (local != nullptr) {
        widen(tmp, local + b, m);
        combine(tmp, acc_in + b, tmp, m, op);
      } else {
        std::memcpy(tmp, acc_in + b, m * sizeof(float));
      }
      if (op == ReduceOp::kAvg) divide(tmp, m, world);
      narrow(out + b, tmp, m);
      if (out2 != nullptr) std::memcpy(out2 + b, out + b, m * sizeof(H));
    }
  }
};

template <typename Fn>
void by_dtype(DType dtype, const Fn& fn) {
  switch (dtype) {
    case DType::kFloat32: fn(Direct<float>{}, static_cast<float*>(nullptr)); break;
    case DType::kFloat64: fn(Direct<double>{}, static_cast<double*>(nullptr)); break;
    case DType::kInt32: fn(Direct<int32_t>{}, static_cast<int32_t*>(nullptr)); break;
    case DType::kInt64: fn(Direct<int64_t>{}, static_cast<int64_t*>(nullptr)); break;
    case DType::kBFloat16: fn(Staged<BF16>{}, static_cast<float*>(nullptr)); break;
    case DType::kFloat16: fn(Staged<F16>{}, static_cast<float*>(nullptr)); break;
    default: SHARDKIT_CHECK(false, "dtype: collectives support float32, float64, bfloat16, float16, int32 and int64, got ", dtype_name(dtype));
  }
}

template <typename K>
struct StorageOf;
template <typename T>
struct StorageOf<Direct<T>> { using type = T; };
template <typename H>
struct StorageOf<Staged<H>> { using type = H; };

void to_acc_impl(void* acc_out, const void* acc_in, const void* local, int64_t n, DType dtype, ReduceOp op) {
  by_dtype(dtype, [&](auto kernel, auto* acc_tag) {
    using K = decltype(kernel);
    using A = std::remove_pointer_t<decltype(acc_tag)>;
    using E = typename StorageOf<K>::type;
    K::to_acc(static_cast<A*>(acc_out), static_cast<const A*>(acc_in), static_cast<const E*>(local), n, op);
  });
}

void acc_acc_impl(void* acc_out, const void* a, const void* b, int64_t n, DType dtype, ReduceOp op) {
  by_dtype(dtype, [&](auto, auto* acc_tag) {
    using A = std::remove_pointer_t<decltype(acc_tag)>;
    combine(static_cast<A*>(acc_out), static_cast<const A*>(a), static_cast<const A*>(b), n, op);
  });
}

void finish_impl(void* out, void* out2, const void* acc_in, const void* local, int64_t n, DType dtype, ReduceOp op,
                 int world) {
  by_dtype(dtype, [&](auto kernel, auto* acc_tag) {
    using K = decltype(kernel);
    using A = std::remove_pointer_t<decltype(acc_tag)>;
    using E = typename StorageOf<K>::type;
    K::finish(static_cast<E*>(out), static_cast<E*>(out2), static_cast<const A*>(acc_in),
              static_cast<const E*>(local), n, op, world);
  });
}

}  // namespace

ReduceKernels kernels() { return ReduceKernels{to_acc_impl, acc_acc_impl, finish_impl}; }

}  // namespace SHARDKIT_REDUCE_NS
}  // namespace shardkit
