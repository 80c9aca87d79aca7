// A small persistent thread pool for the CPU kernels.
//
// Why our own pool: the core is torch-free, and bundling a second OpenMP
// runtime next to torch's libgomp makes two pools fight for the same cores.
// Python passes torch.get_num_threads() on every call, so we follow torch's
// setting; workers sleep on a condition variable between calls.
#pragma once

#include <cstdint>
#include <functional>

namespace shardkit {

// Runs fn(thread_index, num_threads) on `num_threads` threads (the caller is
// thread 0) and returns when all have finished. Exceptions thrown by any
// thread are rethrown in the caller.
void parallel_run(int num_threads, const std::function<void(int, int)>& fn);

// Splits [0, total) into `parts` contiguous ranges whose boundaries are
// multiples of `align`; returns the [begin, end) of range `index`.
inline void split_range(int64_t total, int parts, int index, int64_t align, int64_t* begin,
                        int64_t* end) {
  int64_t blocks = (total + align - 1) / align;
  int64_t lo = blocks * index / parts;
  int64_t hi = blocks * (index + 1) / parts;
  *begin = lo * align < total ? lo * align : total;
  *end = hi * align < total ? hi * align : total;
}

}  // namespace shardkit
