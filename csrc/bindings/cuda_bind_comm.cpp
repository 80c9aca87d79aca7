// Python bindings of the NCCL wrappers: convert pointers and release the GIL.
#include <cstdint>
#include <string>

#include "bindings/registry.h"
#include "shardkit/nccl.h"

namespace py = pybind11;
namespace nccl = shardkit::nccl;

namespace {

void* ptr(uintptr_t a) { return reinterpret_cast<void*>(a); }
shardkit::DType dt(int code) { return static_cast<shardkit::DType>(code); }
shardkit::ReduceOp rop(int code) { return static_cast<shardkit::ReduceOp>(code); }

}  // namespace

SHARDKIT_BINDINGS(comm) {
  // Local: _C and _C_cuda each translate the errors of their own functions.
  py::register_local_exception<shardkit::CommError>(m, "CommError", PyExc_RuntimeError);
  m.def("nccl_load", &nccl::load, py::arg("path") = "",
        "Load libnccl (default: libnccl.so.2 as the loader finds it); returns '' or the reason it failed.");
  m.def("nccl_loaded", &nccl::loaded);
  m.def("nccl_version", &nccl::version);
  m.def("nccl_unique_id", [] { return py::bytes(nccl::unique_id()); });
  py::class_<nccl::Comm>(m, "NcclComm", "An NCCL communicator; operations enqueue on the given CUDA stream.")
      .def(py::init([](const py::bytes& id, int world, int rank) {
             std::string bytes = id;
             py::gil_scoped_release release;
             return new nccl::Comm(bytes, world, rank);
           }),
           py::arg("unique_id"), py::arg("world"), py::arg("rank"))
      .def("all_reduce",
           [](nccl::Comm& c, uintptr_t out, uintptr_t in, int64_t n, int dtype, int op, uintptr_t stream) {
             py::gil_scoped_release release;
             c.all_reduce(ptr(out), ptr(in), n, dt(dtype), rop(op), ptr(stream));
           })
      .def("reduce_scatter",
           [](nccl::Comm& c, uintptr_t out, uintptr_t in, int64_t n_out, int dtype, int op, uintptr_t stream) {
             py::gil_scoped_release release;
             c.reduce_scatter(ptr(out), ptr(in), n_out, dt(dtype), rop(op), ptr(stream));
           })
      .def("all_gather",
           [](nccl::Comm& c, uintptr_t out, uintptr_t in, int64_t n_in, int dtype, uintptr_t stream) {
             py::gil_scoped_release release;
             c.all_gather(ptr(out), ptr(in), n_in, dt(dtype), ptr(stream));
           })
      .def("broadcast",
           [](nccl::Comm& c, uintptr_t data, int64_t n, int dtype, int root, uintptr_t stream) {
             py::gil_scoped_release release;
             c.broadcast(ptr(data), n, dt(dtype), root, ptr(stream));
           })
      .def("reduce",
           [](nccl::Comm& c, uintptr_t out, uintptr_t in, int64_t n, int dtype, int op, int root, uintptr_t stream) {
             py::gil_scoped_release release;
             c.reduce(ptr(out), ptr(in), n, dt(dtype), rop(op), root, ptr(stream));
           })
      .def("abort", &nccl::Comm::abort);
}
