// Parallel regions of the CPU kernels.
//
// When the process already has an OpenMP runtime (torch's libgomp, loaded
// globally by `import torch`), the region runs on that runtime's threads,
// found at run time through the GOMP ABI: we never bundle a second runtime,
// and our kernels never fight torch's threads (whose workers spin for
// milliseconds after each torch op and would steal the cores from a second
// pool). Without one, a small persistent pool of our own serves instead; its
// workers sleep on a condition variable between calls. Python passes
// torch.get_num_threads() on every call. SHARDKIT_THREAD_POOL=own forces the
// own pool.
#pragma once

#include <cstdint>
#include <functional>

namespace shardkit {

// Calls fn(index, num_threads) once for every index in [0, num_threads),
// spread over up to `num_threads` threads (the caller takes part), and
// returns when all calls have finished. An exception thrown by any call is
// rethrown in the caller.
void parallel_run(int num_threads, const std::function<void(int, int)>& fn);

// parallel_run on shardkit's own pool whatever the process has loaded. Its
// idle workers sleep, where an OpenMP team's spin for a while after every
// region: the collectives use it, because their peers are other processes
// waiting for this one's messages, and a spinning team takes the cores they
// need (2 ranks x 2 threads on 2 busy cores ran the comm tests 25x slower on
// libgomp's team than on this pool). Calls from several threads queue.
void parallel_run_own_pool(int num_threads, const std::function<void(int, int)>& fn);

// "openmp" (the process's OpenMP runtime) or "own" (shardkit's pool).
const char* thread_pool_kind();

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
