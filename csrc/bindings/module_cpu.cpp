// shardkit._C: the torch-free CPU core. Every feature adds its functions
// through SHARDKIT_BINDINGS in its own bind_<feature>.cpp.
#include <algorithm>

#include "bindings/registry.h"
#include "shardkit/common.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "shardkit native CPU core (torch-free)";
  pybind11::register_exception<shardkit::Error>(m, "NativeError", PyExc_ValueError);
  auto& all = shardkit::bindings::binders();
  // Static-initialiser order across files is unspecified: sort for a stable module.
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  pybind11::list features;
  for (auto& [name, bind] : all) {
    bind(m);
    features.append(name);
  }
  m.attr("features") = features;
}
