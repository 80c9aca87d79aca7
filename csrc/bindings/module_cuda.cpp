// shardkit._C_cuda: CUDA kernels, built only where nvcc is found. Features
// register through SHARDKIT_BINDINGS in cuda_bind_<feature>.cpp.
#include <algorithm>

#include "bindings/registry.h"
#include "shardkit/common.h"

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "shardkit native CUDA kernels (torch-free)";
  pybind11::register_exception<shardkit::Error>(m, "NativeError", PyExc_ValueError);
  auto& all = shardkit::bindings::binders();
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  pybind11::list features;
  for (auto& [name, bind] : all) {
    bind(m);
    features.append(name);
  }
  m.attr("features") = features;
}
