// BERT normaliser, pre-tokeniser and WordPiece model, written to give the
// same ids as HF tokenizers 0.19 (BertTokenizerFast). Text is handled as
// code points; the Unicode data comes from unicode_tables.cpp. Loading and
// (de)serialisation live in wordpiece_io.cpp.
#include "runtime/tokenizer/wordpiece.h"

#include <algorithm>

#include "runtime/error.h"
#include "runtime/tokenizer/unicode_tables.h"

namespace spinel {
namespace {

// ---- Unicode helpers ----------------------------------------------------------

std::u32string decode_utf8(std::string_view s) {
  // Invalid bytes become U+FFFD (which clean_text then drops), so arbitrary
  // input never throws.
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

unicode::CharClass char_class(char32_t c) {
  const auto* begin = unicode::kClassRanges;
  const auto* end = begin + unicode::kClassRangeCount;
  // First range whose hi >= c.
  const auto* it = std::lower_bound(
      begin, end, c, [](const unicode::ClassRange& r, char32_t v) { return r.hi < v; });
  if (it != end && it->lo <= c) return static_cast<unicode::CharClass>(it->cls);
  return unicode::kLetter;
}

// Rust's char::is_whitespace (the Unicode White_Space property), which HF
// uses both to clean text and to split words.
bool is_whitespace(char32_t c) {
  if (c <= 0x7F) return c == ' ' || (c >= 0x09 && c <= 0x0D);
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// The CJK blocks HF pads with spaces. 0x2B920 (not 0x2B820) is what HF uses,
// so U+2B820..U+2B91F are not padded there either.
bool is_chinese_char(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

bool is_punctuation(char32_t c) {
  // ASCII symbols such as $ + < = > ^ ` | ~ count too (is_ascii_punctuation).
  if (c < 0x80)
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
           (c >= 123 && c <= 126);
  return char_class(c) == unicode::kPunct;
}

// clean_text drops NUL, U+FFFD and "other" characters, except the three
// control characters that count as whitespace.
bool is_dropped_by_clean(char32_t c) {
  if (c == 0 || c == 0xFFFD) return true;
  if (c == '\t' || c == '\n' || c == '\r') return false;
  return char_class(c) == unicode::kOther;
}

uint8_t combining_class(char32_t c) {
  const auto* begin = unicode::kCombiningClasses;
  const auto* end = begin + unicode::kCombiningClassCount;
  const auto* it = std::lower_bound(
      begin, end, c, [](const unicode::CombiningClass& e, char32_t v) { return e.cp < v; });
  return (it != end && it->cp == c) ? it->ccc : 0;
}

// Appends c to out in NFD order: a character with a non-zero combining class
// moves before earlier ones of higher class in the same run (stable sort).
void push_canonical(std::u32string& out, size_t& run_start, char32_t c) {
  const uint8_t cc = combining_class(c);
  if (cc == 0) {
    out += c;
    run_start = out.size();
    return;
  }
  out += c;
  for (size_t j = out.size() - 1; j > run_start && combining_class(out[j - 1]) > cc; --j) {
    std::swap(out[j], out[j - 1]);
  }
}

// NFD, then drop non-spacing marks (Mn): HF's strip_accents.
std::u32string strip_accents(const std::u32string& in) {
  std::u32string out;
  out.reserve(in.size());
  size_t run_start = 0;
  for (const char32_t c : in) {
    if (c >= 0xAC00 && c <= 0xD7A3) {
      // Hangul syllables decompose algorithmically into conjoining jamo.
      const char32_t s = c - 0xAC00;
      push_canonical(out, run_start, 0x1100 + s / (21 * 28));
      push_canonical(out, run_start, 0x1161 + (s % (21 * 28)) / 28);
      if (s % 28) push_canonical(out, run_start, 0x11A7 + s % 28);
      continue;
    }
    if (c < 0x80) {
      out += c;
      run_start = out.size();
      continue;
    }
    const auto cls = char_class(c);
    if (cls == unicode::kMark) continue;  // inside a run of marks: no boundary
    if (cls == unicode::kMarkStarter) {
      run_start = out.size();  // a class-0 mark ended the run before it went
      continue;
    }
    const auto* begin = unicode::kDecompositions;
    const auto* end = begin + unicode::kDecompositionCount;
    const auto* it = std::lower_bound(
        begin, end, c, [](const unicode::Decomposition& d, char32_t v) { return d.cp < v; });
    if (it != end && it->cp == c) {
      for (uint8_t k = 0; k < it->len; ++k)
        push_canonical(out, run_start, unicode::kDecompositionPool[it->offset + k]);
    } else {
      push_canonical(out, run_start, c);
    }
  }
  return out;
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

// The BertNormalizer, in HF's order: clean, pad CJK, strip accents, lowercase.
std::u32string normalize(const std::u32string& in, const WordPieceOptions& o) {
  std::u32string s;
  s.reserve(in.size());
  for (const char32_t c : in) {
    if (o.clean_text) {
      if (is_dropped_by_clean(c)) continue;
      if (is_whitespace(c)) {
        s += U' ';
        continue;
      }
    }
    if (o.handle_chinese_chars && is_chinese_char(c)) {
      s += U' ';
      s += c;
      s += U' ';
    } else {
      s += c;
    }
  }
  if (o.strip_accents) s = strip_accents(s);
  if (o.lowercase) {
    std::u32string low;
    low.reserve(s.size());
    for (const char32_t c : s) append_lower(low, c);
    s.swap(low);
  }
  return s;
}

// For single_word added tokens. HF checks for alphanumerics; this treats any
// letter-like character (not space, punctuation or control) as part of a word.
bool is_word_char(char32_t c) {
  if (c < 0x80)
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  return !is_whitespace(c) && char_class(c) == unicode::kLetter;
}

}  // namespace

// ---- construction -----------------------------------------------------------

WordPieceTokenizer::WordPieceTokenizer(std::vector<std::string> vocab, WordPieceOptions opts)
    : vocab_(std::move(vocab)), opts_(std::move(opts)) {
  // What HF's slow-to-fast conversion does for a vocab.txt: the special
  // tokens are never split and never normalised.
  std::vector<std::string> specials = {opts_.pad_token, opts_.unk_token, opts_.cls_token,
                                       opts_.sep_token, "[MASK]"};
  std::unordered_map<std::string, int32_t> seen;
  for (size_t i = 0; i < vocab_.size(); ++i) seen[vocab_[i]] = static_cast<int32_t>(i);
  for (const auto& sp : specials) {
    auto it = seen.find(sp);
    if (it == seen.end()) continue;
    bool dup = false;
    for (const auto& a : added_) dup = dup || a.content == sp;
    if (!dup) added_.push_back(AddedToken{sp, it->second, true, false, false, false, false});
  }
  init();
}

WordPieceTokenizer::WordPieceTokenizer(std::vector<std::string> vocab, WordPieceOptions opts,
                                       std::vector<AddedToken> added)
    : vocab_(std::move(vocab)), opts_(std::move(opts)), added_(std::move(added)) {
  init();
}

void WordPieceTokenizer::init() {
  if (vocab_.empty()) fail("WordPiece tokenizer: empty vocabulary");
  if (vocab_.size() > static_cast<size_t>(INT32_MAX))
    fail("WordPiece tokenizer: vocabulary too large");
  if (opts_.max_input_chars_per_word <= 0) {
    fail("WordPiece tokenizer: max_input_chars_per_word must be positive, got ",
         opts_.max_input_chars_per_word);
  }
  index_.clear();
  index_.reserve(vocab_.size());
  // HF's vocab.txt loader lets a repeated token keep its last id, which
  // silently moves [CLS] & co. when a file is damaged: refuse instead.
  for (size_t i = 0; i < vocab_.size(); ++i) {
    const auto [it, fresh] = index_.emplace(vocab_[i], static_cast<int32_t>(i));
    if (!fresh)
      fail("WordPiece tokenizer: token '", vocab_[i], "' is listed twice (ids ", it->second, " and ",
           i, ")");
  }

  auto require = [&](const std::string& tok, const char* role) {
    const int32_t id = token_id(tok);
    if (id < 0) fail("WordPiece tokenizer: ", role, " token '", tok, "' is not in the vocabulary");
    return id;
  };
  unk_id_ = require(opts_.unk_token, "unknown");
  cls_id_ = require(opts_.cls_token, "classifier");
  sep_id_ = require(opts_.sep_token, "separator");
  pad_id_ = token_id(opts_.pad_token);

  added_patterns_.clear();
  for (const auto& a : added_) {
    if (a.id < 0 || static_cast<size_t>(a.id) >= vocab_.size()) {
      fail("WordPiece tokenizer: added token '", a.content, "' has id ", a.id,
           " outside the vocabulary of ", vocab_.size());
    }
    if (a.content.empty()) fail("WordPiece tokenizer: added token with id ", a.id, " is empty");
    if (vocab_[static_cast<size_t>(a.id)] != a.content)
      fail("WordPiece tokenizer: added token '", a.content, "' has id ", a.id, ", which is '",
           vocab_[static_cast<size_t>(a.id)], "' in the vocabulary");
    std::u32string pat = decode_utf8(a.content);
    if (a.normalized) pat = normalize(pat, opts_);
    added_patterns_.push_back(std::move(pat));
  }
}

int32_t WordPieceTokenizer::token_id(const std::string& token) const {
  auto it = index_.find(token);
  return it == index_.end() ? -1 : it->second;
}

const std::string& WordPieceTokenizer::token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= vocab_.size()) {
    fail("WordPiece tokenizer: token id ", id, " outside the vocabulary of ", vocab_.size());
  }
  return vocab_[id];
}

// ---- tokenisation -------------------------------------------------------------

// Splits `text` at the added tokens of one kind (raw or normalised), leftmost
// longest match first. Pieces of plain text get id -1.
void WordPieceTokenizer::split_added(const std::u32string& text, bool normalized_pass,
                                     std::vector<std::pair<std::u32string, int32_t>>& out) const {
  size_t piece_start = 0, i = 0;
  while (i < text.size()) {
    size_t best = SIZE_MAX, best_len = 0;
    for (size_t k = 0; k < added_.size(); ++k) {
      const auto& pat = added_patterns_[k];
      if (added_[k].normalized != normalized_pass || pat.size() <= best_len) continue;
      if (text.compare(i, pat.size(), pat) != 0) continue;
      if (added_[k].single_word) {
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
    if (added_[best].lstrip) {
      while (s > piece_start && is_whitespace(text[s - 1])) --s;
    }
    if (added_[best].rstrip) {
      while (e < text.size() && is_whitespace(text[e])) ++e;
    }
    if (s > piece_start) out.emplace_back(text.substr(piece_start, s - piece_start), -1);
    out.emplace_back(std::u32string(), added_[best].id);
    piece_start = i = e;
  }
  if (piece_start < text.size()) out.emplace_back(text.substr(piece_start), -1);
}

// Pre-tokenises normalised text (whitespace and punctuation split) and runs
// greedy longest-match-first WordPiece on every word.
void WordPieceTokenizer::word_pieces(const std::u32string& text, std::vector<int32_t>& ids) const {
  std::string candidate;
  std::vector<size_t> offsets;  // byte offset of each character of the word
  std::string word;
  auto flush = [&](size_t begin, size_t end) {
    if (begin == end) return;
    if (end - begin > static_cast<size_t>(opts_.max_input_chars_per_word)) {
      ids.push_back(unk_id_);
      return;
    }
    word.clear();
    offsets.clear();
    for (size_t k = begin; k < end; ++k) {
      offsets.push_back(word.size());
      append_utf8(word, text[k]);
    }
    offsets.push_back(word.size());
    const size_t before = ids.size();
    const size_t n = end - begin;
    size_t start = 0;
    while (start < n) {
      size_t stop = n;
      int32_t found = -1;
      for (; stop > start; --stop) {
        candidate.clear();
        if (start > 0) candidate += opts_.continuing_prefix;
        candidate.append(word, offsets[start], offsets[stop] - offsets[start]);
        auto it = index_.find(candidate);
        if (it != index_.end()) {
          found = it->second;
          break;
        }
      }
      if (found < 0) {
        ids.resize(before);  // one unknown piece makes the whole word [UNK]
        ids.push_back(unk_id_);
        return;
      }
      ids.push_back(found);
      start = stop;
    }
  };
  size_t word_start = 0;
  for (size_t k = 0; k < text.size(); ++k) {
    const char32_t c = text[k];
    if (is_whitespace(c)) {
      flush(word_start, k);
      word_start = k + 1;
    } else if (is_punctuation(c)) {
      flush(word_start, k);
      flush(k, k + 1);
      word_start = k + 1;
    }
  }
  flush(word_start, text.size());
}

std::vector<int32_t> WordPieceTokenizer::tokenize(std::string_view text) const {
  if (vocab_.empty()) fail("WordPiece tokenizer: not loaded");
  std::vector<int32_t> ids;
  std::vector<std::pair<std::u32string, int32_t>> raw_pieces, norm_pieces;
  split_added(decode_utf8(text), false, raw_pieces);
  for (const auto& [raw, raw_id] : raw_pieces) {
    if (raw_id >= 0) {
      ids.push_back(raw_id);
      continue;
    }
    norm_pieces.clear();
    split_added(normalize(raw, opts_), true, norm_pieces);
    for (const auto& [piece, id] : norm_pieces) {
      if (id >= 0) {
        ids.push_back(id);
      } else {
        word_pieces(piece, ids);
      }
    }
  }
  return ids;
}

namespace {

// Tokenizes `text` in pieces cut after ASCII whitespace (a token boundary for
// BERT's pre-tokenizer, and never inside a UTF-8 sequence) until more than
// `limit` ids are out. Sets *complete when the whole text was read.
template <typename Tokenize>
std::vector<int32_t> tokenize_up_to(std::string_view text, size_t limit, bool* complete,
                                    const Tokenize& tokenize) {
  constexpr size_t kPiece = 16384;
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos < text.size() && ids.size() <= limit) {
    size_t end = std::min(text.size(), pos + kPiece);
    while (end < text.size() && !space(text[end - 1])) ++end;
    const std::vector<int32_t> part = tokenize(text.substr(pos, end - pos));
    ids.insert(ids.end(), part.begin(), part.end());
    pos = end;
  }
  *complete = pos >= text.size();
  return ids;
}

}  // namespace

Encoding WordPieceTokenizer::encode(std::string_view a, std::optional<std::string_view> b,
                                    size_t max_length, bool stop_early) const {
  const size_t specials = b ? 3 : 2;
  bool complete = true;
  std::vector<int32_t> ta;
  if (stop_early && !b && max_length >= specials)
    ta = tokenize_up_to(a, max_length - specials, &complete,
                        [this](std::string_view t) { return tokenize(t); });
  else
    ta = tokenize(a);
  std::vector<int32_t> tb;
  if (b) tb = tokenize(*b);
  Encoding enc;
  enc.untruncated_length = ta.size() + tb.size() + specials;
  enc.length_is_exact = complete;
  if (max_length > 0 && enc.untruncated_length > max_length) {
    if (max_length < specials) {
      fail("max_length ", max_length, " leaves no room for the ", specials, " special tokens");
    }
    const size_t budget = max_length - specials;
    if (!b) {
      ta.resize(budget);
    } else {
      // HF's longest_first: the shorter sequence keeps everything that fits
      // (up to half the budget when both are long); the longer one gets the
      // rest, and the extra token of an odd budget.
      size_t n1 = ta.size(), n2 = tb.size();
      const bool swap = n1 > n2;
      if (swap) std::swap(n1, n2);
      n2 = n1 > budget ? n1 : std::max(n1, budget - n1);
      if (n1 + n2 > budget) {
        n1 = budget / 2;
        n2 = n1 + budget % 2;
      }
      if (swap) std::swap(n1, n2);
      ta.resize(std::min(ta.size(), n1));
      tb.resize(std::min(tb.size(), n2));
    }
    enc.truncated = true;
  }
  enc.ids.reserve(ta.size() + tb.size() + specials);
  enc.ids.push_back(cls_id_);
  enc.ids.insert(enc.ids.end(), ta.begin(), ta.end());
  enc.ids.push_back(sep_id_);
  enc.type_ids.assign(enc.ids.size(), 0);
  if (b) {
    enc.ids.insert(enc.ids.end(), tb.begin(), tb.end());
    enc.ids.push_back(sep_id_);
    enc.type_ids.resize(enc.ids.size(), 1);
  }
  return enc;
}

}  // namespace spinel
