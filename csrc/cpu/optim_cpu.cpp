// Fused optimizer steps on the CPU: validate the pointer lists, handle the
// GradScaler's found_inf and the per-parameter step counts, then run the
// selected ISA's span functions over all tensors in one parallel region.
#include <algorithm>
#include <vector>

#include "cpu/cpu_isa.h"
#include "shardkit/optim.h"
#include "shardkit/parallel.h"

namespace shardkit {
namespace {

// 64 elements: a whole number of cache lines for both fp32 and 16-bit data,
// so no two threads ever write the same line.
constexpr int64_t kAlign = 64;
// Below this many elements per thread, waking threads costs more than it saves.
constexpr int64_t kMinPerThread = 16 * 1024;

int dtype_index(DType dtype, const char* what) {
  switch (dtype) {
    case DType::kFloat32: return 0;
    case DType::kBFloat16: return 1;
    case DType::kFloat16: return 2;
    default: SHARDKIT_CHECK(false, what, ": expected float32, bfloat16 or float16, got ", dtype_name(dtype));
  }
  return -1;
}

// One entry per parameter; empty tensors may carry null data pointers.
template <typename T>
void check_pointers(const std::vector<T>& list, const std::vector<int64_t>& numels, const char* name) {
  SHARDKIT_CHECK(list.size() == numels.size(), name, ": expected ", numels.size(),
                 " entries (one per parameter), got ", list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    SHARDKIT_CHECK(list[i] != nullptr || numels[i] == 0, name, "[", i, "]: null data pointer");
  }
}

void check_common(const OptimTensors& t, DType param_dtype) {
  SHARDKIT_CHECK(t.numels.size() == t.params.size(), "numels: expected ", t.params.size(), " entries, got ",
                 t.numels.size());
  for (size_t i = 0; i < t.numels.size(); ++i) SHARDKIT_CHECK(t.numels[i] >= 0, "numels[", i, "]: negative");
  check_pointers(t.params, t.numels, "params");
  check_pointers(t.grads, t.numels, "grads");
  if (param_dtype == DType::kFloat32) {
    SHARDKIT_CHECK(t.masters.empty(), "master_params: float32 params are their own master; pass an empty list");
  } else {
    check_pointers(t.masters, t.numels, "master_params");
  }
}

// Runs span(i, lo, hi) over every tensor, each thread taking one contiguous
// share of the combined element space: one parallel region per call.
template <typename Span>
void run_spans(const std::vector<int64_t>& numels, int num_threads, const Span& span) {
  std::vector<int64_t> starts(numels.size() + 1, 0);
  for (size_t i = 0; i < numels.size(); ++i) {
    // Tensors start on aligned offsets, so thread boundaries never split a
    // cache line of any tensor.
    starts[i + 1] = starts[i] + (numels[i] + kAlign - 1) / kAlign * kAlign;
  }
  const int64_t total = starts.back();
  if (total == 0) return;
  const int threads =
      static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(std::max(num_threads, 1), total / kMinPerThread)));
  parallel_run(threads, [&](int index, int parts) {
    int64_t begin, end;
    split_range(total, parts, index, kAlign, &begin, &end);
    size_t i = std::upper_bound(starts.begin(), starts.end(), begin) - starts.begin() - 1;
    for (; i < numels.size() && starts[i] < end; ++i) {
      int64_t lo = std::max<int64_t>(begin - starts[i], 0);
      int64_t hi = std::min<int64_t>(end - starts[i], numels[i]);
      if (lo < hi) span(i, lo, hi);
    }
  });
}

}  // namespace

void adam_step_cpu(const OptimTensors& t, DType param_dtype, DType grad_dtype, const AdamHyper& h,
                   const float* grad_scale, const float* found_inf, int num_threads) {
  const int pi = dtype_index(param_dtype, "params");
  const int gi = dtype_index(grad_dtype, "grads");
  check_common(t, param_dtype);
  const size_t n = t.params.size();
  check_pointers(t.state_a, t.numels, "exp_avgs");
  check_pointers(t.state_b, t.numels, "exp_avg_sqs");
  if (h.amsgrad) check_pointers(t.state_c, t.numels, "max_exp_avg_sqs");
  SHARDKIT_CHECK(t.steps.size() == n, "state_steps: expected ", n, " entries, got ", t.steps.size());
  for (size_t i = 0; i < n; ++i) SHARDKIT_CHECK(t.steps[i] != nullptr, "state_steps[", i, "]: null pointer");
  SHARDKIT_CHECK(h.beta1 >= 0 && h.beta1 < 1, "beta1: expected 0 <= beta1 < 1, got ", h.beta1);
  SHARDKIT_CHECK(h.beta2 >= 0 && h.beta2 < 1, "beta2: expected 0 <= beta2 < 1, got ", h.beta2);

  if (found_inf != nullptr && *found_inf != 0.0f) return;  // skipped step: nothing changes
  const float scale = grad_scale != nullptr ? *grad_scale : 1.0f;
  std::vector<AdamConsts> consts(n);
  for (size_t i = 0; i < n; ++i) {
    const double step = static_cast<double>(*t.steps[i]) + 1.0;
    consts[i] = make_adam_consts(h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.amsgrad, h.maximize,
                                 h.decoupled_weight_decay, step, scale);
  }
  const OptimIsa isa = current_optim_isa();
  const OptimIsa::AdamSpan span = isa.adam[pi][gi];
  run_spans(t.numels, num_threads, [&](size_t i, int64_t lo, int64_t hi) { span(t, i, lo, hi, consts[i]); });
  for (size_t i = 0; i < n; ++i) *t.steps[i] += 1.0f;
}

void sgd_step_cpu(const OptimTensors& t, DType param_dtype, DType grad_dtype, const SgdHyper& h,
                  const float* grad_scale, const float* found_inf, int num_threads) {
  const int pi = dtype_index(param_dtype, "params");
  const int gi = dtype_index(grad_dtype, "grads");
  check_common(t, param_dtype);
  const bool has_momentum = h.momentum != 0.0;
  if (has_momentum) check_pointers(t.state_a, t.numels, "momentum_buffers");
  if (found_inf != nullptr && *found_inf != 0.0f) return;
  SgdConsts c{};
  c.lr = static_cast<float>(h.lr);
  c.momentum = static_cast<float>(h.momentum);
  c.dampening_complement = static_cast<float>(1.0 - h.dampening);
  c.weight_decay = static_cast<float>(h.weight_decay);
  c.inv_grad_scale = 1.0f / (grad_scale != nullptr ? *grad_scale : 1.0f);
  c.nesterov = h.nesterov;
  c.maximize = h.maximize;
  c.first_step = h.first_step;
  c.has_momentum = has_momentum;
  const OptimIsa::SgdSpan span = current_optim_isa().sgd[pi][gi];
  run_spans(t.numels, num_threads, [&](size_t i, int64_t lo, int64_t hi) { span(t, i, lo, hi, c); });
}

void bandwidth_probe_cpu(float* a, float* b, float* c, const float* d, int64_t n, int num_threads) {
  SHARDKIT_CHECK(n >= 0, "n: expected >= 0, got ", n);
  SHARDKIT_CHECK(n == 0 || (a && b && c && d), "buffers: null data pointer");
  const ProbeBuffers buffers{a, b, c, d};
  const OptimIsa::ProbeSpan span = current_optim_isa().probe;
  run_spans({n}, num_threads, [&](size_t, int64_t lo, int64_t hi) { span(buffers, lo, hi); });
}

}  // namespace shardkit
