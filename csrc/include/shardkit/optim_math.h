// The per-element optimizer updates, written once. The scalar loop and its
// tails use V = float, the AVX2/AVX-512 loops use their vector wrappers
// (csrc/cpu/simd_*.h), and the CUDA kernel uses float on the device. A vector
// type must provide + - * /, vsqrt, vmax and construction from a float.
//
// The operation order is the one of the plain-torch reference kernels in
// python/shardkit/ops/optim.py, so that, with FMA contraction off, native and
// reference results are bitwise equal; they agree with torch.optim.AdamW to
// fp32 rounding.
#pragma once

#include <math.h>

#include "shardkit/common.h"

namespace shardkit {

SHARDKIT_HD float vsqrt(float x) {
#if defined(__CUDA_ARCH__)
  return sqrtf(x);
#else
  return __builtin_sqrtf(x);  // not std::sqrt: that one has external linkage
#endif
}
SHARDKIT_HD float vmax(float a, float b) { return a > b ? a : b; }

// Per-tensor constants of one Adam step, computed on the host in double from
// the tensor's own step count (after loading a state dict, steps may differ).
struct AdamConsts {
  float beta1, one_minus_beta1;
  float beta2, one_minus_beta2;
  float step_size;         // lr / (1 - beta1^t)
  float inv_bias2_sqrt;    // 1 / sqrt(1 - beta2^t), rounded to fp32 first as torch's division by a scalar does
  float eps;
  float weight_decay;      // L2 coefficient added to the gradient (Adam)
  float decay_factor;      // 1 - lr * weight_decay (AdamW), 1 otherwise
  float inv_grad_scale;    // 1 / GradScaler scale, 1 without a scaler
  bool amsgrad, maximize, decoupled;
};

SHARDKIT_HD AdamConsts make_adam_consts(double lr, double beta1, double beta2, double eps, double weight_decay,
                                   bool amsgrad, bool maximize, bool decoupled, double step,
                                   float grad_scale) {
  AdamConsts c{};
  c.beta1 = static_cast<float>(beta1);
  c.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  c.beta2 = static_cast<float>(beta2);
  c.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  // double here, as torch does, so long runs get the same bias correction.
  c.step_size = static_cast<float>(lr / (1.0 - ::pow(beta1, step)));
  c.inv_bias2_sqrt = 1.0f / static_cast<float>(::sqrt(1.0 - ::pow(beta2, step)));
  c.eps = static_cast<float>(eps);
  c.weight_decay = decoupled ? 0.0f : static_cast<float>(weight_decay);
  c.decay_factor = decoupled ? static_cast<float>(1.0 - lr * weight_decay) : 1.0f;
  c.inv_grad_scale = 1.0f / grad_scale;
  c.amsgrad = amsgrad;
  c.maximize = maximize;
  c.decoupled = decoupled;
  return c;
}

// One Adam/AdamW update of one element (or one vector of elements). `param`
// is the fp32 master value; `max_exp_avg_sq` is only touched with amsgrad.
template <typename V>
SHARDKIT_HD void adam_update(V& param, V& exp_avg, V& exp_avg_sq, V& max_exp_avg_sq, V grad, const AdamConsts& c) {
  if (c.inv_grad_scale != 1.0f) grad = grad * V(c.inv_grad_scale);
  if (c.maximize) grad = V(0.0f) - grad;
  if (c.decoupled) {
    param = param * V(c.decay_factor);
  } else if (c.weight_decay != 0.0f) {
    grad = grad + param * V(c.weight_decay);
  }
  exp_avg = exp_avg * V(c.beta1) + grad * V(c.one_minus_beta1);
  exp_avg_sq = exp_avg_sq * V(c.beta2) + grad * grad * V(c.one_minus_beta2);
  V second = exp_avg_sq;
  if (c.amsgrad) {
    max_exp_avg_sq = vmax(max_exp_avg_sq, exp_avg_sq);
    second = max_exp_avg_sq;
  }
  V denom = vsqrt(second) * V(c.inv_bias2_sqrt) + V(c.eps);
  param = param - V(c.step_size) * exp_avg / denom;
}

struct SgdConsts {
  float lr, momentum, dampening_complement, weight_decay, inv_grad_scale;
  bool nesterov, maximize, first_step, has_momentum;
};

// One SGD update: torch.optim.SGD's rule, momentum buffer in fp32.
template <typename V>
SHARDKIT_HD void sgd_update(V& param, V& buf, V grad, const SgdConsts& c) {
  if (c.inv_grad_scale != 1.0f) grad = grad * V(c.inv_grad_scale);
  if (c.maximize) grad = V(0.0f) - grad;
  if (c.weight_decay != 0.0f) grad = grad + param * V(c.weight_decay);
  if (c.has_momentum) {
    // torch starts the buffer as a copy of the first gradient, undamped.
    buf = c.first_step ? grad : buf * V(c.momentum) + grad * V(c.dampening_complement);
    grad = c.nesterov ? grad + buf * V(c.momentum) : buf;
  }
  param = param - V(c.lr) * grad;
}

}  // namespace shardkit
