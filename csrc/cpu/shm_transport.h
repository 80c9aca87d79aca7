// Internals of the shared-memory transport: the segment layout, the message
// primitives (acquire a slot, publish it, await a peer's slot, acknowledge
// it) and the wait loop with its fault detection.
//
// Segment layout (every field that one rank writes and others poll sits on
// its own cache line, so spinning readers never steal the writer's line):
//   SegmentHeader | RankControl[world] | per rank: kSlots x (SlotHeader + slot_bytes)
#pragma once

#include <atomic>
#include <bitset>
#include <cstdint>
#include <string>
#include <vector>

#include "shardkit/comm.h"

namespace shardkit {

constexpr int kMaxLocalRanks = 128;
constexpr int kSlots = 4;
constexpr uint64_t kSegmentMagic = 0x31636b6d6d6f6373ull;  // bumped when the layout changes

enum class CollKind : int32_t { kAllReduce = 1, kReduceScatter, kAllGather, kBroadcast, kReduce, kBarrier };
const char* coll_name(int32_t kind);

// What a rank is doing: sent with every message and compared by the reader,
// so ranks calling different collectives fail instead of mixing buffers.
struct CollDesc {
  uint64_t seq;
  int32_t kind, dtype, op, root, algo, pad;
  int64_t numel;
  bool operator==(const CollDesc& o) const {
    return seq == o.seq && kind == o.kind && dtype == o.dtype && op == o.op && root == o.root && algo == o.algo &&
           numel == o.numel;
  }
};
std::string describe(const CollDesc& d);

struct alignas(64) SegmentHeader {
  std::atomic<uint64_t> magic;  // release-stored last by the creator
  int32_t world, slots;
  int64_t slot_bytes, total_bytes;
  alignas(64) std::atomic<int32_t> attached;
  alignas(64) std::atomic<int32_t> aborted;
  char abort_msg[1024];
};

struct alignas(64) RankControl {
  // Futex word: bumped by this rank after every publish, acknowledgement and
  // barrier entry; a peer that has spun long enough sleeps on it (see wait_for).
  std::atomic<uint32_t> events;
  std::atomic<int32_t> sleepers;
  alignas(64) std::atomic<int32_t> pid;
  std::atomic<uint64_t> seq;  // the collective this rank is in (status for error messages)
  std::atomic<int32_t> kind;
  alignas(64) std::atomic<uint64_t> barrier;
  // consumed[src]: tag of the last message of `src` this rank has read. Only
  // this rank writes it; `src` polls it before reusing a slot.
  alignas(64) std::atomic<uint64_t> consumed[kMaxLocalRanks];
};

struct alignas(64) SlotHeader {
  std::atomic<uint64_t> tag;  // (seq << 32) | message id; release-stored after data and desc
  CollDesc desc;
};

class ShmTransport {
 public:
  ShmTransport(const std::string& name, int rank, int world, int64_t slot_bytes, double timeout_s,
               const std::vector<int>& global_ranks);
  ~ShmTransport();

  int rank, world;
  int64_t slot_bytes;
  double timeout_s;
  std::vector<int> global_ranks;

  // Starts collective `desc` (seq is filled in); raises if the group is closed or aborted.
  void begin(CollDesc desc);
  const CollDesc& current() const { return cur_; }

  // Waits until the readers of whatever this rank last wrote into its slot
  // `slot` have all read it; returns the slot's data area.
  void* acquire(int slot);
  // Publishes message `id` of the current collective in `slot` to `readers`.
  void publish(int slot, uint32_t id, const std::bitset<kMaxLocalRanks>& readers);
  // Waits for message `id` of the current collective in `src`'s slot `slot`,
  // checks that `src` runs the same collective, returns its data area.
  const void* await(int src, int slot, uint32_t id);
  // Tells `src` that its message `id` has been read.
  void release(int src, uint32_t id);
  void barrier();
  void close();

  // Private fp32-or-wider scratch of slot_bytes, for the tree roots.
  void* scratch() { return scratch_.data(); }

 private:
  template <typename Ready>
  void wait_for(int peer, const char* what, const Ready& ready);
  [[noreturn]] void fail(const std::string& msg);
  // Wakes peers sleeping on this rank's events.
  void notify();
  void check_usable() const;
  std::string who(int peer) const;
  RankControl* control(int r) const;
  SlotHeader* slot_header(int r, int slot) const;
  uint64_t tag(uint32_t id) const { return (cur_.seq << 32) | id; }

  std::string name_;
  void* base_ = nullptr;
  int64_t size_ = 0;
  SegmentHeader* header_ = nullptr;
  CollDesc cur_{};
  uint64_t seq_ = 0;
  uint64_t barrier_count_ = 0;
  // What this rank last wrote into each of its slots, and for whom.
  uint64_t slot_tag_[kSlots] = {};
  std::bitset<kMaxLocalRanks> slot_readers_[kSlots];
  std::vector<uint64_t> scratch_;
};

}  // namespace shardkit
