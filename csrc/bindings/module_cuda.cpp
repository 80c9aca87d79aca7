// shardkit._C_cuda: CUDA kernels, built only where nvcc is found. Features
// register through SHARDKIT_BINDINGS in cuda_bind_<feature>.cpp.
#include "bindings/registry.h"
#include "shardkit/common.h"

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "shardkit native CUDA kernels (torch-free)";
  pybind11::register_exception<shardkit::Error>(m, "NativeError", PyExc_ValueError);
  shardkit::bindings::bind_all(m);
}
