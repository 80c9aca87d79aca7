// Run-time choice of the reduction kernels: the ISA path the optimizer uses
// (cpu_isa.cpp: best available, or SHARDKIT_CPU_ISA / set_cpu_isa()).
#include <cstring>

#include "cpu/comm_reduce_isa.h"
#include "shardkit/optim.h"

namespace shardkit {
namespace {

ReduceKernels selected() {
  const char* isa = get_cpu_isa();
#if defined(SHARDKIT_X86)
  if (std::strcmp(isa, "avx512") == 0) return reduce_avx512::kernels();
  if (std::strcmp(isa, "avx2") == 0) return reduce_avx2::kernels();
#endif
  (void)isa;
  return reduce_scalar::kernels();
}

void check_op(ReduceOp op) {
  const int v = static_cast<int>(op);
  SHARDKIT_CHECK(v >= 0 && v <= 3, "op: expected sum, avg, max or min, got code ", v);
}

}  // namespace

int64_t acc_size(DType dtype) {
  return (dtype == DType::kBFloat16 || dtype == DType::kFloat16) ? 4 : dtype_size(dtype);
}

void reduce_to_acc(void* acc_out, const void* acc_in, const void* local, int64_t n, DType dtype, ReduceOp op) {
  check_op(op);
  if (n > 0) selected().to_acc(acc_out, acc_in, local, n, dtype, op);
}

void reduce_acc_acc(void* acc_out, const void* a, const void* b, int64_t n, DType dtype, ReduceOp op) {
  check_op(op);
  if (n > 0) selected().acc_acc(acc_out, a, b, n, dtype, op);
}

void reduce_finish(void* out, void* out2, const void* acc_in, const void* local, int64_t n, DType dtype,
                   ReduceOp op, int world) {
  check_op(op);
  if (n > 0) selected().finish(out, out2, acc_in, local, n, dtype, op, world);
}

}  // namespace shardkit
