// Text helpers shared by the tokenizers (see text.h).
#include "runtime/tokenizer/text.h"

#include <algorithm>

#include "runtime/tokenizer/unicode_tables.h"

namespace spinel::text {
namespace {

unicode::CharClass char_class(char32_t c) {
  const auto* begin = unicode::kClassRanges;
  const auto* end = begin + unicode::kClassRangeCount;
  const auto* it = std::lower_bound(
      begin, end, c, [](const unicode::ClassRange& r, char32_t v) { return r.hi < v; });
  if (it != end && it->lo <= c) return static_cast<unicode::CharClass>(it->cls);
  return unicode::kLetter;
}

}  // namespace

std::u32string decode_utf8(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<uint8_t>(s[i]);
    if (b0 < 0x80) {
      out += b0;
      ++i;
      continue;
    }
    size_t n = 0;
    char32_t cp = 0, min = 0;
    if ((b0 & 0xE0) == 0xC0) {
      n = 2, cp = b0 & 0x1F, min = 0x80;
    } else if ((b0 & 0xF0) == 0xE0) {
      n = 3, cp = b0 & 0x0F, min = 0x800;
    } else if ((b0 & 0xF8) == 0xF0) {
      n = 4, cp = b0 & 0x07, min = 0x10000;
    }
    bool ok = n != 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; ++k) {
      const auto b = static_cast<uint8_t>(s[i + k]);
      ok = (b & 0xC0) == 0x80;
      cp = (cp << 6) | (b & 0x3F);
    }
    if (ok && cp >= min && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF)) {
      out += cp;
      i += n;
    } else {
      out += U'\uFFFD';
      ++i;
    }
  }
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string encode_utf8(const std::u32string& s) {
  std::string out;
  out.reserve(s.size());
  for (const char32_t c : s) append_utf8(out, c);
  return out;
}

// Rust's char::is_whitespace (the Unicode White_Space property), which HF
// uses both to clean text and to split words.
bool is_whitespace(char32_t c) {
  if (c <= 0x7F) return c == ' ' || (c >= 0x09 && c <= 0x0D);
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Rust's char::to_lowercase, one character at a time (so no final sigma).
void append_lower(std::u32string& out, char32_t c) {
  if (c < 0x80) {
    out += (c >= 'A' && c <= 'Z') ? c + 32 : c;
    return;
  }
  for (size_t k = 0; k < unicode::kLowerMultiCount; ++k) {
    if (unicode::kLowerMulti[k].cp == c) {
      for (const uint32_t o : unicode::kLowerMulti[k].out) {
        if (o) out += static_cast<char32_t>(o);
      }
      return;
    }
  }
  const auto* begin = unicode::kLowerRuns;
  const auto* end = begin + unicode::kLowerRunCount;
  const auto* it = std::lower_bound(
      begin, end, c, [](const unicode::LowerRun& r, char32_t v) { return r.hi < v; });
  if (it != end && it->lo <= c && (c - it->lo) % it->stride == 0) {
    out += static_cast<char32_t>(static_cast<int64_t>(c) + it->delta);
  } else {
    out += c;
  }
}

// For single_word added tokens. HF checks for alphanumerics; this treats any
// letter-like character (not space, punctuation or control) as part of a word.
bool is_word_char(char32_t c) {
  if (c < 0x80)
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  return !is_whitespace(c) && char_class(c) == unicode::kLetter;
}

void split_added(const std::u32string& text, const std::vector<AddedToken>& added,
                 const std::vector<std::u32string>& patterns, bool normalized_pass,
                 std::vector<std::pair<std::u32string, int32_t>>& out) {
  size_t piece_start = 0, i = 0;
  while (i < text.size()) {
    size_t best = SIZE_MAX, best_len = 0;
    for (size_t k = 0; k < added.size(); ++k) {
      const auto& pat = patterns[k];
      if (added[k].normalized != normalized_pass || pat.size() <= best_len) continue;
      if (text.compare(i, pat.size(), pat) != 0) continue;
      if (added[k].single_word) {
        const bool left_ok = i == 0 || !is_word_char(text[i - 1]);
        const size_t e = i + pat.size();
        const bool right_ok = e == text.size() || !is_word_char(text[e]);
        if (!left_ok || !right_ok) continue;
      }
      best = k, best_len = pat.size();
    }
    if (best == SIZE_MAX) {
      ++i;
      continue;
    }
    size_t s = i, e = i + best_len;
    if (added[best].lstrip) {
      while (s > piece_start && is_whitespace(text[s - 1])) --s;
    }
    if (added[best].rstrip) {
      while (e < text.size() && is_whitespace(text[e])) ++e;
    }
    if (s > piece_start) out.emplace_back(text.substr(piece_start, s - piece_start), -1);
    out.emplace_back(std::u32string(), added[best].id);
    piece_start = i = e;
  }
  if (piece_start < text.size()) out.emplace_back(text.substr(piece_start), -1);
}

std::vector<int32_t> tokenize_up_to(
    std::string_view text, size_t limit, bool* complete,
    const std::function<bool(std::string_view, size_t)>& can_cut,
    const std::function<std::vector<int32_t>(std::string_view)>& tokenize) {
  constexpr size_t kPiece = 16384;
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos < text.size() && ids.size() <= limit) {
    size_t end = std::min(text.size(), pos + kPiece);
    while (end < text.size() && !can_cut(text, end)) ++end;
    const std::vector<int32_t> part = tokenize(text.substr(pos, end - pos));
    ids.insert(ids.end(), part.begin(), part.end());
    pos = end;
  }
  *complete = pos >= text.size();
  return ids;
}

}  // namespace spinel::text
