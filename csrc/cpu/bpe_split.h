// Hand-written matchers for the named split patterns. Each returns where the
// regex's leftmost match starting at `i` ends, following the pattern's
// alternation order and backtracking rules exactly (see the pattern texts in
// python/shardkit/tokenizer/patterns.py); tests compare them byte for byte
// with the Python `regex` module.
#pragma once

#include <cstdint>

#include "cpu/bpe_unicode.h"
#include "shardkit/bpe.h"

namespace shardkit::bpe {

inline Char at(const uint8_t* s, int64_t n, int64_t i) { return decode_char(s + i, n - i); }

inline bool is_crlf(uint32_t cp) { return cp == '\r' || cp == '\n'; }

// End of the maximal run from i of characters having any of `cls` bits.
inline int64_t run_of(const uint8_t* s, int64_t n, int64_t i, uint8_t cls) {
  while (i < n) {
    if (s[i] < 0x80) {
      if (!(class_of(s[i]) & cls)) break;
      ++i;
      continue;
    }
    Char c = at(s, n, i);
    if (!(c.cls & cls)) break;
    i += c.len;
  }
  return i;
}

// End of the maximal run from i of characters having none of `cls` bits.
inline int64_t run_without(const uint8_t* s, int64_t n, int64_t i, uint8_t cls) {
  while (i < n) {
    Char c = at(s, n, i);
    if (c.cls & cls) break;
    i += c.len;
  }
  return i;
}

// The whitespace alternatives at a \s char: with `newline_first`,
// \s*[\r\n] (the run up to its last newline; GPT-4 and o200k), then
// \s+(?!\S) (the run less its last character when a non-space follows),
// then \s+ (one character).
inline int64_t match_space(const uint8_t* s, int64_t n, int64_t i, bool newline_first) {
  int64_t k = i, last_start = i, newline_end = -1;
  while (k < n) {
    Char c = at(s, n, k);
    if (!(c.cls & kSpace)) break;
    last_start = k;
    k += c.len;
    if (is_crlf(c.cp)) newline_end = k;
  }
  if (newline_first && newline_end >= 0) return newline_end;
  if (k == n || last_start == i) return k;
  return last_start;
}

// Case-insensitive single letters of the contractions, as `regex` folds them
// (U+017F LATIN SMALL LETTER LONG S folds to 's').
inline bool fold_is(uint32_t cp, char lower) {
  if (cp < 0x80) return (cp | 0x20) == uint32_t(lower) && ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z'));
  return lower == 's' && cp == 0x17F;
}

// GPT-4 (cl100k):
// '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+
inline int64_t match_gpt4(const uint8_t* s, int64_t n, int64_t i) {
  Char c0 = at(s, n, i);
  if (c0.cp == '\'' && i + 1 < n) {
    Char c1 = at(s, n, i + 1);
    if (fold_is(c1.cp, 's') || fold_is(c1.cp, 'd') || fold_is(c1.cp, 'm') || fold_is(c1.cp, 't')) {
      return i + 1 + c1.len;
    }
    int64_t j = i + 1 + c1.len;
    if (j < n) {
      Char c2 = at(s, n, j);
      if ((fold_is(c1.cp, 'l') && fold_is(c2.cp, 'l')) || (fold_is(c1.cp, 'v') && fold_is(c2.cp, 'e')) ||
          (fold_is(c1.cp, 'r') && fold_is(c2.cp, 'e'))) {
        return j + c2.len;
      }
    }
  }
  // [^\r\n\p{L}\p{N}]?+\p{L}+ : the possessive prefix never gives back.
  int64_t j = i;
  if (!(c0.cls & (kLetter | kNumber)) && !is_crlf(c0.cp)) j += c0.len;
  if (j < n && (at(s, n, j).cls & kLetter)) return run_of(s, n, j, kLetter);
  if (c0.cls & kNumber) {
    int64_t k = i;
    for (int d = 0; d < 3 && k < n; ++d) {
      Char c = at(s, n, k);
      if (!(c.cls & kNumber)) break;
      k += c.len;
    }
    return k;
  }
  j = i + (c0.cp == ' ' ? 1 : 0);
  int64_t k = run_without(s, n, j, kSpace | kLetter | kNumber);
  if (k > j) {
    while (k < n && (s[k] == '\r' || s[k] == '\n')) ++k;
    return k;
  }
  return match_space(s, n, i, true);
}

// GPT-2: '(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
inline int64_t match_gpt2(const uint8_t* s, int64_t n, int64_t i) {
  if (s[i] == '\'' && i + 1 < n) {
    uint8_t a = s[i + 1];
    if (a == 's' || a == 'd' || a == 'm' || a == 't') return i + 2;
    if (i + 2 < n) {
      uint8_t b = s[i + 2];
      if ((a == 'l' && b == 'l') || (a == 'v' && b == 'e') || (a == 'r' && b == 'e')) return i + 3;
    }
  }
  int64_t j = i + (s[i] == ' ' ? 1 : 0);
  if (j < n) {
    Char c = at(s, n, j);
    if (c.cls & kLetter) return run_of(s, n, j, kLetter);
    if (c.cls & kNumber) return run_of(s, n, j, kNumber);
    if (!(c.cls & kSpace)) return run_without(s, n, j, kSpace | kLetter | kNumber);
  }
  return match_space(s, n, i, false);
}

// The optional o200k contraction suffix (?i:'s|'t|'re|'ve|'m|'ll|'d) at e.
inline int64_t o200k_contraction(const uint8_t* s, int64_t n, int64_t e) {
  if (e + 1 >= n || s[e] != '\'') return e;
  Char c1 = at(s, n, e + 1);
  // No two alternatives start with the same letter, so their order is moot.
  if (fold_is(c1.cp, 's') || fold_is(c1.cp, 't') || fold_is(c1.cp, 'm') || fold_is(c1.cp, 'd')) {
    return e + 1 + c1.len;
  }
  int64_t j = e + 1 + c1.len;
  if (j < n) {
    Char c2 = at(s, n, j);
    if ((fold_is(c1.cp, 'r') && fold_is(c2.cp, 'e')) || (fold_is(c1.cp, 'v') && fold_is(c2.cp, 'e')) ||
        (fold_is(c1.cp, 'l') && fold_is(c2.cp, 'l'))) {
      return j + c2.len;
    }
  }
  return e;
}

// [U]*[W]+ at j, with U = [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] and
// W = [\p{Ll}\p{Lm}\p{Lo}\p{M}]; -1 when it cannot match. U* backtracks to
// the last W inside its run when no W follows the run.
inline int64_t o200k_lower_word(const uint8_t* s, int64_t n, int64_t j) {
  int64_t k = j, last_w = -1, last_w_end = -1;
  while (k < n) {
    Char c = at(s, n, k);
    if (!(c.cls & kUpperish)) break;
    if (c.cls & kLowerish) last_w = k, last_w_end = k + c.len;
    k += c.len;
  }
  if (k < n && (at(s, n, k).cls & kLowerish)) return run_of(s, n, k, kLowerish);
  if (last_w >= 0) return last_w_end;
  return -1;
}

// [U]+[W]* at j; -1 when it cannot match.
inline int64_t o200k_upper_word(const uint8_t* s, int64_t n, int64_t j) {
  int64_t k = run_of(s, n, j, kUpperish);
  if (k == j) return -1;
  return run_of(s, n, k, kLowerish);
}

// o200k:
// [^\r\n\p{L}\p{N}]?[U]*[W]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[U]+[W]*(?i:...)?
// |\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
inline int64_t match_o200k(const uint8_t* s, int64_t n, int64_t i) {
  Char c0 = at(s, n, i);
  bool prefix = !(c0.cls & (kLetter | kNumber)) && !is_crlf(c0.cp);
  for (int alt = 0; alt < 2; ++alt) {
    for (int with_prefix = prefix ? 1 : 0; with_prefix >= 0; --with_prefix) {
      int64_t j = i + (with_prefix ? c0.len : 0);
      if (j >= n) continue;
      int64_t e = alt == 0 ? o200k_lower_word(s, n, j) : o200k_upper_word(s, n, j);
      if (e >= 0) return o200k_contraction(s, n, e);
    }
  }
  if (c0.cls & kNumber) {
    int64_t k = i;
    for (int d = 0; d < 3 && k < n; ++d) {
      Char c = at(s, n, k);
      if (!(c.cls & kNumber)) break;
      k += c.len;
    }
    return k;
  }
  int64_t j = i + (c0.cp == ' ' ? 1 : 0);
  int64_t k = run_without(s, n, j, kSpace | kLetter | kNumber);
  if (k > j) {
    while (k < n && (s[k] == '\r' || s[k] == '\n' || s[k] == '/')) ++k;
    return k;
  }
  return match_space(s, n, i, true);
}

// Calls fn(begin, end) for every chunk of s[0, n).
template <typename Fn>
inline void for_each_chunk(SplitPattern pattern, const uint8_t* s, int64_t n, Fn&& fn) {
  int64_t i = 0;
  switch (pattern) {
    case SplitPattern::kGpt4:
      while (i < n) { int64_t e = match_gpt4(s, n, i); fn(i, e); i = e; }
      break;
    case SplitPattern::kGpt2:
      while (i < n) { int64_t e = match_gpt2(s, n, i); fn(i, e); i = e; }
      break;
    case SplitPattern::kO200k:
      while (i < n) { int64_t e = match_o200k(s, n, i); fn(i, e); i = e; }
      break;
  }
}

// A position p where every named pattern starts a new chunk whatever came
// before: right after '\n' and at a letter or digit (no alternative lets a
// match run from a newline into a letter or digit). The first such p >= from,
// or n when there is none.
int64_t next_safe_boundary(const uint8_t* s, int64_t n, int64_t from);

void check_pattern(int32_t pattern);

}  // namespace shardkit::bpe
