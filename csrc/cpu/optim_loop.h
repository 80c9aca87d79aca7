// The fused optimizer loops, generic over a Simd type (simd_*.h) and the
// element types of the parameter (P) and gradient (G). Each ISA translation
// unit includes this once and instantiates it with its own Simd, so there is
// one body for the scalar, AVX2 and AVX-512 paths.
//
// Only the per-span element loops live here. Splitting work across threads
// is done once, in optim_cpu.cpp, which is compiled without ISA flags: inline
// library code (std::vector, std::function) instantiated in an AVX-512 file
// could otherwise be the copy the linker keeps for every path.
#pragma once

#include <cstring>
#include <type_traits>

#include "cpu/optim_isa.h"
#include "shardkit/half.h"
#include "shardkit/optim_math.h"

namespace shardkit::optim_loop {

template <typename P>
constexpr bool kHasMaster = !std::is_same_v<P, float>;

// A low-precision parameter is only written (its master is read instead), so
// the main loops store it non-temporally; fp32 parameters were just read.
template <typename S, bool kStream, typename P, typename V>
static inline void store_param(P* param, V p) {
  if constexpr (kStream && kHasMaster<P>) {
    S::store_stream(param, p);
  } else {
    S::store(param, p);
  }
}

// Updates `n` elements (n == kWidth, or fewer through the tail buffers).
template <typename S, typename P, typename G, bool kStream>
static inline void adam_vector(P* param, const G* grad, float* master, float* m, float* v, float* vmax,
                               const AdamCoeffs<typename S::Vec>& c) {
  using V = typename S::Vec;
  V g = S::load(grad);
  V p = kHasMaster<P> ? S::load(master) : S::load(reinterpret_cast<const float*>(param));
  V mv = S::load(m);
  V vv = S::load(v);
  V xv = c.amsgrad ? S::load(vmax) : V(0.0f);
  adam_update(p, mv, vv, xv, g, c);
  S::store(m, mv);
  S::store(v, vv);
  if (c.amsgrad) S::store(vmax, xv);
  if constexpr (kHasMaster<P>) S::store(master, p);
  store_param<S, kStream>(param, p);
}

template <typename S, typename P, typename G>
static void adam_span(const OptimTensors& t, size_t i, int64_t lo, int64_t hi, const AdamConsts& consts) {
  const AdamCoeffs<typename S::Vec> c(consts);
  P* param = static_cast<P*>(t.params[i]);
  const G* grad = static_cast<const G*>(t.grads[i]);
  float* master = kHasMaster<P> ? t.masters[i] : nullptr;
  float* m = t.state_a[i];
  float* v = t.state_b[i];
  float* vmax = c.amsgrad ? t.state_c[i] : nullptr;
  constexpr int W = S::kWidth;
  int64_t k = lo;
  // Two vectors per iteration: more independent loads in flight per sqrt/div.
  for (; k + 2 * W <= hi; k += 2 * W) {
    adam_vector<S, P, G, true>(param + k, grad + k, master ? master + k : nullptr, m + k, v + k,
                         vmax ? vmax + k : nullptr, c);
    adam_vector<S, P, G, true>(param + k + W, grad + k + W, master ? master + k + W : nullptr, m + k + W, v + k + W,
                         vmax ? vmax + k + W : nullptr, c);
  }
  for (; k + W <= hi; k += W) {
    adam_vector<S, P, G, true>(param + k, grad + k, master ? master + k : nullptr, m + k, v + k,
                         vmax ? vmax + k : nullptr, c);
  }
  S::fence();
  if (k == hi) return;
  // Tail: run the same vector body on zero-padded copies, write back n lanes.
  const int64_t n = hi - k;
  P tp[W] = {};
  G tg[W] = {};
  float tmaster[W] = {}, tm[W] = {}, tv[W] = {}, tx[W] = {};
  std::memcpy(tp, param + k, n * sizeof(P));
  std::memcpy(tg, grad + k, n * sizeof(G));
  if (master) std::memcpy(tmaster, master + k, n * sizeof(float));
  std::memcpy(tm, m + k, n * sizeof(float));
  std::memcpy(tv, v + k, n * sizeof(float));
  if (vmax) std::memcpy(tx, vmax + k, n * sizeof(float));
  adam_vector<S, P, G, false>(tp, tg, tmaster, tm, tv, tx, c);
  std::memcpy(param + k, tp, n * sizeof(P));
  if (master) std::memcpy(master + k, tmaster, n * sizeof(float));
  std::memcpy(m + k, tm, n * sizeof(float));
  std::memcpy(v + k, tv, n * sizeof(float));
  if (vmax) std::memcpy(vmax + k, tx, n * sizeof(float));
}

template <typename S, typename P, typename G, bool kStream>
static inline void sgd_vector(P* param, const G* grad, float* master, float* buf,
                              const SgdCoeffs<typename S::Vec>& c) {
  using V = typename S::Vec;
  V g = S::load(grad);
  V p = kHasMaster<P> ? S::load(master) : S::load(reinterpret_cast<const float*>(param));
  V b = c.has_momentum && !c.first_step ? S::load(buf) : V(0.0f);
  sgd_update(p, b, g, c);
  if (c.has_momentum) S::store(buf, b);
  if constexpr (kHasMaster<P>) S::store(master, p);
  store_param<S, kStream>(param, p);
}

template <typename S, typename P, typename G>
static void sgd_span(const OptimTensors& t, size_t i, int64_t lo, int64_t hi, const SgdConsts& consts) {
  const SgdCoeffs<typename S::Vec> c(consts);
  P* param = static_cast<P*>(t.params[i]);
  const G* grad = static_cast<const G*>(t.grads[i]);
  float* master = kHasMaster<P> ? t.masters[i] : nullptr;
  float* buf = c.has_momentum ? t.state_a[i] : nullptr;
  constexpr int W = S::kWidth;
  int64_t k = lo;
  for (; k + W <= hi; k += W) {
    sgd_vector<S, P, G, true>(param + k, grad + k, master ? master + k : nullptr, buf ? buf + k : nullptr, c);
  }
  S::fence();
  if (k == hi) return;
  const int64_t n = hi - k;
  P tp[W] = {};
  G tg[W] = {};
  float tmaster[W] = {}, tb[W] = {};
  std::memcpy(tp, param + k, n * sizeof(P));
  std::memcpy(tg, grad + k, n * sizeof(G));
  if (master) std::memcpy(tmaster, master + k, n * sizeof(float));
  if (buf) std::memcpy(tb, buf + k, n * sizeof(float));
  sgd_vector<S, P, G, false>(tp, tg, tmaster, tb, c);
  std::memcpy(param + k, tp, n * sizeof(P));
  if (master) std::memcpy(master + k, tmaster, n * sizeof(float));
  if (buf) std::memcpy(buf + k, tb, n * sizeof(float));
}

// Streams 4 fp32 reads and 3 fp32 writes per element, Adam's access pattern
// without its arithmetic: the memory-bandwidth bound of a fused step.
template <typename S>
static void probe_span(const ProbeBuffers& buf, int64_t lo, int64_t hi) {
  using V = typename S::Vec;
  int64_t k = lo;
  for (; k + S::kWidth <= hi; k += S::kWidth) {
    V x = S::load(buf.d + k);
    S::store(buf.a + k, S::load(buf.a + k) + x);
    S::store(buf.b + k, S::load(buf.b + k) + x);
    S::store(buf.c + k, S::load(buf.c + k) + x);
  }
  for (; k < hi; ++k) {
    buf.a[k] += buf.d[k];
    buf.b[k] += buf.d[k];
    buf.c[k] += buf.d[k];
  }
}

// The table of span functions of one Simd: [param dtype][grad dtype], with
// index 0 = fp32, 1 = bf16, 2 = fp16 (the DType codes).
template <typename S>
static OptimIsa make_table() {
  OptimIsa isa{};
  auto fill_grad = [&](auto param_tag, int pi) {
    using P = decltype(param_tag);
    isa.adam[pi][0] = adam_span<S, P, float>;
    isa.adam[pi][1] = adam_span<S, P, BF16>;
    isa.adam[pi][2] = adam_span<S, P, F16>;
    isa.sgd[pi][0] = sgd_span<S, P, float>;
    isa.sgd[pi][1] = sgd_span<S, P, BF16>;
    isa.sgd[pi][2] = sgd_span<S, P, F16>;
  };
  fill_grad(float{}, 0);
  fill_grad(BF16{}, 1);
  fill_grad(F16{}, 2);
  isa.probe = probe_span<S>;
  return isa;
}

}  // namespace shardkit::optim_loop
