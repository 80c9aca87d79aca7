// Python bindings of the fused CUDA optimizers (shardkit._C_cuda): device
// data pointers as ints, the stream as an int (torch's cuda_stream).
#include <pybind11/stl.h>

#include <cstdint>
#include <vector>

#include "bindings/optim_args.h"
#include "bindings/registry.h"
#include "shardkit/optim.h"

namespace py = pybind11;

using shardkit::bindings::make_tensors;

SHARDKIT_BINDINGS(optim) {
  m.def(
      "adam_step",
      [](const std::vector<uintptr_t>& params, const std::vector<uintptr_t>& grads,
         const std::vector<uintptr_t>& masters, const std::vector<uintptr_t>& exp_avgs,
         const std::vector<uintptr_t>& exp_avg_sqs, const std::vector<uintptr_t>& max_exp_avg_sqs,
         const std::vector<uintptr_t>& steps, const std::vector<int64_t>& numels, int param_dtype, int grad_dtype,
         double lr, double beta1, double beta2, double eps, double weight_decay, bool amsgrad, bool maximize,
         bool decoupled_weight_decay, uintptr_t grad_scale, uintptr_t found_inf, uintptr_t stream) {
        auto t = make_tensors(params, grads, masters, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, numels);
        shardkit::AdamHyper h{lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay};
        py::gil_scoped_release release;
        shardkit::adam_step_cuda(t, static_cast<shardkit::DType>(param_dtype),
                                 static_cast<shardkit::DType>(grad_dtype), h,
                                 reinterpret_cast<const float*>(grad_scale),
                                 reinterpret_cast<const float*>(found_inf), reinterpret_cast<void*>(stream));
      },
      "Fused Adam/AdamW step on CUDA over lists of device pointers.");

  m.def(
      "sgd_step",
      [](const std::vector<uintptr_t>& params, const std::vector<uintptr_t>& grads,
         const std::vector<uintptr_t>& masters, const std::vector<uintptr_t>& momentum_buffers,
         const std::vector<int64_t>& numels, int param_dtype, int grad_dtype, double lr, double momentum,
         double dampening, double weight_decay, bool nesterov, bool maximize, bool first_step, uintptr_t grad_scale,
         uintptr_t found_inf, uintptr_t stream) {
        auto t = make_tensors(params, grads, masters, momentum_buffers, {}, {}, {}, numels);
        shardkit::SgdHyper h{lr, momentum, dampening, weight_decay, nesterov, maximize, first_step};
        py::gil_scoped_release release;
        shardkit::sgd_step_cuda(t, static_cast<shardkit::DType>(param_dtype),
                                static_cast<shardkit::DType>(grad_dtype), h,
                                reinterpret_cast<const float*>(grad_scale),
                                reinterpret_cast<const float*>(found_inf), reinterpret_cast<void*>(stream));
      },
      "Fused SGD step on CUDA over lists of device pointers.");
}
