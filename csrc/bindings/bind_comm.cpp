// Python bindings of the shared-memory collectives: convert data pointers
// (ints from Tensor.data_ptr()) and release the GIL. No logic here.
#include <cstdint>
#include <string>
#include <vector>

#include <pybind11/stl.h>

#include "bindings/registry.h"
#include "shardkit/comm.h"

namespace py = pybind11;

namespace {

template <typename T>
T* ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

shardkit::DType dt(int code) { return static_cast<shardkit::DType>(code); }
shardkit::ReduceOp rop(int code) { return static_cast<shardkit::ReduceOp>(code); }

}  // namespace

SHARDKIT_BINDINGS(comm) {
  // Local: _C and _C_cuda each translate the errors of their own functions.
  py::register_local_exception<shardkit::CommError>(m, "CommError", PyExc_RuntimeError);

  py::class_<shardkit::ShmGroup>(m, "ShmGroup", "One host's ranks joined through a shared-memory segment.")
      .def(py::init([](const std::string& name, int rank, int world, int64_t slot_bytes, double timeout_s,
                       const std::vector<int>& global_ranks) {
             py::gil_scoped_release release;
             return new shardkit::ShmGroup(name, rank, world, slot_bytes, timeout_s, global_ranks);
           }),
           py::arg("name"), py::arg("rank"), py::arg("world"), py::arg("slot_bytes"), py::arg("timeout_s"),
           py::arg("global_ranks"))
      .def_property_readonly("rank", &shardkit::ShmGroup::rank)
      .def_property_readonly("world", &shardkit::ShmGroup::world)
      .def("set_timeout", &shardkit::ShmGroup::set_timeout)
      .def("set_threads", &shardkit::ShmGroup::set_threads, py::arg("threads"), py::arg("min_bytes_per_thread"),
           "Workers per copy/reduction step, used only for steps of at least min_bytes_per_thread per worker.")
      .def_property_readonly("threads", &shardkit::ShmGroup::threads)
      .def_property_readonly("min_bytes_per_thread", &shardkit::ShmGroup::min_bytes_per_thread)
      .def("all_reduce",
           [](shardkit::ShmGroup& g, uintptr_t out, uintptr_t in, int64_t n, int dtype, int op, int algo) {
             py::gil_scoped_release release;
             g.all_reduce(ptr<void>(out), ptr<const void>(in), n, dt(dtype), rop(op),
                          static_cast<shardkit::CommAlgo>(algo));
           })
      .def("reduce_scatter",
           [](shardkit::ShmGroup& g, uintptr_t out, uintptr_t in, int64_t n_out, int dtype, int op) {
             py::gil_scoped_release release;
             g.reduce_scatter(ptr<void>(out), ptr<const void>(in), n_out, dt(dtype), rop(op));
           })
      .def("all_gather",
           [](shardkit::ShmGroup& g, uintptr_t out, uintptr_t in, int64_t n_in, int dtype) {
             py::gil_scoped_release release;
             g.all_gather(ptr<void>(out), ptr<const void>(in), n_in, dt(dtype));
           })
      .def("broadcast",
           [](shardkit::ShmGroup& g, uintptr_t data, int64_t n, int dtype, int root) {
             py::gil_scoped_release release;
             g.broadcast(ptr<void>(data), n, dt(dtype), root);
           })
      .def("reduce",
           [](shardkit::ShmGroup& g, uintptr_t out, uintptr_t in, int64_t n, int dtype, int op, int root) {
             py::gil_scoped_release release;
             g.reduce(ptr<void>(out), ptr<const void>(in), n, dt(dtype), rop(op), root);
           })
      .def("barrier",
           [](shardkit::ShmGroup& g) {
             py::gil_scoped_release release;
             g.barrier();
           })
      .def("close", &shardkit::ShmGroup::close);

  m.def("comm_cleanup_stale_segments", &shardkit::cleanup_stale_segments,
        "Remove shardkit shared-memory segments whose creating process is gone; returns the count.");
  m.def(
      "comm_reduce",
      [](uintptr_t out, uintptr_t acc_in, uintptr_t local, int64_t n, int dtype, int op, int world) {
        // One local reduction step (out = acc_in op local, finished), exposed for the reference tests.
        py::gil_scoped_release release;
        shardkit::reduce_finish(ptr<void>(out), nullptr, ptr<const void>(acc_in), ptr<const void>(local), n,
                                dt(dtype), rop(op), world);
      },
      "out = finish(acc_in op local): acc_in in the accumulation type (fp32 for 16-bit dtypes).");
}
