// shardkit._C: the torch-free CPU core. Every feature adds its functions
// through SHARDKIT_BINDINGS in its own bind_<feature>.cpp.
#include "bindings/registry.h"
#include "shardkit/common.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "shardkit native CPU core (torch-free)";
  pybind11::register_exception<shardkit::Error>(m, "NativeError", PyExc_ValueError);
  shardkit::bindings::bind_all(m);
}
