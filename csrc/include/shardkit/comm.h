// Native API of the shared-memory collectives (torch-free).
//
// One ShmGroup joins the ranks of one host through a POSIX shared-memory
// segment. Every rank owns kSlots outgoing slots; a message is written into
// one of the sender's slots and published by a release-store of its tag, and
// each reader acknowledges it in its own control block. The collectives
// (ring all-reduce / reduce-scatter / all-gather, double binary tree
// all-reduce, star broadcast, chain reduce, barrier) are schedules of such
// messages, chunked to the slot size so that consecutive steps pipeline.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "shardkit/common.h"

namespace shardkit {

// Reductions; kAvg reduces as a sum and divides by the world size once, at the end.
enum class ReduceOp : int32_t { kSum = 0, kAvg = 1, kMax = 2, kMin = 3 };

// All-reduce schedules.
enum class CommAlgo : int32_t { kRing = 0, kTree = 1 };

// A peer that died, stalled past the timeout, or called a different
// collective. Distinct from Error (bad arguments): the group is unusable
// afterwards, on every rank, and must be re-created.
class CommError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The element-wise kernels behind the collectives, selected per CPU ISA.
// "acc" buffers hold the accumulation type: fp32 for bf16/fp16, the dtype
// itself otherwise. Outputs may alias inputs element for element.
// acc_out = acc_in op local (acc_in == nullptr: acc_out = local converted).
void reduce_to_acc(void* acc_out, const void* acc_in, const void* local, int64_t n, DType dtype, ReduceOp op);
// acc_out = a op b, all three in the accumulation type.
void reduce_acc_acc(void* acc_out, const void* a, const void* b, int64_t n, DType dtype, ReduceOp op);
// r = acc_in op local (local may be null), divided by `world` for kAvg, then
// stored in the dtype into out and, when not null, out2.
void reduce_finish(void* out, void* out2, const void* acc_in, const void* local, int64_t n, DType dtype,
                   ReduceOp op, int world);
// Bytes per element of the accumulation type.
int64_t acc_size(DType dtype);

// Removes shared-memory segments of this library whose creating process is
// gone (left behind by a crashed job); returns how many were removed.
int cleanup_stale_segments();

class ShmTransport;

class ShmGroup {
 public:
  // `name`: the segment name, identical on all ranks of the host, of the form
  // shardkit_<pid of local rank 0>_<token>. Local rank 0 creates it; all ranks
  // attach within `timeout_s`, after which the name is unlinked, so nothing is
  // left in /dev/shm even if a process crashes later. `global_ranks[i]` is
  // the job-wide rank of local rank i, used only in error messages.
  ShmGroup(const std::string& name, int rank, int world, int64_t slot_bytes, double timeout_s,
           const std::vector<int>& global_ranks);
  ~ShmGroup();
  ShmGroup(const ShmGroup&) = delete;
  ShmGroup& operator=(const ShmGroup&) = delete;

  int rank() const;
  int world() const;
  void set_timeout(double timeout_s);
  // Workers for the copy and reduction of each message (default 1: all on the
  // calling thread). A step is split over parallel_run workers, on multiples
  // of 16 elements, only when every worker gets at least
  // `min_bytes_per_thread`; smaller steps stay on the calling thread. Results
  // do not depend on either value: each element goes through the same
  // operations in the same order whoever computes it.
  void set_threads(int threads, int64_t min_bytes_per_thread);
  int threads() const { return threads_; }
  int64_t min_bytes_per_thread() const { return min_bytes_per_thread_; }

  // out[n] = reduction over ranks of in[n]; out may equal in.
  void all_reduce(void* out, const void* in, int64_t n, DType dtype, ReduceOp op, CommAlgo algo);
  // in[world * n_out]: block i is reduced over ranks into out[n_out] of rank i.
  void reduce_scatter(void* out, const void* in, int64_t n_out, DType dtype, ReduceOp op);
  // out[world * n_in]: block i is in[n_in] of rank i; in may be out's own block.
  void all_gather(void* out, const void* in, int64_t n_in, DType dtype);
  // data[n] of rank `root` is copied to every rank.
  void broadcast(void* data, int64_t n, DType dtype, int root);
  // out[n] of rank `root` = reduction of in[n] over ranks; other ranks' out is untouched.
  void reduce(void* out, const void* in, int64_t n, DType dtype, ReduceOp op, int root);
  void barrier();
  // Unmaps the segment; later calls raise. Idempotent.
  void close();

 private:
  std::unique_ptr<ShmTransport> t_;
  int threads_ = 1;
  int64_t min_bytes_per_thread_ = 64 * 1024;
};

}  // namespace shardkit
