// Argument conversion shared by the CPU and CUDA optimizer bindings: lists
// of data pointers (ints from Tensor.data_ptr()) into shardkit::OptimTensors.
#pragma once

#include <cstdint>
#include <vector>

#include "shardkit/optim.h"

namespace shardkit::bindings {

template <typename T>
std::vector<T> as_ptrs(const std::vector<uintptr_t>& addresses) {
  std::vector<T> out;
  out.reserve(addresses.size());
  for (uintptr_t a : addresses) out.push_back(reinterpret_cast<T>(a));
  return out;
}

inline OptimTensors make_tensors(const std::vector<uintptr_t>& params, const std::vector<uintptr_t>& grads,
                                 const std::vector<uintptr_t>& masters, const std::vector<uintptr_t>& state_a,
                                 const std::vector<uintptr_t>& state_b, const std::vector<uintptr_t>& state_c,
                                 const std::vector<uintptr_t>& steps, const std::vector<int64_t>& numels) {
  OptimTensors t;
  t.params = as_ptrs<void*>(params);
  t.grads = as_ptrs<const void*>(grads);
  t.masters = as_ptrs<float*>(masters);
  t.state_a = as_ptrs<float*>(state_a);
  t.state_b = as_ptrs<float*>(state_b);
  t.state_c = as_ptrs<float*>(state_c);
  t.steps = as_ptrs<float*>(steps);
  t.numels = numels;
  return t;
}

}  // namespace shardkit::bindings
