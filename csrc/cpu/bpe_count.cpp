// Word counting for BPE training: unique chunks with 64-bit counts, filled
// by the splitters on several threads (one counter each, merged at the end).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "cpu/bpe_hash.h"
#include "cpu/bpe_split.h"
#include "shardkit/bpe.h"
#include "shardkit/parallel.h"

namespace shardkit {

struct WordCounter::Impl {
  struct Entry {
    uint64_t hash;
    int64_t offset;  // into arena
    int64_t size;
    int64_t count;
  };
  std::vector<uint8_t> arena;
  std::vector<Entry> entries;   // insertion order
  std::vector<int32_t> slots;   // index into entries, -1 when empty
  uint64_t mask = 0;
  int64_t total_chunks = 0;
  int64_t total_bytes = 0;
  mutable std::mutex busy;

  Impl() { rehash(1024); }

  void rehash(size_t capacity) {
    slots.assign(capacity, -1);
    mask = capacity - 1;
    for (size_t e = 0; e < entries.size(); ++e) {
      uint64_t pos = entries[e].hash & mask;
      while (slots[pos] >= 0) pos = (pos + 1) & mask;
      slots[pos] = int32_t(e);
    }
  }

  void add(const uint8_t* p, int64_t n, uint64_t h, int64_t count) {
    uint64_t pos = h & mask;
    for (;;) {
      int32_t e = slots[pos];
      if (e < 0) break;
      const Entry& entry = entries[size_t(e)];
      if (entry.hash == h && entry.size == n && std::memcmp(arena.data() + entry.offset, p, size_t(n)) == 0) {
        entries[size_t(e)].count += count;
        return;
      }
      pos = (pos + 1) & mask;
    }
    SHARDKIT_CHECK(entries.size() < size_t(INT32_MAX), "word counter: more than 2^31 unique chunks");
    slots[pos] = int32_t(entries.size());
    entries.push_back({h, int64_t(arena.size()), n, count});
    arena.insert(arena.end(), p, p + n);
    if (entries.size() * 2 > slots.size()) rehash(slots.size() * 2);
  }
};

WordCounter::WordCounter() : impl_(new Impl()) {}
WordCounter::~WordCounter() = default;
WordCounter::WordCounter(WordCounter&&) noexcept = default;
WordCounter& WordCounter::operator=(WordCounter&&) noexcept = default;

void WordCounter::add(const uint8_t* bytes, int64_t size, int64_t count) {
  // The merge loop relies on positive counts: a pair's count only falls.
  SHARDKIT_CHECK(count >= 1, "count: expected >= 1, got ", count);
  impl_->add(bytes, size, bpe::hash_bytes(bytes, size), count);
  impl_->total_chunks += count;
  impl_->total_bytes += size * count;
}

void WordCounter::merge_from(const WordCounter& other) {
  const Impl& o = *other.impl_;
  for (const auto& e : o.entries) impl_->add(o.arena.data() + e.offset, e.size, e.hash, e.count);
  impl_->total_chunks += o.total_chunks;
  impl_->total_bytes += o.total_bytes;
}

int64_t WordCounter::size() const { return int64_t(impl_->entries.size()); }
int64_t WordCounter::total_chunks() const { return impl_->total_chunks; }
int64_t WordCounter::total_bytes() const { return impl_->total_bytes; }
std::mutex& WordCounter::busy() const { return impl_->busy; }

void WordCounter::for_each(const std::function<void(const uint8_t*, int64_t, int64_t)>& fn) const {
  for (const auto& e : impl_->entries) fn(impl_->arena.data() + e.offset, e.size, e.count);
}

namespace {

// Splits s[begin, end) and counts its chunks into `counter`.
void count_range(SplitPattern pattern, const uint8_t* s, int64_t begin, int64_t end, WordCounter* counter) {
  bpe::for_each_chunk(pattern, s + begin, end - begin,
                      [&](int64_t b, int64_t e) { counter->add(s + begin + b, e - b, 1); });
}

// Runs `body(thread, local counter)` on `num_threads` threads and folds the
// per-thread counters into `counter` in thread order (deterministic order).
template <typename Body>
void count_parallel(int num_threads, WordCounter* counter, Body&& body) {
  if (num_threads <= 1) {
    body(0, counter);
    return;
  }
  std::vector<WordCounter> locals(static_cast<size_t>(num_threads));
  parallel_run(num_threads, [&](int t, int) { body(t, &locals[size_t(t)]); });
  for (const auto& local : locals) counter->merge_from(local);
}

}  // namespace

void bpe_count_documents(SplitPattern pattern, const uint8_t* data, const int64_t* offsets, int64_t num_docs,
                         int num_threads, WordCounter* counter) {
  bpe::check_pattern(static_cast<int32_t>(pattern));
  SHARDKIT_CHECK(num_docs >= 0, "num_docs: expected >= 0, got ", num_docs);
  for (int64_t d = 0; d < num_docs; ++d) {
    SHARDKIT_CHECK(offsets[d] >= 0 && offsets[d] <= offsets[d + 1], "offsets: expected non-decreasing, from 0, at ",
                   d);
  }
  int64_t total = num_docs ? offsets[num_docs] : 0;
  if (num_threads < 1) num_threads = 1;
  // Too little text to be worth waking threads for.
  if (total < (int64_t(1) << 20)) num_threads = 1;
  count_parallel(num_threads, counter, [&](int t, WordCounter* local) {
    // Documents go to threads by byte volume, each whole to one thread.
    int64_t lo = total * t / num_threads, hi = total * (t + 1) / num_threads;
    for (int64_t d = 0; d < num_docs; ++d) {
      int64_t mid = offsets[d] + (offsets[d + 1] - offsets[d]) / 2;
      bool mine = (mid >= lo && mid < hi) || (t == num_threads - 1 && mid >= hi);
      if (offsets[d + 1] == offsets[d] || !mine) continue;
      count_range(pattern, data, offsets[d], offsets[d + 1], local);
    }
  });
}

namespace {

// A read-only memory map that unmaps itself.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    SHARDKIT_CHECK(fd >= 0, "cannot open '", path, "': ", std::strerror(errno));
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      SHARDKIT_CHECK(false, "'", path, "' is not a regular file");
    }
    size_ = st.st_size;
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_t(size_), PROT_READ, MAP_PRIVATE, fd, 0);
      int err = errno;
      ::close(fd);
      SHARDKIT_CHECK(p != MAP_FAILED, "cannot memory-map '", path, "': ", std::strerror(err));
      data_ = static_cast<const uint8_t*>(p);
      ::madvise(p, size_t(size_), MADV_SEQUENTIAL);
    } else {
      ::close(fd);
    }
  }
  ~MappedFile() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_t(size_));
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  int64_t size() const { return size_; }

 private:
  const uint8_t* data_ = nullptr;
  int64_t size_ = 0;
};

}  // namespace

int64_t bpe_count_file(SplitPattern pattern, const std::string& path, int num_threads, WordCounter* counter) {
  bpe::check_pattern(static_cast<int32_t>(pattern));
  MappedFile file(path);
  const uint8_t* s = file.data();
  int64_t n = file.size();
  if (num_threads < 1) num_threads = 1;
  if (n < (int64_t(1) << 20)) num_threads = 1;
  // Cut points at safe boundaries, so the chunks are those of the whole file.
  std::vector<int64_t> cuts(size_t(num_threads) + 1, n);
  cuts[0] = 0;
  for (int t = 1; t < num_threads; ++t) {
    int64_t want = n * t / num_threads;
    int64_t from = want > cuts[size_t(t) - 1] ? want : cuts[size_t(t) - 1];
    cuts[size_t(t)] = bpe::next_safe_boundary(s, n, from);
  }
  count_parallel(num_threads, counter, [&](int t, WordCounter* local) {
    count_range(pattern, s, cuts[size_t(t)], cuts[size_t(t) + 1], local);
  });
  return n;
}

}  // namespace shardkit
