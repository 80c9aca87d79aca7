// The optimizer bindings shared by shardkit._C (CPU) and shardkit._C_cuda:
// lists of data pointers (ints from Tensor.data_ptr()) become
// shardkit::OptimTensors, and the GIL is released around the step. The last
// argument is the thread count on the CPU and the cudaStream_t on CUDA.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "shardkit/optim.h"

namespace shardkit::bindings {

template <typename T>
std::vector<T> as_ptrs(const std::vector<uintptr_t>& addresses) {
  std::vector<T> out;
  out.reserve(addresses.size());
  for (uintptr_t a : addresses) out.push_back(reinterpret_cast<T>(a));
  return out;
}

template <typename Last>
using AdamStepFn = void (*)(const OptimTensors&, DType, DType, const AdamHyper&, const float*, const float*, Last);
template <typename Last>
using SgdStepFn = void (*)(const OptimTensors&, DType, DType, const SgdHyper&, const float*, const float*, Last);

template <typename Last>
Last as_last(uintptr_t value) {
  if constexpr (std::is_pointer_v<Last>) {
    return reinterpret_cast<Last>(value);
  } else {
    return static_cast<Last>(value);
  }
}

using Ptrs = std::vector<uintptr_t>;

template <typename Last>
void def_optim_steps(pybind11::module_& m, AdamStepFn<Last> adam, SgdStepFn<Last> sgd) {
  namespace py = pybind11;
  m.def(
      "adam_step",
      [adam](const Ptrs& params, const Ptrs& grads, const Ptrs& masters, const Ptrs& exp_avgs,
             const Ptrs& exp_avg_sqs, const Ptrs& max_exp_avg_sqs, const Ptrs& steps,
             const std::vector<int64_t>& numels, int param_dtype, int grad_dtype, double lr, double beta1,
             double beta2, double eps, double weight_decay, bool amsgrad, bool maximize,
             bool decoupled_weight_decay, uintptr_t grad_scale, uintptr_t found_inf, uintptr_t last) {
        OptimTensors t;
        t.params = as_ptrs<void*>(params);
        t.grads = as_ptrs<const void*>(grads);
        t.masters = as_ptrs<float*>(masters);
        t.state_a = as_ptrs<float*>(exp_avgs);
        t.state_b = as_ptrs<float*>(exp_avg_sqs);
        t.state_c = as_ptrs<float*>(max_exp_avg_sqs);
        t.steps = as_ptrs<float*>(steps);
        t.numels = numels;
        AdamHyper h{lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay};
        py::gil_scoped_release release;
        adam(t, static_cast<DType>(param_dtype), static_cast<DType>(grad_dtype), h,
             reinterpret_cast<const float*>(grad_scale), reinterpret_cast<const float*>(found_inf),
             as_last<Last>(last));
      },
      "Fused Adam/AdamW step over lists of data pointers (see shardkit/optim.h).");
  m.def(
      "sgd_step",
      [sgd](const Ptrs& params, const Ptrs& grads, const Ptrs& masters, const Ptrs& momentum_buffers,
            const std::vector<int64_t>& numels, int param_dtype, int grad_dtype, double lr, double momentum,
            double dampening, double weight_decay, bool nesterov, bool maximize, bool first_step,
            uintptr_t grad_scale, uintptr_t found_inf, uintptr_t last) {
        OptimTensors t;
        t.params = as_ptrs<void*>(params);
        t.grads = as_ptrs<const void*>(grads);
        t.masters = as_ptrs<float*>(masters);
        t.state_a = as_ptrs<float*>(momentum_buffers);
        t.numels = numels;
        SgdHyper h{lr, momentum, dampening, weight_decay, nesterov, maximize, first_step};
        py::gil_scoped_release release;
        sgd(t, static_cast<DType>(param_dtype), static_cast<DType>(grad_dtype), h,
            reinterpret_cast<const float*>(grad_scale), reinterpret_cast<const float*>(found_inf),
            as_last<Last>(last));
      },
      "Fused SGD (momentum, nesterov) step over lists of data pointers.");
}

}  // namespace shardkit::bindings
