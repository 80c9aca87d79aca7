// The BPE training merge loop.
//
// The design all fast trainers share: unique words as symbol arrays with
// 64-bit counts; pair counts updated incrementally (delta x word count) as
// merges rewrite words; a max-heap of (count, pair) whose popped entries are
// re-checked against the live count (lazy refresh); and per pair the list of
// words that may contain it, so a merge touches only those words.
//
// Exactness: every pair created by merge k contains the new id 256 + k, so
// all of its occurrences appear during that one merge and its word list is
// complete; live counts only ever fall after that, so a popped entry whose
// count still matches is the true maximum. Ties go to the smaller
// (left, right), as in rustbpe.
#include <algorithm>
#include <queue>
#include <vector>

#include "cpu/bpe_hash.h"
#include "shardkit/bpe.h"

namespace shardkit {
namespace {

inline uint64_t pair_key(uint32_t a, uint32_t b) { return (uint64_t(a) << 32) | b; }

// Pair -> (live count, index of its word list). Entries are never removed:
// a pair whose count reached zero just stays at zero.
class PairTable {
 public:
  struct Value {
    int64_t count;
    int32_t words;  // index into word_lists, -1 when released
  };

  PairTable() { rehash(1 << 16); }

  // Returns the index of key's slot, inserting {0, new list} when absent.
  size_t find_or_insert(uint64_t key, std::vector<std::vector<uint32_t>>* word_lists, bool* inserted) {
    uint64_t pos = bpe::mix64(key) & mask_;
    for (;;) {
      if (keys_[pos] == kEmpty) break;
      if (keys_[pos] == key) {
        *inserted = false;
        return pos;
      }
      pos = (pos + 1) & mask_;
    }
    keys_[pos] = key;
    values_[pos] = {0, int32_t(word_lists->size())};
    word_lists->emplace_back();
    *inserted = true;
    if (++used_ * 2 > keys_.size()) {
      rehash(keys_.size() * 2);
      return find(key);
    }
    return pos;
  }

  size_t find(uint64_t key) const {
    uint64_t pos = bpe::mix64(key) & mask_;
    while (keys_[pos] != key) pos = (pos + 1) & mask_;
    return pos;
  }

  Value& at(size_t slot) { return values_[slot]; }
  uint64_t key_at(size_t slot) const { return keys_[slot]; }
  size_t capacity() const { return keys_.size(); }

 private:
  // No real pair is (UINT32_MAX, UINT32_MAX): ids stay far below that.
  static constexpr uint64_t kEmpty = ~uint64_t(0);

  void rehash(size_t capacity) {
    std::vector<uint64_t> old_keys(capacity, kEmpty);
    std::vector<Value> old_values(capacity);
    old_keys.swap(keys_);
    old_values.swap(values_);
    mask_ = capacity - 1;
    for (size_t i = 0; i < old_keys.size(); ++i) {
      if (old_keys[i] == kEmpty) continue;
      uint64_t pos = bpe::mix64(old_keys[i]) & mask_;
      while (keys_[pos] != kEmpty) pos = (pos + 1) & mask_;
      keys_[pos] = old_keys[i];
      values_[pos] = old_values[i];
    }
  }

  std::vector<uint64_t> keys_;
  std::vector<Value> values_;
  uint64_t mask_ = 0;
  size_t used_ = 0;
};

struct HeapEntry {
  int64_t count;
  uint64_t pair;
  // priority_queue pops the largest: higher count, then the smaller pair.
  bool operator<(const HeapEntry& o) const { return count != o.count ? count < o.count : pair > o.pair; }
};

class MergeLoop {
 public:
  explicit MergeLoop(const WordCounter& counter) {
    offsets_.reserve(size_t(counter.size()) + 1);
    counts_.reserve(size_t(counter.size()));
    counter.for_each([&](const uint8_t* bytes, int64_t size, int64_t count) {
      if (size < 2) return;  // a single byte has no pair and never changes
      offsets_.push_back(int64_t(symbols_.size()));
      lengths_.push_back(uint32_t(size));
      counts_.push_back(count);
      for (int64_t i = 0; i < size; ++i) symbols_.push_back(bytes[i]);
    });
    SHARDKIT_CHECK(counts_.size() < size_t(UINT32_MAX), "too many unique words: ", counts_.size());
    for (uint32_t w = 0; w < uint32_t(counts_.size()); ++w) {
      const uint32_t* s = symbols_.data() + offsets_[w];
      for (uint32_t i = 0; i + 1 < lengths_[w]; ++i) add(pair_key(s[i], s[i + 1]), counts_[w], w, nullptr);
    }
    for (size_t slot = 0; slot < pairs_.capacity(); ++slot) {
      // Only filled slots have a word list; empty ones hold no valid index.
      if (pairs_.key_at(slot) == ~uint64_t(0)) continue;
      if (pairs_.at(slot).count > 0) heap_.push({pairs_.at(slot).count, pairs_.key_at(slot)});
    }
  }

  std::vector<std::pair<uint32_t, uint32_t>> run(int64_t num_merges, int64_t min_frequency,
                                                  const BpeProgress& progress) {
    std::vector<std::pair<uint32_t, uint32_t>> merges;
    int64_t report_every = std::max<int64_t>(1, num_merges / 100);
    while (int64_t(merges.size()) < num_merges && !heap_.empty()) {
      HeapEntry top = heap_.top();
      heap_.pop();
      size_t slot = pairs_.find(top.pair);
      int64_t live = pairs_.at(slot).count;
      if (live <= 0) {
        release(slot);
        continue;
      }
      if (live != top.count) {
        heap_.push({live, top.pair});
        continue;
      }
      if (live < min_frequency) break;
      uint32_t a = uint32_t(top.pair >> 32), b = uint32_t(top.pair);
      uint32_t new_id = uint32_t(256 + merges.size());
      merges.emplace_back(a, b);
      std::vector<uint32_t> words;
      words.swap(word_lists_[size_t(pairs_.at(slot).words)]);
      created_.clear();
      for (uint32_t w : words) merge_word(w, a, b, new_id);
      for (uint64_t key : created_) {
        int64_t c = pairs_.at(pairs_.find(key)).count;
        if (c > 0) heap_.push({c, key});
      }
      if (progress && (int64_t(merges.size()) % report_every == 0 || int64_t(merges.size()) == num_merges)) {
        progress(int64_t(merges.size()), num_merges);
      }
    }
    return merges;
  }

 private:
  // Adds delta to the pair's count; a positive delta also lists word w.
  void add(uint64_t key, int64_t delta, uint32_t w, std::vector<uint64_t>* created) {
    bool inserted;
    size_t slot = pairs_.find_or_insert(key, &word_lists_, &inserted);
    if (inserted && created) created->push_back(key);
    PairTable::Value& v = pairs_.at(slot);
    v.count += delta;
    if (delta > 0 && v.words >= 0) {
      auto& list = word_lists_[size_t(v.words)];
      if (list.empty() || list.back() != w) list.push_back(w);
    }
  }

  void release(size_t slot) {
    int32_t words = pairs_.at(slot).words;
    if (words >= 0) std::vector<uint32_t>().swap(word_lists_[size_t(words)]);
  }

  // Replaces every non-overlapping (a, b) in word w, left to right, and
  // applies the pair-count deltas times the word's count.
  void merge_word(uint32_t w, uint32_t a, uint32_t b, uint32_t new_id) {
    uint32_t* s = symbols_.data() + offsets_[w];
    uint32_t n = lengths_[w];
    int64_t c = counts_[w];
    uint32_t out = 0;
    for (uint32_t i = 0; i < n;) {
      if (i + 1 < n && s[i] == a && s[i + 1] == b) {
        if (out > 0) {
          uint32_t x = s[out - 1];
          add(pair_key(x, a), -c, w, &created_);
          add(pair_key(x, new_id), c, w, &created_);
        }
        add(pair_key(a, b), -c, w, &created_);
        if (i + 2 < n) {
          uint32_t y = s[i + 2];
          add(pair_key(b, y), -c, w, &created_);
          add(pair_key(new_id, y), c, w, &created_);
        }
        s[out++] = new_id;
        i += 2;
      } else {
        s[out++] = s[i++];
      }
    }
    lengths_[w] = out;
  }

  std::vector<uint32_t> symbols_;
  std::vector<int64_t> offsets_;
  std::vector<uint32_t> lengths_;
  std::vector<int64_t> counts_;
  PairTable pairs_;
  std::vector<std::vector<uint32_t>> word_lists_;
  std::priority_queue<HeapEntry> heap_;
  std::vector<uint64_t> created_;
};

}  // namespace

std::vector<std::pair<uint32_t, uint32_t>> bpe_train(const WordCounter& counter, int64_t num_merges,
                                                     int64_t min_frequency, const BpeProgress& progress) {
  SHARDKIT_CHECK(num_merges >= 0, "num_merges: expected >= 0, got ", num_merges);
  SHARDKIT_CHECK(num_merges < (int64_t(1) << 31), "num_merges: expected < 2^31, got ", num_merges);
  MergeLoop loop(counter);
  return loop.run(num_merges, min_frequency, progress);
}

}  // namespace shardkit
