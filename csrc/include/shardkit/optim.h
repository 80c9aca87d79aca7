// Native API of the fused optimizers: one call updates a whole list of
// tensors of one (param dtype, grad dtype) pair in one parallel region.
#pragma once

#include <cstdint>
#include <vector>

#include "shardkit/common.h"

namespace shardkit {

// Raw pointers of the tensors of one optimizer call; every vector has one
// entry per parameter (optional ones are empty when unused). `params` has
// `param_dtype` and `grads` has `grad_dtype`; everything else is fp32.
// When params are fp32 they are their own master copy and `masters` is empty.
struct OptimTensors {
  std::vector<void*> params;
  std::vector<const void*> grads;
  std::vector<float*> masters;
  std::vector<float*> state_a;   // Adam: exp_avg; SGD: momentum buffer
  std::vector<float*> state_b;   // Adam: exp_avg_sq
  std::vector<float*> state_c;   // Adam with amsgrad: max_exp_avg_sq
  std::vector<float*> steps;     // per-parameter step counts (0-dim fp32)
  std::vector<int64_t> numels;
};

struct AdamHyper {
  double lr, beta1, beta2, eps, weight_decay;
  bool amsgrad, maximize, decoupled_weight_decay;
};

struct SgdHyper {
  double lr, momentum, dampening, weight_decay;
  bool nesterov, maximize, first_step;
};

// Validates the pointer lists, returns early when *found_inf != 0 (a skipped
// step changes nothing, not even the step counts), else updates every tensor
// and advances `steps` by one. grad_scale/found_inf may be null.
void adam_step_cpu(const OptimTensors& t, DType param_dtype, DType grad_dtype, const AdamHyper& h,
                   const float* grad_scale, const float* found_inf, int num_threads);

void sgd_step_cpu(const OptimTensors& t, DType param_dtype, DType grad_dtype, const SgdHyper& h,
                  const float* grad_scale, const float* found_inf, int num_threads);

// CPU instruction-set paths: "avx512", "avx2", "scalar". The best supported
// one is chosen at first use; SHARDKIT_CPU_ISA or set_cpu_isa() overrides.
bool cpu_isa_available(const char* isa);
void set_cpu_isa(const char* isa);
const char* get_cpu_isa();

// Streams the Adam access pattern (4 fp32 reads, 3 fp32 writes per element)
// over caller buffers; the benchmark times it to get this machine's bound.
void bandwidth_probe_cpu(float* a, float* b, float* c, const float* d, int64_t n, int num_threads);

}  // namespace shardkit

namespace shardkit {

// CUDA versions (shardkit._C_cuda): the same lists, with device pointers;
// `steps`, `grad_scale` and `found_inf` live on the device too, so a step
// never synchronises with the host. `stream` is a cudaStream_t.
void adam_step_cuda(const OptimTensors& t, DType param_dtype, DType grad_dtype, const AdamHyper& h,
                    const float* grad_scale, const float* found_inf, void* stream);

void sgd_step_cuda(const OptimTensors& t, DType param_dtype, DType grad_dtype, const SgdHyper& h,
                   const float* grad_scale, const float* found_inf, void* stream);

}  // namespace shardkit
