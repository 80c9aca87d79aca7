// Native API of the byte-level BPE tokenizer: pre-tokenization (split
// patterns), word counting, the training merge loop and the encoder.
//
// Ids: 0-255 are raw bytes, merge k is id 256 + k. Ties in training are
// broken as rustbpe does (higher count, then smaller (left, right)), so the
// merges of both can be compared exactly.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "shardkit/common.h"

namespace shardkit {

// Named split patterns with a native splitter. Each agrees byte for byte with
// the Python `regex` module on the pattern text in python/shardkit/tokenizer/
// patterns.py; invalid UTF-8 bytes count as one character each, of no class
// (as `regex` sees the surrogates of bytes.decode(errors="surrogateescape")).
enum class SplitPattern : int32_t { kGpt4 = 0, kGpt2 = 1, kO200k = 2 };

// Appends the end offset of every chunk of data[0, size) to `ends`.
void bpe_split(SplitPattern pattern, const uint8_t* data, int64_t size, std::vector<int64_t>* ends);

// Unique chunks (byte strings) with 64-bit counts. Keys live in an arena the
// counter owns, so the text they came from may be freed.
class WordCounter {
 public:
  WordCounter();
  ~WordCounter();
  WordCounter(WordCounter&&) noexcept;
  WordCounter& operator=(WordCounter&&) noexcept;

  void add(const uint8_t* bytes, int64_t size, int64_t count);
  void merge_from(const WordCounter& other);
  int64_t size() const;
  // Calls fn(bytes, size, count) for every unique chunk, in insertion order.
  void for_each(const std::function<void(const uint8_t*, int64_t, int64_t)>& fn) const;
  // Total chunks and total bytes added (with multiplicity).
  int64_t total_chunks() const;
  int64_t total_bytes() const;
  // Held by whoever uses the counter; the bindings try_lock it so that two
  // Python threads sharing one counter get an error instead of a data race.
  std::mutex& busy() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Splits each document data[offsets[i], offsets[i + 1]) with `pattern` and
// counts its chunks into `counter`, on `num_threads` threads.
void bpe_count_documents(SplitPattern pattern, const uint8_t* data, const int64_t* offsets, int64_t num_docs,
                         int num_threads, WordCounter* counter);

// Memory-maps `path` and counts its chunks as one document, split among
// threads at boundaries where the pattern is known to start a new chunk.
// Returns the file size.
int64_t bpe_count_file(SplitPattern pattern, const std::string& path, int num_threads, WordCounter* counter);

// Called every so often from the merge loop with (merges done, merges wanted).
using BpeProgress = std::function<void(int64_t, int64_t)>;

// The merge loop: at most `num_merges` merges over the counted words,
// stopping early when no pair occurs `min_frequency` times or at all.
// Returns the merged pairs in order (merge k made id 256 + k).
std::vector<std::pair<uint32_t, uint32_t>> bpe_train(const WordCounter& counter, int64_t num_merges,
                                                     int64_t min_frequency, const BpeProgress& progress);

// Encoder over a rank table: token id = rank, tokens[id] its bytes. Encodes
// like tiktoken: a whole-chunk lookup, else byte-pair merging by the rank of
// the concatenated bytes (lowest first, leftmost on ties).
class BpeEncoder {
 public:
  // `specials` (id, bytes) are decoded but never produced by encode: the
  // Python side splits the text at allowed special tokens first.
  BpeEncoder(SplitPattern pattern, const std::vector<std::string>& tokens,
             const std::vector<std::pair<int64_t, std::string>>& specials);
  ~BpeEncoder();

  // Splits with the encoder's pattern, then encodes each chunk.
  void encode(const uint8_t* data, int64_t size, std::vector<uint32_t>* out) const;
  // Encodes pre-split chunks data[offsets[i], offsets[i + 1]) (custom patterns).
  void encode_chunks(const uint8_t* data, const int64_t* offsets, int64_t num_chunks,
                     std::vector<uint32_t>* out) const;
  // Concatenates the bytes of `ids`; an id outside the table is an error.
  void decode(const int64_t* ids, int64_t count, std::string* out) const;
  int64_t vocab_size() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace shardkit
