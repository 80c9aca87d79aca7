// Small open-addressing hash helpers shared by the BPE counter, trainer and
// encoder. std::unordered_map allocates a node per entry, which dominates
// the time of counting tens of millions of chunks.
#pragma once

#include <cstdint>
#include <cstring>

namespace shardkit::bpe {

inline uint64_t mix64(uint64_t x) {
  x ^= x >> 32;
  x *= 0xd6e8feb86659fd93ULL;
  x ^= x >> 32;
  x *= 0xd6e8feb86659fd93ULL;
  x ^= x >> 32;
  return x;
}

// Hash of a byte string, 8 bytes at a time.
inline uint64_t hash_bytes(const uint8_t* p, int64_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ uint64_t(n);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 29;
    p += 8;
    n -= 8;
  }
  uint64_t w = 0;
  std::memcpy(&w, p, size_t(n));
  h = (h ^ w) * 0x94d049bb133111ebULL;
  return mix64(h);
}

}  // namespace shardkit::bpe
