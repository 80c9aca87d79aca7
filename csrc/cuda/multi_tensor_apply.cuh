// Multi-tensor apply: many tensors, one kernel launch. The host cuts every
// tensor into fixed-size chunks and packs, per launch, up to kMaxTensors
// tensors' pointers and up to kMaxBlocks (tensor, chunk) pairs into the
// kernel's by-value arguments; block b processes chunk block_chunk[b] of
// tensor block_tensor[b]. The arguments stay under the classic 4 KiB limit.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "shardkit/common.h"

namespace shardkit::mta {

constexpr int kMaxTensors = 36;
constexpr int kMaxBlocks = 256;
constexpr int64_t kChunk = 65536;
constexpr int kThreads = 512;

template <int kLists>
struct Args {
  void* ptrs[kLists][kMaxTensors];
  float* step[kMaxTensors];
  int64_t numel[kMaxTensors];
  uint8_t block_tensor[kMaxBlocks];
  int32_t block_chunk[kMaxBlocks];
};

inline void check_launch(const char* what) {
  cudaError_t err = cudaGetLastError();
  SHARDKIT_CHECK(err == cudaSuccess, what, ": CUDA launch failed: ", cudaGetErrorString(err));
}

// Calls launch(args, blocks) for every batch of (tensor, chunk) pairs.
// `lists[l][i]` is the pointer of list l for tensor i (may be null when the
// list is unused); `steps` may be empty.
template <int kLists, typename Launch>
void for_each_launch(const std::vector<void*> (&lists)[kLists], const std::vector<float*>& steps,
                     const std::vector<int64_t>& numels, const Launch& launch) {
  Args<kLists> args{};
  int tensors = 0, blocks = 0;
  for (size_t i = 0; i < numels.size(); ++i) {
    if (numels[i] == 0) continue;
    for (int l = 0; l < kLists; ++l) args.ptrs[l][tensors] = lists[l].empty() ? nullptr : lists[l][i];
    args.step[tensors] = steps.empty() ? nullptr : steps[i];
    args.numel[tensors] = numels[i];
    const int64_t chunks = (numels[i] + kChunk - 1) / kChunk;
    for (int64_t c = 0; c < chunks; ++c) {
      args.block_tensor[blocks] = static_cast<uint8_t>(tensors);
      args.block_chunk[blocks] = static_cast<int32_t>(c);
      ++blocks;
      const bool last_chunk = c == chunks - 1;
      const bool blocks_full = blocks == kMaxBlocks;
      const bool tensors_full = tensors + 1 == kMaxTensors && last_chunk;
      if (blocks_full || tensors_full) {
        launch(args, blocks);
        blocks = 0;
        if (last_chunk) {
          tensors = -1;  // the next tensor starts a fresh table
        } else {
          // The rest of this tensor's chunks go on in slot 0 of a new table.
          for (int l = 0; l < kLists; ++l) args.ptrs[l][0] = args.ptrs[l][tensors];
          args.step[0] = args.step[tensors];
          args.numel[0] = args.numel[tensors];
          tensors = 0;
        }
      }
    }
    ++tensors;
  }
  if (blocks > 0) launch(args, blocks);
}

}  // namespace shardkit::mta
