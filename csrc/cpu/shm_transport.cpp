// The shared-memory segment's life cycle and message primitives (see
// shm_transport.h): create/attach/unlink, stale-segment cleanup, and the
// wait loop that spins, then yields, then sleeps, and turns a dead, stalled
// or diverging peer into a CommError instead of a hang.
#include "cpu/shm_transport.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SHARDKIT_PAUSE() _mm_pause()
#else
#define SHARDKIT_PAUSE() std::atomic_signal_fence(std::memory_order_seq_cst)
#endif

namespace shardkit {
namespace {

constexpr const char* kPrefix = "shardkit_";
using Clock = std::chrono::steady_clock;

int64_t round_up(int64_t x, int64_t a) { return (x + a - 1) / a * a; }

int64_t slot_stride(int64_t slot_bytes) { return sizeof(SlotHeader) + round_up(slot_bytes, 64); }

int64_t segment_size(int world, int64_t slot_bytes) {
  return round_up(sizeof(SegmentHeader), 64) + world * static_cast<int64_t>(sizeof(RankControl)) +
         static_cast<int64_t>(world) * kSlots * slot_stride(slot_bytes);
}

// A process that exited but was not reaped yet still answers kill(pid, 0):
// read its state from /proc so that a zombie counts as dead.
bool process_alive(int pid) {
  if (pid <= 0) return true;  // not attached yet: judged by the timeout instead
  if (kill(pid, 0) != 0 && errno == ESRCH) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string content;
  if (!std::getline(stat, content)) return true;
  const size_t close_paren = content.rfind(')');
  if (close_paren == std::string::npos || close_paren + 2 >= content.size()) return true;
  const char state = content[close_paren + 2];
  return state != 'Z' && state != 'X';
}

// The creator's pid is part of the name: shardkit_<pid>_<token>.
int creator_pid(const std::string& name) {
  if (name.rfind(kPrefix, 0) != 0) return -1;
  return std::atoi(name.c_str() + std::strlen(kPrefix));
}

// Shared (not FUTEX_PRIVATE) futexes: the word lives in a MAP_SHARED segment.
void futex_wait(std::atomic<uint32_t>* word, uint32_t expected, int64_t timeout_ns) {
  struct timespec ts {};
  ts.tv_sec = timeout_ns / 1000000000;
  ts.tv_nsec = timeout_ns % 1000000000;
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void futex_wake_all(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

}  // namespace

const char* coll_name(int32_t kind) {
  switch (static_cast<CollKind>(kind)) {
    case CollKind::kAllReduce: return "all_reduce";
    case CollKind::kReduceScatter: return "reduce_scatter";
    case CollKind::kAllGather: return "all_gather";
    case CollKind::kBroadcast: return "broadcast";
    case CollKind::kReduce: return "reduce";
    case CollKind::kBarrier: return "barrier";
  }
  return "unknown";
}

std::string describe(const CollDesc& d) {
  static const char* ops[] = {"sum", "avg", "max", "min"};
  std::ostringstream s;
  s << coll_name(d.kind) << " #" << d.seq << " (dtype=" << dtype_name(static_cast<DType>(d.dtype))
    << ", numel=" << d.numel;
  if (d.kind == static_cast<int32_t>(CollKind::kAllReduce) || d.kind == static_cast<int32_t>(CollKind::kReduce) ||
      d.kind == static_cast<int32_t>(CollKind::kReduceScatter)) {
    s << ", op=" << (d.op >= 0 && d.op < 4 ? ops[d.op] : "?");
  }
  if (d.kind == static_cast<int32_t>(CollKind::kAllReduce)) s << ", algo=" << (d.algo == 0 ? "ring" : "tree");
  if (d.kind == static_cast<int32_t>(CollKind::kBroadcast)) s << ", src=" << d.root;
  if (d.kind == static_cast<int32_t>(CollKind::kReduce)) s << ", dst=" << d.root;
  s << ")";
  return s.str();
}

int cleanup_stale_segments() {
  DIR* dir = opendir("/dev/shm");
  if (dir == nullptr) return 0;
  int removed = 0;
  while (dirent* entry = readdir(dir)) {
    const std::string name = entry->d_name;
    const int pid = creator_pid(name);
    if (pid > 0 && !process_alive(pid) && shm_unlink(("/" + name).c_str()) == 0) ++removed;
  }
  closedir(dir);
  return removed;
}

ShmTransport::ShmTransport(const std::string& name, int rank_, int world_, int64_t slot_bytes_, double timeout,
                           const std::vector<int>& global_ranks_)
    : rank(rank_), world(world_), slot_bytes(slot_bytes_), timeout_s(timeout), global_ranks(global_ranks_),
      name_("/" + name) {
  SHARDKIT_CHECK(world >= 1 && world <= kMaxLocalRanks, "world: expected 1..", kMaxLocalRanks, " ranks on one host, got ", world);
  SHARDKIT_CHECK(rank >= 0 && rank < world, "rank: expected 0..", world - 1, ", got ", rank);
  SHARDKIT_CHECK(slot_bytes >= 4096 && slot_bytes % 64 == 0, "slot_bytes: expected a multiple of 64, at least 4096, got ", slot_bytes);
  SHARDKIT_CHECK(timeout_s > 0, "timeout: expected a positive number of seconds, got ", timeout_s);
  SHARDKIT_CHECK(static_cast<int>(global_ranks.size()) == world, "global_ranks: expected ", world, " entries, got ", global_ranks.size());
  SHARDKIT_CHECK(creator_pid(name) > 0 && name.find('/') == std::string::npos,
                 "name: expected shardkit_<pid>_<token>, got '", name, "'");
  scratch_.resize(slot_bytes / sizeof(uint64_t));
  size_ = segment_size(world, slot_bytes);
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);

  int fd = -1;
  if (rank == 0) {
    cleanup_stale_segments();
    fd = shm_open(name_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) throw CommError("shardkit.comm: cannot create shared memory segment " + name_ + ": " + std::strerror(errno));
    if (ftruncate(fd, size_) != 0) {
      const int err = errno;
      ::close(fd);
      shm_unlink(name_.c_str());
      throw CommError("shardkit.comm: cannot size shared memory segment " + name_ + " to " + std::to_string(size_) +
                      " bytes (is /dev/shm large enough?): " + std::strerror(err));
    }
  } else {
    // Local rank 0 may not have created it yet.
    for (;;) {
      fd = shm_open(name_.c_str(), O_RDWR, 0600);
      struct stat st {};
      if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size == size_) break;
      if (fd >= 0) ::close(fd);
      fd = -1;
      const bool creator_died = !process_alive(creator_pid(name));
      if (creator_died || Clock::now() > deadline) {
        // A creator that died between creating and sizing the segment leaves its name behind: remove it.
        if (creator_died) shm_unlink(name_.c_str());
        throw CommError("shardkit.comm: " +
                        (creator_died ? who(0) + " died"
                                      : "timed out after " + std::to_string(timeout_s) + " s waiting for " + who(0)) +
                        " before creating shared memory segment " + name_);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
  base_ = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (base_ == MAP_FAILED) {
    base_ = nullptr;
    if (rank == 0) shm_unlink(name_.c_str());
    throw CommError(std::string("shardkit.comm: mmap of the shared memory segment failed: ") + std::strerror(errno));
  }
  header_ = static_cast<SegmentHeader*>(base_);
  if (rank == 0) {
    // ftruncate zero-fills: every tag, counter and flag starts at 0.
    header_->world = world;
    header_->slots = kSlots;
    header_->slot_bytes = slot_bytes;
    header_->total_bytes = size_;
    header_->magic.store(kSegmentMagic, std::memory_order_release);
  }
  try {
    wait_for(0, "to initialise the shared memory segment",
             [&] { return header_->magic.load(std::memory_order_acquire) == kSegmentMagic; });
    SHARDKIT_CHECK(header_->world == world && header_->slot_bytes == slot_bytes,
                   "shared memory segment ", name_, " was created for ", header_->world, " ranks and slot_bytes ",
                   header_->slot_bytes, ", this rank expects ", world, " and ", slot_bytes);
    control(rank)->pid.store(getpid(), std::memory_order_relaxed);
    // The last rank to attach removes the name: every rank has the segment
    // mapped by then, so its memory is freed when the last process exits,
    // however it exits (rank 0 may already be dead).
    if (header_->attached.fetch_add(1, std::memory_order_acq_rel) + 1 == world) shm_unlink(name_.c_str());
    notify();
    for (int r = 0; r < world; ++r) {
      wait_for(r, "to attach to the shared memory segment",
               [&] { return header_->attached.load(std::memory_order_acquire) == world; });
    }
  } catch (...) {
    if (rank == 0 || !process_alive(creator_pid(name))) shm_unlink(name_.c_str());
    munmap(base_, size_);
    base_ = nullptr;
    throw;
  }
}

ShmTransport::~ShmTransport() { close(); }

void ShmTransport::close() {
  if (base_ != nullptr) munmap(base_, size_);
  base_ = nullptr;
  header_ = nullptr;
}

RankControl* ShmTransport::control(int r) const {
  char* p = static_cast<char*>(base_) + round_up(sizeof(SegmentHeader), 64);
  return reinterpret_cast<RankControl*>(p) + r;
}

SlotHeader* ShmTransport::slot_header(int r, int slot) const {
  char* p = static_cast<char*>(base_) + round_up(sizeof(SegmentHeader), 64) + world * static_cast<int64_t>(sizeof(RankControl));
  return reinterpret_cast<SlotHeader*>(p + (static_cast<int64_t>(r) * kSlots + slot) * slot_stride(slot_bytes));
}

std::string ShmTransport::who(int peer) const {
  std::ostringstream s;
  s << "rank " << global_ranks[peer] << " (local rank " << peer;
  if (header_ != nullptr) {
    const int pid = control(peer)->pid.load(std::memory_order_relaxed);
    if (pid > 0) s << ", pid " << pid;
  }
  s << ")";
  return s.str();
}

void ShmTransport::check_usable() const {
  if (header_ == nullptr) throw CommError("shardkit.comm: the group is closed");
  if (header_->aborted.load(std::memory_order_acquire)) {
    throw CommError(std::string("shardkit.comm: the group was aborted: ") + header_->abort_msg);
  }
}

void ShmTransport::fail(const std::string& msg) {
  // The first failure is recorded for every rank, so that the others stop
  // waiting at once and report the cause, not a timeout of their own.
  int expected = 0;
  if (header_ != nullptr && header_->aborted.load() == 0) {
    std::snprintf(header_->abort_msg, sizeof(header_->abort_msg), "%s", msg.c_str());
    header_->aborted.compare_exchange_strong(expected, 1, std::memory_order_acq_rel);
  }
  throw CommError(msg);
}

void ShmTransport::begin(CollDesc desc) {
  check_usable();
  desc.seq = ++seq_;
  cur_ = desc;
  control(rank)->kind.store(desc.kind, std::memory_order_relaxed);
  control(rank)->seq.store(desc.seq, std::memory_order_relaxed);
}

void ShmTransport::notify() {
  RankControl* me = control(rank);
  me->events.fetch_add(1, std::memory_order_seq_cst);
  if (me->sleepers.load(std::memory_order_seq_cst) > 0) futex_wake_all(&me->events);
}

template <typename Ready>
void ShmTransport::wait_for(int peer, const char* what, const Ready& ready) {
  // Spin briefly: on an idle machine the peer answers within microseconds.
  for (int i = 0; i < 256; ++i) {
    if (ready()) return;
    SHARDKIT_PAUSE();
  }
  // Then yield a few times, then sleep on the peer's futex until it signals
  // an event. Sleeping in the kernel matters on an oversubscribed machine
  // (4 ranks on 2 cores): a rank that keeps yielding stays runnable and
  // competes with the very peer it waits for, while a sleeping one is woken
  // exactly when there is news, as a socket reader would be.
  for (int i = 0; i < 16; ++i) {
    if (ready()) return;
    sched_yield();
  }
  RankControl* other = control(peer);
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration<double>(timeout_s);
  auto next_liveness = start + std::chrono::milliseconds(20);
  for (;;) {
    const uint32_t seen = other->events.load(std::memory_order_seq_cst);
    other->sleepers.fetch_add(1, std::memory_order_seq_cst);
    // Re-check after announcing ourselves: a notify() between the check and
    // the sleep either sees sleepers > 0 or changed `events` (then FUTEX_WAIT
    // returns at once).
    const bool done = ready();
    if (!done) futex_wait(&other->events, seen, 2000000);  // 2 ms: re-check faults regularly
    other->sleepers.fetch_sub(1, std::memory_order_seq_cst);
    if (done || ready()) return;
    if (header_->aborted.load(std::memory_order_acquire)) {
      throw CommError(std::string("shardkit.comm: the group was aborted: ") + header_->abort_msg);
    }
    const auto now = Clock::now();
    if (now >= next_liveness) {
      next_liveness = now + std::chrono::milliseconds(50);
      if (!process_alive(other->pid.load(std::memory_order_relaxed))) {
        fail("shardkit.comm: " + who(peer) + " died; " + who(rank) + " was waiting for it " + what + " in " +
             (cur_.seq ? describe(cur_) : std::string("group creation")));
      }
    }
    if (now > deadline) {
      std::ostringstream s;
      s << "shardkit.comm: timed out after " << timeout_s << " s: " << who(rank) << " waited for " << who(peer) << " "
        << what << " in " << (cur_.seq ? describe(cur_) : std::string("group creation"));
      const uint64_t peer_seq = other->seq.load(std::memory_order_relaxed);
      if (cur_.seq) {
        if (peer_seq == 0) {
          s << "; that rank has not started any collective (stalled before its first one)";
        } else {
          s << "; that rank is " << (peer_seq < cur_.seq ? "still at " : peer_seq == cur_.seq ? "in " : "already at ")
            << coll_name(other->kind.load()) << " #" << peer_seq
            << (peer_seq == cur_.seq ? " too (stalled inside it)" : " (stalled, or the ranks issued different collectives)");
        }
      }
      fail(s.str());
    }
  }
}

void* ShmTransport::acquire(int slot) {
  for (int r = 0; r < world; ++r) {
    if (!slot_readers_[slot][r]) continue;
    const uint64_t need = slot_tag_[slot];
    wait_for(r, "to read a previous message", [&] {
      return control(r)->consumed[rank].load(std::memory_order_acquire) >= need;
    });
  }
  return reinterpret_cast<char*>(slot_header(rank, slot)) + sizeof(SlotHeader);
}

void ShmTransport::publish(int slot, uint32_t id, const std::bitset<kMaxLocalRanks>& readers) {
  SlotHeader* h = slot_header(rank, slot);
  h->desc = cur_;
  h->tag.store(tag(id), std::memory_order_release);
  slot_tag_[slot] = tag(id);
  slot_readers_[slot] = readers;
  notify();
}

const void* ShmTransport::await(int src, int slot, uint32_t id) {
  SlotHeader* h = slot_header(src, slot);
  const uint64_t want = tag(id);
  wait_for(src, "to send data", [&] {
    const uint64_t t = h->tag.load(std::memory_order_acquire);
    // A later collective's tag means `src` skipped this one: stop waiting, the desc check reports it.
    return t == want || (t >> 32) > cur_.seq;
  });
  const CollDesc theirs = h->desc;
  if (!(theirs == cur_)) {
    fail("shardkit.comm: collective mismatch: " + who(rank) + " called " + describe(cur_) + " but " + who(src) +
         " called " + describe(theirs) + "; every rank must call the same collectives in the same order with the "
         "same dtype and size");
  }
  return reinterpret_cast<const char*>(h) + sizeof(SlotHeader);
}

void ShmTransport::release(int src, uint32_t id) {
  control(rank)->consumed[src].store(tag(id), std::memory_order_release);
  notify();
}

void ShmTransport::barrier() {
  const uint64_t target = ++barrier_count_;
  control(rank)->barrier.store(target, std::memory_order_release);
  notify();
  for (int r = 0; r < world; ++r) {
    if (r == rank) continue;
    wait_for(r, "to enter the barrier", [&] { return control(r)->barrier.load(std::memory_order_acquire) >= target; });
  }
}

}  // namespace shardkit
