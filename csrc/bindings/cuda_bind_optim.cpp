// Python bindings of the fused CUDA optimizers (shardkit._C_cuda); the last
// argument of each step is torch's cuda_stream.
#include "bindings/optim_args.h"
#include "bindings/registry.h"

SHARDKIT_BINDINGS(optim) {
  shardkit::bindings::def_optim_steps<void*>(m, shardkit::adam_step_cuda, shardkit::sgd_step_cuda);
}
