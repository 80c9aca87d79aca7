// Python bindings of the fused CPU optimizers: convert data pointers (ints
// from torch's Tensor.data_ptr()) and release the GIL. No logic here.
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
         bool decoupled_weight_decay, uintptr_t grad_scale, uintptr_t found_inf, int num_threads) {
        auto t = make_tensors(params, grads, masters, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, numels);
        shardkit::AdamHyper h{lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay};
        py::gil_scoped_release release;
        shardkit::adam_step_cpu(t, static_cast<shardkit::DType>(param_dtype), static_cast<shardkit::DType>(grad_dtype),
                                h, reinterpret_cast<const float*>(grad_scale),
                                reinterpret_cast<const float*>(found_inf), num_threads);
      },
      "Fused Adam/AdamW step over lists of data pointers (see shardkit/optim.h).");

  m.def(
      "sgd_step",
      [](const std::vector<uintptr_t>& params, const std::vector<uintptr_t>& grads,
         const std::vector<uintptr_t>& masters, const std::vector<uintptr_t>& momentum_buffers,
         const std::vector<int64_t>& numels, int param_dtype, int grad_dtype, double lr, double momentum,
         double dampening, double weight_decay, bool nesterov, bool maximize, bool first_step, uintptr_t grad_scale,
         uintptr_t found_inf, int num_threads) {
        auto t = make_tensors(params, grads, masters, momentum_buffers, {}, {}, {}, numels);
        shardkit::SgdHyper h{lr, momentum, dampening, weight_decay, nesterov, maximize, first_step};
        py::gil_scoped_release release;
        shardkit::sgd_step_cpu(t, static_cast<shardkit::DType>(param_dtype), static_cast<shardkit::DType>(grad_dtype),
                               h, reinterpret_cast<const float*>(grad_scale),
                               reinterpret_cast<const float*>(found_inf), num_threads);
      },
      "Fused SGD (momentum, nesterov) step over lists of data pointers.");

  m.def(
      "bandwidth_probe",
      [](uintptr_t a, uintptr_t b, uintptr_t c, uintptr_t d, int64_t n, int num_threads) {
        py::gil_scoped_release release;
        shardkit::bandwidth_probe_cpu(reinterpret_cast<float*>(a), reinterpret_cast<float*>(b),
                                      reinterpret_cast<float*>(c), reinterpret_cast<const float*>(d), n, num_threads);
      },
      "Streams Adam's access pattern (4 fp32 reads, 3 writes per element) over four buffers.");

  m.def("cpu_isa_available", [](const std::string& isa) { return shardkit::cpu_isa_available(isa.c_str()); },
        "Whether this CPU supports the kernel path 'avx512', 'avx2' or 'scalar'.");
  m.def("set_cpu_isa", [](const std::string& isa) { shardkit::set_cpu_isa(isa.c_str()); },
        "Force a CPU kernel path (as SHARDKIT_CPU_ISA does at start-up).");
  m.def("get_cpu_isa", [] { return std::string(shardkit::get_cpu_isa()); }, "The CPU kernel path in use.");
}
