// Pre-tokenization entry points (the matchers live in bpe_split.h).
#include "cpu/bpe_split.h"

#include <cstring>

namespace shardkit {
namespace bpe {

int64_t next_safe_boundary(const uint8_t* s, int64_t n, int64_t from) {
  // q: where to look for the next '\n'; a boundary is the position after it.
  int64_t q = from < 1 ? 0 : from - 1;
  while (q < n) {
    const void* hit = std::memchr(s + q, '\n', size_t(n - q));
    if (!hit) return n;
    int64_t p = static_cast<const uint8_t*>(hit) - s + 1;
    if (p < n && (at(s, n, p).cls & (kLetter | kNumber))) return p;
    q = p;
  }
  return n;
}

void check_pattern(int32_t pattern) {
  SHARDKIT_CHECK(pattern >= 0 && pattern <= 2, "pattern: expected 0 (gpt4), 1 (gpt2) or 2 (o200k), got ", pattern);
}

}  // namespace bpe

void bpe_split(SplitPattern pattern, const uint8_t* data, int64_t size, std::vector<int64_t>* ends) {
  bpe::check_pattern(static_cast<int32_t>(pattern));
  SHARDKIT_CHECK(size >= 0 && (data != nullptr || size == 0), "data: null pointer or negative size ", size);
  bpe::for_each_chunk(pattern, data, size, [&](int64_t, int64_t e) { ends->push_back(e); });
}

}  // namespace shardkit
