// The BPE encoder and decoder over a rank table (token id = rank).
//
// Encoding follows tiktoken, so exported tokenizers give identical ids: each
// chunk is first looked up whole; otherwise its bytes are merged pairwise,
// always the adjacent pair whose concatenation has the lowest rank (leftmost
// on ties). Short chunks use a linear scan; long ones (a run of Han text, or
// "a" * 100000) a heap over a linked list, so they stay O(n log n).
#include <algorithm>
#include <cstring>
#include <limits>
#include <queue>
#include <string>
#include <vector>

#include "cpu/bpe_hash.h"
#include "cpu/bpe_split.h"
#include "shardkit/bpe.h"

namespace shardkit {
namespace {

constexpr uint32_t kNoRank = std::numeric_limits<uint32_t>::max();
// Chunks at least this long use the heap merge (tiktoken uses 100 as well).
constexpr int64_t kHeapThreshold = 100;

}  // namespace

struct BpeEncoder::Impl {
  SplitPattern pattern;
  std::vector<std::string> tokens;  // id -> bytes (the mergeable ranks)
  // Special tokens, sorted by id. Not a dense table after `tokens`: their ids
  // may be anywhere up to 2^32 - 2, and a table that long (one string per id)
  // would take over 100 GiB for a single special token with a high id.
  std::vector<std::pair<int64_t, std::string>> specials;
  int64_t vocab_size = 0;  // the highest id + 1
  std::vector<uint32_t> slots;  // open addressing over token ids
  uint64_t mask = 0;

  uint32_t rank(const uint8_t* p, int64_t n) const {
    uint64_t pos = bpe::hash_bytes(p, n) & mask;
    for (;;) {
      uint32_t id = slots[pos];
      if (id == kNoRank) return kNoRank;
      const std::string& t = tokens[id];
      if (int64_t(t.size()) == n && std::memcmp(t.data(), p, size_t(n)) == 0) return id;
      pos = (pos + 1) & mask;
    }
  }

  // tiktoken's linear byte-pair merge; fills out with the token ids.
  void merge_linear(const uint8_t* s, int64_t n, std::vector<uint32_t>* out) const {
    struct Part {
      int64_t start;
      uint32_t rank;
    };
    std::vector<Part> parts;
    parts.reserve(size_t(n) + 1);
    for (int64_t i = 0; i < n; ++i) parts.push_back({i, i + 1 < n ? rank(s + i, 2) : kNoRank});
    parts.push_back({n, kNoRank});
    // Rank of the bytes that parts[i] and parts[i + 1] would become together
    // once parts[i + 1] is merged with parts[i + 2].
    auto rank_after = [&](size_t i) -> uint32_t {
      if (i + 3 >= parts.size()) return kNoRank;
      return rank(s + parts[i].start, parts[i + 3].start - parts[i].start);
    };
    while (parts.size() > 1) {
      uint32_t best = kNoRank;
      size_t at = 0;
      for (size_t i = 0; i + 1 < parts.size(); ++i) {
        if (parts[i].rank < best) best = parts[i].rank, at = i;
      }
      if (best == kNoRank) break;
      parts[at].rank = rank_after(at);
      if (at > 0) parts[at - 1].rank = rank_after(at - 1);
      parts.erase(parts.begin() + int64_t(at) + 1);
    }
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      out->push_back(rank(s + parts[i].start, parts[i + 1].start - parts[i].start));
    }
  }

  // The same merge order with a heap and a linked list of parts.
  void merge_heap(const uint8_t* s, int64_t n, std::vector<uint32_t>* out) const {
    std::vector<int64_t> next(size_t(n) + 1), prev(size_t(n) + 1);
    std::vector<uint32_t> pair_rank(size_t(n) + 1, kNoRank);
    for (int64_t i = 0; i <= n; ++i) next[size_t(i)] = i + 1, prev[size_t(i)] = i - 1;
    using Entry = std::pair<uint32_t, int64_t>;  // (rank, start): lowest, then leftmost
    std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
    auto refresh = [&](int64_t i) {
      int64_t j = next[size_t(i)];
      uint32_t r = (j < n) ? rank(s + i, next[size_t(j)] - i) : kNoRank;
      pair_rank[size_t(i)] = r;
      if (r != kNoRank) heap.push({r, i});
    };
    for (int64_t i = 0; i < n; ++i) refresh(i);
    std::vector<uint8_t> alive(size_t(n) + 1, 1);
    while (!heap.empty()) {
      auto [r, i] = heap.top();
      heap.pop();
      if (!alive[size_t(i)] || pair_rank[size_t(i)] != r) continue;
      int64_t j = next[size_t(i)];  // the part merged into i
      alive[size_t(j)] = 0;
      next[size_t(i)] = next[size_t(j)];
      prev[size_t(next[size_t(j)])] = i;
      refresh(i);
      if (prev[size_t(i)] >= 0) refresh(prev[size_t(i)]);
    }
    for (int64_t i = 0; i < n; i = next[size_t(i)]) out->push_back(rank(s + i, next[size_t(i)] - i));
  }

  void encode_chunk(const uint8_t* s, int64_t n, std::vector<uint32_t>* out) const {
    uint32_t whole = rank(s, n);
    if (whole != kNoRank) {
      out->push_back(whole);
    } else if (n < kHeapThreshold) {
      merge_linear(s, n, out);
    } else {
      merge_heap(s, n, out);
    }
  }
};

BpeEncoder::BpeEncoder(SplitPattern pattern, const std::vector<std::string>& tokens,
                       const std::vector<std::pair<int64_t, std::string>>& specials)
    : impl_(new Impl()) {
  bpe::check_pattern(static_cast<int32_t>(pattern));
  SHARDKIT_CHECK(tokens.size() >= 1 && tokens.size() < size_t(kNoRank), "tokens: expected 1 to 2^32-2 entries, got ",
                 tokens.size());
  Impl& m = *impl_;
  m.pattern = pattern;
  m.tokens = tokens;
  size_t capacity = 16;
  while (capacity < tokens.size() * 2) capacity *= 2;
  m.slots.assign(capacity, kNoRank);
  m.mask = capacity - 1;
  // Every single byte must have a rank, or some input could not be encoded.
  std::vector<uint8_t> has_byte(256, 0);
  for (uint32_t id = 0; id < uint32_t(tokens.size()); ++id) {
    const std::string& t = tokens[id];
    SHARDKIT_CHECK(!t.empty(), "tokens[", id, "]: empty token");
    const uint8_t* p = reinterpret_cast<const uint8_t*>(t.data());
    // Two merges can in principle spell the same bytes; the lower id (the
    // one tiktoken's rank order reaches first) is the one encoding produces.
    if (m.rank(p, int64_t(t.size())) != kNoRank) continue;
    uint64_t pos = bpe::hash_bytes(p, int64_t(t.size())) & m.mask;
    while (m.slots[pos] != kNoRank) pos = (pos + 1) & m.mask;
    m.slots[pos] = id;
    if (t.size() == 1) has_byte[uint8_t(t[0])] = 1;
  }
  for (int b = 0; b < 256; ++b) SHARDKIT_CHECK(has_byte[size_t(b)], "tokens: no token for the single byte ", b);
  m.specials = specials;
  std::sort(m.specials.begin(), m.specials.end());
  m.vocab_size = int64_t(tokens.size());
  for (size_t k = 0; k < m.specials.size(); ++k) {
    int64_t id = m.specials[k].first;
    SHARDKIT_CHECK(id >= int64_t(tokens.size()) && id < int64_t(kNoRank), "special token id ", id,
                   ": expected an id from ", tokens.size(), " (after the mergeable tokens) to ", kNoRank - 1);
    SHARDKIT_CHECK(k == 0 || m.specials[k - 1].first != id, "special token id ", id, " given twice");
    m.vocab_size = std::max(m.vocab_size, id + 1);
  }
}

BpeEncoder::~BpeEncoder() = default;

void BpeEncoder::encode(const uint8_t* data, int64_t size, std::vector<uint32_t>* out) const {
  SHARDKIT_CHECK(size >= 0 && (data != nullptr || size == 0), "data: null pointer or negative size ", size);
  bpe::for_each_chunk(impl_->pattern, data, size,
                      [&](int64_t b, int64_t e) { impl_->encode_chunk(data + b, e - b, out); });
}

void BpeEncoder::encode_chunks(const uint8_t* data, const int64_t* offsets, int64_t num_chunks,
                               std::vector<uint32_t>* out) const {
  for (int64_t c = 0; c < num_chunks; ++c) {
    SHARDKIT_CHECK(offsets[c] >= 0 && offsets[c] <= offsets[c + 1], "offsets: expected non-decreasing, at ", c);
    if (offsets[c + 1] > offsets[c]) impl_->encode_chunk(data + offsets[c], offsets[c + 1] - offsets[c], out);
  }
}

void BpeEncoder::decode(const int64_t* ids, int64_t count, std::string* out) const {
  const Impl& m = *impl_;
  const int64_t num_tokens = int64_t(m.tokens.size());
  for (int64_t i = 0; i < count; ++i) {
    int64_t id = ids[i];
    if (id >= 0 && id < num_tokens) {
      out->append(m.tokens[size_t(id)]);
      continue;
    }
    auto it = std::lower_bound(m.specials.begin(), m.specials.end(), id,
                               [](const std::pair<int64_t, std::string>& s, int64_t v) { return s.first < v; });
    SHARDKIT_CHECK(it != m.specials.end() && it->first == id, "ids[", i, "]: unknown token id ", id);
    out->append(it->second);
  }
}

int64_t BpeEncoder::vocab_size() const { return impl_->vocab_size; }

}  // namespace shardkit
