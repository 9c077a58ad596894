#include "runtime/error.h"

#include <algorithm>
#include <cstdint>

namespace spinel {
namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0.
size_t utf8_length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  size_t n;
  uint32_t cp;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) n = 2, cp = c & 0x1F;
  else if (c >= 0xE0 && c <= 0xEF) n = 3, cp = c & 0x0F;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, cp = c & 0x07;
  else return 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  // Overlong forms, surrogates and code points past U+10FFFF are invalid.
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
      (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  // C1 controls (U+0080..U+009F) act as terminal controls too.
  if (cp >= 0x80 && cp <= 0x9F) return 0;
  return n;
}

}  // namespace

std::string printable(std::string_view msg, size_t max_bytes) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(std::min(msg.size(), max_bytes) + 16);
  size_t i = 0;
  while (i < msg.size() && out.size() < max_bytes) {
    const unsigned char c = static_cast<unsigned char>(msg[i]);
    const size_t n = utf8_length(msg, i);
    if (n == 1 && (c >= 0x20 || c == '\n') && c != 0x7F) {
      out += static_cast<char>(c);
    } else if (n > 1) {
      out.append(msg.data() + i, n);
      i += n;
      continue;
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
    ++i;
  }
  if (i < msg.size()) out += " ... (" + std::to_string(msg.size() - i) + " more bytes)";
  return out;
}

}  // namespace spinel
