// Character classes and UTF-8 decoding for the native split patterns.
//
// The classes come from the Python `regex` module (bpe_unicode_tables.cpp is
// generated from it), so the splitters agree with `regex` character for
// character. An invalid UTF-8 byte decodes as one character of no class, as
// `regex` sees the lone surrogate bytes.decode(errors="surrogateescape") makes.
#pragma once

#include <cstdint>

namespace shardkit::bpe {

constexpr uint8_t kLetter = 1;      // \p{L}
constexpr uint8_t kNumber = 2;      // \p{N}
constexpr uint8_t kSpace = 4;       // \s
constexpr uint8_t kUpperish = 8;    // [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]  (o200k)
constexpr uint8_t kLowerish = 16;   // [\p{Ll}\p{Lm}\p{Lo}\p{M}]        (o200k)

extern const uint16_t kUnicodeStage1[];
extern const uint8_t kUnicodeStage2[];
extern const char kUnicodeTablesSource[];

// One decoded character: its code point (0xDC00 + byte for an invalid byte),
// its class bits and its length in bytes.
struct Char {
  uint32_t cp;
  uint8_t cls;
  uint8_t len;
};

inline uint8_t class_of(uint32_t cp) { return kUnicodeStage2[(uint32_t(kUnicodeStage1[cp >> 8]) << 8) | (cp & 0xFF)]; }

inline bool is_cont(uint8_t b) { return (b & 0xC0) == 0x80; }

// Strict UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF), the
// same rules as Python's decoder. `s` has `n` > 0 bytes left.
inline Char decode_char(const uint8_t* s, int64_t n) {
  uint8_t b0 = s[0];
  if (b0 < 0x80) return {b0, class_of(b0), 1};
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    if (n >= 2 && is_cont(s[1])) {
      uint32_t cp = (uint32_t(b0 & 0x1F) << 6) | (s[1] & 0x3F);
      return {cp, class_of(cp), 2};
    }
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (n >= 3 && is_cont(s[1]) && is_cont(s[2])) {
      bool ok = (b0 == 0xE0) ? s[1] >= 0xA0 : (b0 == 0xED) ? s[1] <= 0x9F : true;
      if (ok) {
        uint32_t cp = (uint32_t(b0 & 0x0F) << 12) | (uint32_t(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return {cp, class_of(cp), 3};
      }
    }
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (n >= 4 && is_cont(s[1]) && is_cont(s[2]) && is_cont(s[3])) {
      bool ok = (b0 == 0xF0) ? s[1] >= 0x90 : (b0 == 0xF4) ? s[1] <= 0x8F : true;
      if (ok) {
        uint32_t cp = (uint32_t(b0 & 0x07) << 18) | (uint32_t(s[1] & 0x3F) << 12) | (uint32_t(s[2] & 0x3F) << 6) |
                      (s[3] & 0x3F);
        return {cp, class_of(cp), 4};
      }
    }
  }
  return {0xDC00u + b0, 0, 1};
}

}  // namespace shardkit::bpe
