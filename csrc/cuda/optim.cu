// Fused Adam/AdamW and SGD on CUDA: multi-tensor apply over the same
// per-element update (shardkit/optim_math.h) as the CPU kernels. Parameters,
// gradients, masters and moments of many tensors are updated in one launch;
// each block reads its tensor's step count from device memory and computes
// the bias corrections itself, so nothing synchronises with the host.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <type_traits>

#include "cuda/multi_tensor_apply.cuh"
#include "shardkit/half.h"
#include "shardkit/optim.h"
#include "shardkit/optim_math.h"

namespace shardkit {
namespace {

__device__ __forceinline__ float load_f(const float* p) { return *p; }
__device__ __forceinline__ float load_f(const BF16* p) {
  return __bfloat162float(*reinterpret_cast<const __nv_bfloat16*>(p));
}
__device__ __forceinline__ float load_f(const F16* p) { return __half2float(*reinterpret_cast<const __half*>(p)); }
__device__ __forceinline__ void store_f(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_f(BF16* p, float v) {
  *reinterpret_cast<__nv_bfloat16*>(p) = __float2bfloat16_rn(v);
}
__device__ __forceinline__ void store_f(F16* p, float v) { *reinterpret_cast<__half*>(p) = __float2half_rn(v); }

// List order in the launch tables.
enum AdamList { kParam, kGrad, kMaster, kExpAvg, kExpAvgSq, kMaxExpAvgSq, kAdamLists };
enum SgdList { kSgdParam, kSgdGrad, kSgdMaster, kSgdBuf, kSgdLists };

template <typename P, typename G>
__global__ void adam_kernel(mta::Args<kAdamLists> args, AdamHyper h, const float* grad_scale,
                            const float* found_inf) {
  if (found_inf != nullptr && *found_inf != 0.0f) return;
  const int t = args.block_tensor[blockIdx.x];
  const int64_t begin = static_cast<int64_t>(args.block_chunk[blockIdx.x]) * mta::kChunk;
  const int64_t end = min(args.numel[t], begin + mta::kChunk);
  const double step = static_cast<double>(*args.step[t]) + 1.0;
  const AdamConsts c = make_adam_consts(h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.amsgrad, h.maximize,
                                        h.decoupled_weight_decay, step, grad_scale ? *grad_scale : 1.0f);
  P* param = static_cast<P*>(args.ptrs[kParam][t]);
  const G* grad = static_cast<const G*>(args.ptrs[kGrad][t]);
  float* master = static_cast<float*>(args.ptrs[kMaster][t]);
  float* m = static_cast<float*>(args.ptrs[kExpAvg][t]);
  float* v = static_cast<float*>(args.ptrs[kExpAvgSq][t]);
  float* vmax = static_cast<float*>(args.ptrs[kMaxExpAvgSq][t]);
  constexpr bool kHasMaster = !std::is_same_v<P, float>;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    float p = kHasMaster ? master[i] : load_f(param + i);
    float mv = m[i], vv = v[i];
    float xv = c.amsgrad ? vmax[i] : 0.0f;
    adam_update(p, mv, vv, xv, load_f(grad + i), c);
    m[i] = mv;
    v[i] = vv;
    if (c.amsgrad) vmax[i] = xv;
    if (kHasMaster) master[i] = p;
    store_f(param + i, p);
  }
}

template <typename P, typename G>
__global__ void sgd_kernel(mta::Args<kSgdLists> args, SgdConsts c, const float* grad_scale,
                           const float* found_inf) {
  if (found_inf != nullptr && *found_inf != 0.0f) return;
  if (grad_scale != nullptr) c.inv_grad_scale = 1.0f / *grad_scale;
  const int t = args.block_tensor[blockIdx.x];
  const int64_t begin = static_cast<int64_t>(args.block_chunk[blockIdx.x]) * mta::kChunk;
  const int64_t end = min(args.numel[t], begin + mta::kChunk);
  P* param = static_cast<P*>(args.ptrs[kSgdParam][t]);
  const G* grad = static_cast<const G*>(args.ptrs[kSgdGrad][t]);
  float* master = static_cast<float*>(args.ptrs[kSgdMaster][t]);
  float* buf = static_cast<float*>(args.ptrs[kSgdBuf][t]);
  constexpr bool kHasMaster = !std::is_same_v<P, float>;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    float p = kHasMaster ? master[i] : load_f(param + i);
    float b = c.has_momentum && !c.first_step ? buf[i] : 0.0f;
    sgd_update(p, b, load_f(grad + i), c);
    if (c.has_momentum) buf[i] = b;
    if (kHasMaster) master[i] = p;
    store_f(param + i, p);
  }
}

// Advances every step count by one, unless the GradScaler found an inf.
__global__ void advance_steps(mta::Args<kAdamLists> args, int count, const float* found_inf) {
  if (found_inf != nullptr && *found_inf != 0.0f) return;
  if (threadIdx.x < count) *args.step[threadIdx.x] += 1.0f;
}

template <typename Fn>
void dispatch_dtypes(DType param_dtype, DType grad_dtype, const Fn& fn) {
  auto with_grad = [&](auto param_tag) {
    switch (grad_dtype) {
      case DType::kFloat32: return fn(param_tag, float{});
      case DType::kBFloat16: return fn(param_tag, BF16{});
      case DType::kFloat16: return fn(param_tag, F16{});
      default: SHARDKIT_CHECK(false, "grads: expected float32, bfloat16 or float16, got ", dtype_name(grad_dtype));
    }
  };
  switch (param_dtype) {
    case DType::kFloat32: return with_grad(float{});
    case DType::kBFloat16: return with_grad(BF16{});
    case DType::kFloat16: return with_grad(F16{});
    default: SHARDKIT_CHECK(false, "params: expected float32, bfloat16 or float16, got ", dtype_name(param_dtype));
  }
}

template <typename T>
std::vector<void*> as_void(const std::vector<T>& ptrs) {
  std::vector<void*> out;
  out.reserve(ptrs.size());
  for (auto p : ptrs) out.push_back(const_cast<void*>(static_cast<const void*>(p)));
  return out;
}

void check_sizes(const OptimTensors& t, DType param_dtype) {
  const size_t n = t.params.size();
  SHARDKIT_CHECK(t.grads.size() == n && t.numels.size() == n, "grads/numels: expected ", n, " entries");
  SHARDKIT_CHECK(param_dtype == DType::kFloat32 ? t.masters.empty() : t.masters.size() == n,
                 "master_params: expected ", param_dtype == DType::kFloat32 ? 0 : n, " entries, got ", t.masters.size());
}

}  // namespace

void adam_step_cuda(const OptimTensors& t, DType param_dtype, DType grad_dtype, const AdamHyper& h,
                    const float* grad_scale, const float* found_inf, void* stream) {
  check_sizes(t, param_dtype);
  const size_t n = t.params.size();
  SHARDKIT_CHECK(t.state_a.size() == n && t.state_b.size() == n && t.steps.size() == n,
                 "exp_avgs/exp_avg_sqs/state_steps: expected ", n, " entries each");
  SHARDKIT_CHECK(!h.amsgrad || t.state_c.size() == n, "max_exp_avg_sqs: expected ", n, " entries");
  auto s = static_cast<cudaStream_t>(stream);
  const std::vector<void*> lists[kAdamLists] = {as_void(t.params),  as_void(t.grads),   as_void(t.masters),
                                                as_void(t.state_a), as_void(t.state_b), as_void(t.state_c)};
  dispatch_dtypes(param_dtype, grad_dtype, [&](auto p_tag, auto g_tag) {
    using P = decltype(p_tag);
    using G = decltype(g_tag);
    mta::for_each_launch(lists, t.steps, t.numels, [&](const mta::Args<kAdamLists>& args, int blocks) {
      adam_kernel<P, G><<<blocks, mta::kThreads, 0, s>>>(args, h, grad_scale, found_inf);
      mta::check_launch("fused_adam_");
    });
  });
  // Steps advance after every chunk of every tensor has read the old count.
  mta::Args<kAdamLists> step_args{};
  int count = 0;
  for (size_t i = 0; i < n; ++i) {
    step_args.step[count++] = t.steps[i];
    if (count == mta::kMaxTensors || i + 1 == n) {
      advance_steps<<<1, mta::kMaxTensors, 0, s>>>(step_args, count, found_inf);
      mta::check_launch("fused_adam_ (steps)");
      count = 0;
    }
  }
}

void sgd_step_cuda(const OptimTensors& t, DType param_dtype, DType grad_dtype, const SgdHyper& h,
                   const float* grad_scale, const float* found_inf, void* stream) {
  check_sizes(t, param_dtype);
  const bool has_momentum = h.momentum != 0.0;
  SHARDKIT_CHECK(!has_momentum || t.state_a.size() == t.params.size(), "momentum_buffers: expected ",
                 t.params.size(), " entries");
  SgdConsts c{};
  c.lr = static_cast<float>(h.lr);
  c.momentum = static_cast<float>(h.momentum);
  c.dampening_complement = static_cast<float>(1.0 - h.dampening);
  c.weight_decay = static_cast<float>(h.weight_decay);
  c.inv_grad_scale = 1.0f;
  c.nesterov = h.nesterov;
  c.maximize = h.maximize;
  c.first_step = h.first_step;
  c.has_momentum = has_momentum;
  auto s = static_cast<cudaStream_t>(stream);
  const std::vector<void*> lists[kSgdLists] = {as_void(t.params), as_void(t.grads), as_void(t.masters),
                                               as_void(t.state_a)};
  dispatch_dtypes(param_dtype, grad_dtype, [&](auto p_tag, auto g_tag) {
    using P = decltype(p_tag);
    using G = decltype(g_tag);
    mta::for_each_launch(lists, {}, t.numels, [&](const mta::Args<kSgdLists>& args, int blocks) {
      sgd_kernel<P, G><<<blocks, mta::kThreads, 0, s>>>(args, c, grad_scale, found_inf);
      mta::check_launch("fused_sgd_");
    });
  });
}

}  // namespace shardkit
