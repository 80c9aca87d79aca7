// Python bindings of the fused CPU optimizers (the last argument of each step
// is the thread count), the bandwidth probe and the kernel-path switch.
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "bindings/optim_args.h"
#include "bindings/registry.h"
#include "shardkit/optim.h"
#include "shardkit/parallel.h"

namespace py = pybind11;

SHARDKIT_BINDINGS(optim) {
  shardkit::bindings::def_optim_steps<int>(m, shardkit::adam_step_cpu, shardkit::sgd_step_cpu);

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
  m.def("thread_pool", [] { return std::string(shardkit::thread_pool_kind()); },
        "Where parallel regions run: 'openmp' (the process's runtime, torch's) or 'own'.");
}
