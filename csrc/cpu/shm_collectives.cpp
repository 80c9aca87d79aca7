// The collectives as message schedules over the shared-memory transport.
//
// Data move in chunks of one slot. Message ids are the same on every rank,
// so a reader knows which tag to wait for; a message's slot is its id modulo
// kSlots, so a sender runs up to kSlots - 1 messages ahead of its slowest
// reader (the pipelining). Every schedule is a sequence of phases that all
// ranks run in the same order, and within a phase data flow one way (around
// the ring, up or down a tree), so waits cannot form a cycle.
#include <algorithm>
#include <cstring>
#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#include "cpu/shm_transport.h"
#include "shardkit/parallel.h"

namespace shardkit {
namespace {

using Readers = std::bitset<kMaxLocalRanks>;

Readers only(int r) {
  Readers s;
  s.set(r);
  return s;
}

int slot_of(uint32_t id) { return static_cast<int>(id % kSlots); }

// Element ranges are split on multiples of 16 so that vector loops see whole
// vectors except at the end of the tensor.
constexpr int64_t kAlignElems = 16;

// Parent and children of every rank in the binary tree where odd ranks are
// leaves: rank v's parent clears v's lowest set bit and sets the next one
// (or just clears it when that parent would not exist). Rank 0 is the root.
struct Tree {
  std::vector<int> parent;
  std::vector<std::vector<int>> children;
};

Tree leaf_odd_tree(int p) {
  Tree t;
  t.parent.assign(p, -1);
  t.children.assign(p, {});
  for (int v = 1; v < p; ++v) {
    const int bit = v & -v;
    int up = (v ^ bit) | (bit << 1);
    if (up >= p) up = v ^ bit;
    t.parent[v] = up;
    t.children[up].push_back(v);
  }
  return t;
}

// The second tree relabels the first so that the first tree's leaves
// become inner nodes: mirrored for even p, shifted by one for odd p. Each
// rank is then a leaf in at least one tree and the two trees' inner work
// lands on different ranks.
Tree relabel(const Tree& t, int p, bool second) {
  if (!second) return t;
  auto map = [&](int v) { return v < 0 ? -1 : (p % 2 == 0 ? p - 1 - v : (v + 1) % p); };
  Tree out;
  out.parent.assign(p, -1);
  out.children.assign(p, {});
  for (int v = 0; v < p; ++v) {
    out.parent[map(v)] = map(t.parent[v]);
    for (int c : t.children[v]) out.children[map(v)].push_back(map(c));
  }
  return out;
}

// Copies into a collective's output, which nobody reads during the call:
// non-temporal stores skip reading each destination line first (a third of
// the memory traffic of a copy). Falls back to memmove for overlapping or
// unaligned buffers.
void copy_to_output(void* dst, const void* src, int64_t bytes) {
#if defined(__x86_64__)
  const auto d = reinterpret_cast<uintptr_t>(dst), s = reinterpret_cast<uintptr_t>(src);
  const bool overlap = d < s + static_cast<uintptr_t>(bytes) && s < d + static_cast<uintptr_t>(bytes);
  if (!overlap && (d & 15) == 0 && bytes >= 4096) {
    const int64_t vec = bytes & ~int64_t{63};
    auto* out = static_cast<__m128i*>(dst);
    const auto* in = static_cast<const __m128i*>(src);
    for (int64_t i = 0; i < vec / 16; i += 4) {
      __m128i x0 = _mm_loadu_si128(in + i), x1 = _mm_loadu_si128(in + i + 1);
      __m128i x2 = _mm_loadu_si128(in + i + 2), x3 = _mm_loadu_si128(in + i + 3);
      _mm_stream_si128(out + i, x0);
      _mm_stream_si128(out + i + 1, x1);
      _mm_stream_si128(out + i + 2, x2);
      _mm_stream_si128(out + i + 3, x3);
    }
    _mm_sfence();  // on every worker: its streaming stores are ordered before parallel_run joins
    std::memcpy(static_cast<char*>(dst) + vec, static_cast<const char*>(src) + vec, bytes - vec);
    return;
  }
#endif
  std::memmove(dst, src, bytes);
}

void copy2(void* a, void* b, const void* src, int64_t bytes) {
  if (a != src) copy_to_output(a, src, bytes);
  if (b != nullptr) std::memcpy(b, src, bytes);
}

bool overlap(const void* a, const void* b, int64_t bytes) {
  const auto x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
  return x < y + static_cast<uintptr_t>(bytes) && y < x + static_cast<uintptr_t>(bytes);
}

// Offsets a possibly null pointer by `elem` elements of `size` bytes.
void* off(void* p, int64_t elem, int64_t size) { return p == nullptr ? p : static_cast<char*>(p) + elem * size; }
const void* off(const void* p, int64_t elem, int64_t size) {
  return p == nullptr ? p : static_cast<const char*>(p) + elem * size;
}

// State of one collective: dtype, op, element sizes, the workers each copy or
// reduction step may use, and the message counter the schedules below draw
// ids from (identical on every rank).
//
// Every data step goes through the methods below. They split the step's
// elements over up to `threads` workers when each worker gets
// at least `min_bytes` (counted on the step's accumulation or element
// stream), on multiples of kAlignElems, on shardkit's own pool (sleeping
// workers; see parallel_run_own_pool for why not torch's OpenMP team). The
// kernels are element-wise, so the split changes no result. The pool joins
// before it returns, so the caller publishes or releases a slot only after
// every worker is done with it.
// With threads == 1 a step is one direct call, as before.
struct Run {
  ShmTransport& t;
  DType dtype;
  ReduceOp op;
  int64_t esize, asize;
  int threads;
  int64_t min_bytes;
  uint32_t next_id = 1;

  Run(ShmTransport& tr, DType dt, ReduceOp o, int nthreads, int64_t min_bytes_per_thread)
      : t(tr), dtype(dt), op(o), esize(dtype_size(dt)), asize(acc_size(dt)), threads(nthreads),
        min_bytes(std::max<int64_t>(min_bytes_per_thread, 1)) {}

  const char* at(const void* base, int64_t elem) const { return static_cast<const char*>(base) + elem * esize; }
  char* at(void* base, int64_t elem) const { return static_cast<char*>(base) + elem * esize; }

  // fn(lo, len) over [0, n) elements of `bytes_per_elem`: on this thread, or split over workers.
  template <typename Fn>
  void split(int64_t n, int64_t bytes_per_elem, const Fn& fn) const {
    if (threads > 1) {
      const int64_t parts = std::min<int64_t>(threads, n * bytes_per_elem / min_bytes);
      if (parts > 1) {
        parallel_run_own_pool(static_cast<int>(parts), [&](int i, int k) {
          int64_t b, e;
          split_range(n, k, i, kAlignElems, &b, &e);
          if (e > b) fn(b, e - b);
        });
        return;
      }
    }
    fn(0, n);
  }

  // The kernels of comm_reduce.cpp, split: acc pointers in the accumulation type, the others in the dtype.
  void to_acc(void* acc_out, const void* acc_in, const void* local, int64_t n) const {
    split(n, asize, [&](int64_t lo, int64_t len) {
      reduce_to_acc(off(acc_out, lo, asize), off(acc_in, lo, asize), off(local, lo, esize), len, dtype, op);
    });
  }
  void acc_acc(void* acc_out, const void* a, const void* b, int64_t n) const {
    split(n, asize, [&](int64_t lo, int64_t len) {
      reduce_acc_acc(off(acc_out, lo, asize), off(a, lo, asize), off(b, lo, asize), len, dtype, op);
    });
  }
  void finish(void* out, void* out2, const void* acc_in, const void* local, int64_t n) const {
    split(n, asize, [&](int64_t lo, int64_t len) {
      reduce_finish(off(out, lo, esize), off(out2, lo, esize), off(acc_in, lo, asize), off(local, lo, esize), len,
                    dtype, op, t.world);
    });
  }
  // copy2 of n elements: src into a (unless a is src) and, when not null, into b.
  // An a that overlaps src (the caller's own buffers) stays on one thread, for memmove.
  void copy(void* a, void* b, const void* src, int64_t n) const {
    if (a != src && overlap(a, src, n * esize)) {
      copy2(a, b, src, n * esize);
      return;
    }
    split(n, esize, [&](int64_t lo, int64_t len) {
      copy2(off(a, lo, esize), off(b, lo, esize), off(src, lo, esize), len * esize);
    });
  }
  // memcpy of n elements between disjoint buffers (one of them a slot).
  void memcpy_elems(void* dst, const void* src, int64_t n) const {
    split(n, esize, [&](int64_t lo, int64_t len) { std::memcpy(off(dst, lo, esize), off(src, lo, esize), len * esize); });
  }
};

// Rooted collectives (broadcast, reduce) start with every rank checking
// every other rank's description, root included: in a star broadcast a rank
// that believes itself the root reads nothing, so ranks that disagree on the
// root would otherwise return with diverged data (or, in the reduce chain,
// wait for one another until the timeout). One small exchange per call.
void agree_on_desc(Run& run) {
  ShmTransport& t = run.t;
  const uint32_t id = run.next_id++;
  Readers others;
  for (int i = 0; i < t.world; ++i) others.set(i, i != t.rank);
  t.acquire(slot_of(id));
  t.publish(slot_of(id), id, others);
  for (int src = 0; src < t.world; ++src) {
    if (src == t.rank) continue;
    t.await(src, slot_of(id), id);
    t.release(src, id);
  }
}

}  // namespace

ShmGroup::ShmGroup(const std::string& name, int rank, int world, int64_t slot_bytes, double timeout_s,
                   const std::vector<int>& global_ranks)
    : t_(new ShmTransport(name, rank, world, slot_bytes, timeout_s, global_ranks)) {}

ShmGroup::~ShmGroup() = default;

int ShmGroup::rank() const { return t_->rank; }
int ShmGroup::world() const { return t_->world; }
void ShmGroup::set_timeout(double timeout_s) {
  SHARDKIT_CHECK(timeout_s > 0, "timeout: expected a positive number of seconds, got ", timeout_s);
  t_->timeout_s = timeout_s;
}
void ShmGroup::close() { t_->close(); }
void ShmGroup::set_threads(int threads, int64_t min_bytes_per_thread) {
  SHARDKIT_CHECK(threads >= 1, "threads: expected a positive number of threads, got ", threads);
  SHARDKIT_CHECK(min_bytes_per_thread >= 1, "min_bytes_per_thread: expected a positive number of bytes, got ",
                 min_bytes_per_thread);
  threads_ = threads;
  min_bytes_per_thread_ = min_bytes_per_thread;
}

namespace {

void check_args(int64_t n, DType dtype, ReduceOp op) {
  SHARDKIT_CHECK(n >= 0, "numel: expected >= 0, got ", n);
  const bool is_int = dtype == DType::kInt32 || dtype == DType::kInt64;
  SHARDKIT_CHECK(!(is_int && op == ReduceOp::kAvg), "op: avg needs a floating-point dtype, got ", dtype_name(dtype));
  SHARDKIT_CHECK(dtype != DType::kUInt8, "dtype: collectives support float32, float64, bfloat16, float16, int32 and int64, got uint8");
}

// Ring reduce-scatter over one round: chunk(c) gives the element offset and
// length of chunk c in `in`; rank r ends with chunk r reduced. `last(src)`
// gets the accumulated chunk r from upstream (without this rank's own
// contribution) and writes the result.
template <typename Chunk, typename Last>
void ring_reduce_scatter_round(Run& run, const void* in, const Chunk& chunk, const Last& last) {
  ShmTransport& t = run.t;
  const int p = t.world, r = t.rank, prev = (r - 1 + p) % p, next = (r + 1) % p;
  for (int s = 0; s < p - 1; ++s) {
    const int c = ((r - 1 - s) % p + p) % p;
    int64_t lo, len;
    chunk(c, &lo, &len);
    const uint32_t id = run.next_id++;
    void* dst = t.acquire(slot_of(id));
    if (s == 0) {
      run.to_acc(dst, nullptr, run.at(in, lo), len);
    } else {
      const void* src = t.await(prev, slot_of(id - 1), id - 1);
      run.to_acc(dst, src, run.at(in, lo), len);
      t.release(prev, id - 1);
    }
    t.publish(slot_of(id), id, only(next));
  }
  const uint32_t id = run.next_id - 1;
  const void* src = t.await(prev, slot_of(id), id);
  last(src);
  t.release(prev, id);
}

// Ring all-gather steps after a rank has published its own chunk (as message
// run.next_id - 1): receives p - 1 chunks from upstream, forwarding all but
// the last. `place(c, src, dst)` stores chunk c from src into the output and,
// when dst is not null, also into dst (the slot forwarded downstream).
template <typename Place>
void ring_all_gather_rest(Run& run, const Place& place) {
  ShmTransport& t = run.t;
  const int p = t.world, r = t.rank, prev = (r - 1 + p) % p, next = (r + 1) % p;
  for (int s = 1; s < p; ++s) {
    const int c = ((r - s) % p + p) % p;
    const uint32_t got = run.next_id - 1;
    const void* src = t.await(prev, slot_of(got), got);
    if (s < p - 1) {
      const uint32_t id = run.next_id++;
      void* dst = t.acquire(slot_of(id));
      place(c, src, dst);
      t.publish(slot_of(id), id, only(next));
    } else {
      place(c, src, nullptr);
    }
    t.release(prev, got);
  }
}

void ring_all_reduce(Run& run, void* out, const void* in, int64_t n) {
  ShmTransport& t = run.t;
  const int p = t.world, r = t.rank, next = (r + 1) % p;
  // Chunk c is the c-th of p near-equal parts of the whole tensor, sent one
  // slot-sized piece per round, so which rank starts and which finishes the
  // reduction of an element (its summation order) depends on n and p only,
  // not on the slot size: a slot scaled with the thread count changes no
  // result. A piece travels as the accumulation type, so it must fit a slot as such.
  const int64_t chunk_elems = t.slot_bytes / run.asize / kAlignElems * kAlignElems;
  int64_t longest = 0;
  for (int c = 0; c < p; ++c) {
    int64_t b, e;
    split_range(n, p, c, kAlignElems, &b, &e);
    longest = std::max(longest, e - b);
  }
  for (int64_t piece = 0; piece < longest; piece += chunk_elems) {
    // Piece `piece` of chunk c (empty once chunk c is done: a shorter chunk
    // still takes part in the round's messages, with no data).
    auto chunk = [&](int c, int64_t* lo, int64_t* clen) {
      int64_t b, e;
      split_range(n, p, c, kAlignElems, &b, &e);
      const int64_t start = std::min(e - b, piece);
      *lo = b + start;
      *clen = std::min(chunk_elems, e - b - start);
    };
    int64_t mine_lo, mine_len;
    chunk(r, &mine_lo, &mine_len);
    ring_reduce_scatter_round(run, in, chunk, [&](const void* src) {
      // The reduced chunk goes to the output and, as the first all-gather
      // message, to the next rank: one pass writes both.
      const uint32_t id = run.next_id++;
      void* dst = t.acquire(slot_of(id));
      run.finish(run.at(out, mine_lo), dst, src, run.at(in, mine_lo), mine_len);
      t.publish(slot_of(id), id, only(next));
    });
    ring_all_gather_rest(run, [&](int c, const void* src, void* dst) {
      int64_t lo, clen;
      chunk(c, &lo, &clen);
      run.copy(run.at(out, lo), dst, src, clen);
    });
  }
}

// Double binary tree: tree k reduces and broadcasts half k of the data, one
// chunk at a time. Per chunk the phases are up0, up1, down0, down1.
void tree_all_reduce(Run& run, void* out, const void* in, int64_t n) {
  ShmTransport& t = run.t;
  const int p = t.world, r = t.rank;
  const Tree base_tree = leaf_odd_tree(p);
  const Tree trees[2] = {relabel(base_tree, p, false), relabel(base_tree, p, true)};
  int64_t half_lo[2], half_len[2];
  for (int k = 0; k < 2; ++k) {
    int64_t b, e;
    split_range(n, 2, k, kAlignElems, &b, &e);
    half_lo[k] = b;
    half_len[k] = e - b;
  }
  const int64_t chunk_elems = t.slot_bytes / run.asize / kAlignElems * kAlignElems;
  const int64_t rounds = (std::max(half_len[0], half_len[1]) + chunk_elems - 1) / chunk_elems;
  for (int64_t i = 0; i < rounds; ++i) {
    const uint32_t round_id = static_cast<uint32_t>(i) * 4 + 1;
    int64_t lo[2], len[2];
    for (int k = 0; k < 2; ++k) {
      lo[k] = half_lo[k] + std::min(half_len[k], i * chunk_elems);
      len[k] = std::min(chunk_elems, half_len[k] - (lo[k] - half_lo[k]));
    }
    for (int k = 0; k < 2; ++k) {  // up
      if (len[k] <= 0) continue;
      const Tree& tr = trees[k];
      const uint32_t id = round_id + k;
      const int parent = tr.parent[r];
      void* acc = parent >= 0 ? t.acquire(slot_of(id)) : t.scratch();
      const void* prev_acc = nullptr;
      for (int c : tr.children[r]) {
        const void* src = t.await(c, slot_of(id), id);
        if (prev_acc == nullptr) {
          run.to_acc(acc, src, run.at(in, lo[k]), len[k]);
        } else {
          run.acc_acc(acc, acc, src, len[k]);
        }
        prev_acc = acc;
        t.release(c, id);
      }
      if (prev_acc == nullptr) run.to_acc(acc, nullptr, run.at(in, lo[k]), len[k]);
      if (parent >= 0) t.publish(slot_of(id), id, only(parent));
    }
    for (int k = 0; k < 2; ++k) {  // down
      if (len[k] <= 0) continue;
      const Tree& tr = trees[k];
      const uint32_t id = round_id + 2 + k;
      Readers kids;
      for (int c : tr.children[r]) kids.set(c);
      void* dst = kids.any() ? t.acquire(slot_of(id)) : nullptr;
      const int parent = tr.parent[r];
      if (parent < 0) {
        run.finish(run.at(out, lo[k]), dst, t.scratch(), nullptr, len[k]);
      } else {
        const void* src = t.await(parent, slot_of(id), id);
        run.copy(run.at(out, lo[k]), dst, src, len[k]);
        t.release(parent, id);
      }
      if (dst != nullptr) t.publish(slot_of(id), id, kids);
    }
  }
}

}  // namespace

void ShmGroup::all_reduce(void* out, const void* in, int64_t n, DType dtype, ReduceOp op, CommAlgo algo) {
  check_args(n, dtype, op);
  SHARDKIT_CHECK(algo == CommAlgo::kRing || algo == CommAlgo::kTree, "algo: expected ring or tree");
  t_->begin(CollDesc{0, static_cast<int32_t>(CollKind::kAllReduce), static_cast<int32_t>(dtype),
                     static_cast<int32_t>(op), 0, static_cast<int32_t>(algo), 0, n});
  Run run(*t_, dtype, op, threads_, min_bytes_per_thread_);
  if (n == 0) return;
  if (t_->world == 1) {
    run.copy(out, nullptr, in, n);
    return;
  }
  if (algo == CommAlgo::kRing) {
    ring_all_reduce(run, out, in, n);
  } else {
    tree_all_reduce(run, out, in, n);
  }
}

void ShmGroup::reduce_scatter(void* out, const void* in, int64_t n_out, DType dtype, ReduceOp op) {
  check_args(n_out, dtype, op);
  t_->begin(CollDesc{0, static_cast<int32_t>(CollKind::kReduceScatter), static_cast<int32_t>(dtype),
                     static_cast<int32_t>(op), 0, 0, 0, n_out});
  Run run(*t_, dtype, op, threads_, min_bytes_per_thread_);
  const int p = t_->world, r = t_->rank;
  if (n_out == 0) return;
  if (p == 1) {
    run.copy(out, nullptr, in, n_out);
    return;
  }
  const int64_t chunk_elems = t_->slot_bytes / run.asize / kAlignElems * kAlignElems;
  for (int64_t base = 0; base < n_out; base += chunk_elems) {
    const int64_t len = std::min(chunk_elems, n_out - base);
    auto chunk = [&](int c, int64_t* lo, int64_t* clen) {
      *lo = c * n_out + base;
      *clen = len;
    };
    ring_reduce_scatter_round(run, in, chunk, [&](const void* src) {
      run.finish(run.at(out, base), nullptr, src, run.at(in, r * n_out + base), len);
    });
  }
}

void ShmGroup::all_gather(void* out, const void* in, int64_t n_in, DType dtype) {
  check_args(n_in, dtype, ReduceOp::kSum);
  t_->begin(CollDesc{0, static_cast<int32_t>(CollKind::kAllGather), static_cast<int32_t>(dtype), 0, 0, 0, 0, n_in});
  Run run(*t_, dtype, ReduceOp::kSum, threads_, min_bytes_per_thread_);
  const int p = t_->world, r = t_->rank, next = (r + 1) % p;
  if (n_in == 0) return;
  const int64_t chunk_elems = t_->slot_bytes / run.esize;
  for (int64_t base = 0; base < n_in; base += chunk_elems) {
    const int64_t len = std::min(chunk_elems, n_in - base);
    if (p == 1) {
      run.copy(run.at(out, base), nullptr, run.at(in, base), len);
      continue;
    }
    const uint32_t id = run.next_id++;
    void* dst = t_->acquire(slot_of(id));
    run.memcpy_elems(dst, run.at(in, base), len);
    t_->publish(slot_of(id), id, only(next));
    // in may be out's own block (in-place all-gather): memmove handles it.
    run.copy(run.at(out, r * n_in + base), nullptr, dst, len);
    ring_all_gather_rest(run, [&](int c, const void* src, void* fwd) {
      run.copy(run.at(out, c * n_in + base), fwd, src, len);
    });
  }
}

void ShmGroup::broadcast(void* data, int64_t n, DType dtype, int root) {
  check_args(n, dtype, ReduceOp::kSum);
  const int p = t_->world, r = t_->rank;
  SHARDKIT_CHECK(root >= 0 && root < p, "src: expected a local rank in 0..", p - 1, ", got ", root);
  t_->begin(CollDesc{0, static_cast<int32_t>(CollKind::kBroadcast), static_cast<int32_t>(dtype), 0, root, 0, 0, n});
  Run run(*t_, dtype, ReduceOp::kSum, threads_, min_bytes_per_thread_);
  if (p == 1) return;
  agree_on_desc(run);
  if (n == 0) return;
  // Star: the root writes each chunk once and every rank reads it from there,
  // which on shared memory beats relaying it around a ring.
  Readers others;
  for (int i = 0; i < p; ++i) others.set(i, i != root);
  const int64_t chunk_elems = t_->slot_bytes / run.esize;
  for (int64_t base = 0; base < n; base += chunk_elems) {
    const int64_t len = std::min(chunk_elems, n - base);
    const uint32_t id = run.next_id++;
    if (r == root) {
      run.memcpy_elems(t_->acquire(slot_of(id)), run.at(data, base), len);
      t_->publish(slot_of(id), id, others);
    } else {
      run.memcpy_elems(run.at(data, base), t_->await(root, slot_of(id), id), len);
      t_->release(root, id);
    }
  }
}

void ShmGroup::reduce(void* out, const void* in, int64_t n, DType dtype, ReduceOp op, int root) {
  check_args(n, dtype, op);
  const int p = t_->world, r = t_->rank;
  SHARDKIT_CHECK(root >= 0 && root < p, "dst: expected a local rank in 0..", p - 1, ", got ", root);
  t_->begin(CollDesc{0, static_cast<int32_t>(CollKind::kReduce), static_cast<int32_t>(dtype),
                     static_cast<int32_t>(op), root, 0, 0, n});
  Run run(*t_, dtype, op, threads_, min_bytes_per_thread_);
  if (p == 1) {
    if (n > 0) run.copy(out, nullptr, in, n);
    return;
  }
  agree_on_desc(run);
  if (n == 0) return;
  // Chain root+1 -> root+2 -> ... -> root, pipelined by chunks.
  const int pos = ((r - root - 1) % p + p) % p;
  const int prev = (r - 1 + p) % p, next = (r + 1) % p;
  const int64_t chunk_elems = t_->slot_bytes / run.asize / kAlignElems * kAlignElems;
  for (int64_t base = 0; base < n; base += chunk_elems) {
    const int64_t len = std::min(chunk_elems, n - base);
    const uint32_t id = run.next_id++;
    const void* src = pos == 0 ? nullptr : t_->await(prev, slot_of(id), id);
    if (pos == p - 1) {
      run.finish(run.at(out, base), nullptr, src, run.at(in, base), len);
    } else {
      void* dst = t_->acquire(slot_of(id));
      run.to_acc(dst, src, run.at(in, base), len);
      t_->publish(slot_of(id), id, only(next));
    }
    if (src != nullptr) t_->release(prev, id);
  }
}

void ShmGroup::barrier() {
  t_->begin(CollDesc{0, static_cast<int32_t>(CollKind::kBarrier), 0, 0, 0, 0, 0, 0});
  t_->barrier();
}

}  // namespace shardkit
