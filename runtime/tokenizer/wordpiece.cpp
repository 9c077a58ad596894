// BERT normaliser, pre-tokeniser and WordPiece model, written to give the
// same ids as HF tokenizers 0.19 (BertTokenizerFast). Text is handled as
// code points; the Unicode data comes from unicode_tables.cpp. Loading and
// (de)serialisation live in wordpiece_io.cpp.
#include "runtime/tokenizer/wordpiece.h"

#include <algorithm>

#include "runtime/error.h"
#include "runtime/tokenizer/text.h"
#include "runtime/tokenizer/unicode_tables.h"

namespace spinel {
namespace {

using text::append_lower;
using text::append_utf8;
using text::decode_utf8;
using text::is_whitespace;

// ---- Unicode helpers ----------------------------------------------------------

unicode::CharClass char_class(char32_t c) {
  const auto* begin = unicode::kClassRanges;
  const auto* end = begin + unicode::kClassRangeCount;
  // First range whose hi >= c.
  const auto* it = std::lower_bound(
      begin, end, c, [](const unicode::ClassRange& r, char32_t v) { return r.hi < v; });
  if (it != end && it->lo <= c) return static_cast<unicode::CharClass>(it->cls);
  return unicode::kLetter;
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

std::string WordPieceTokenizer::describe() const {
  return "WordPiece, " + std::to_string(vocab_.size()) + " tokens, " +
         (opts_.lowercase ? "lower-cased" : "cased");
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
  text::split_added(text, added_, added_patterns_, normalized_pass, out);
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

Encoding WordPieceTokenizer::encode(std::string_view a, std::optional<std::string_view> b,
                                    size_t max_length, bool stop_early) const {
  const size_t specials = b ? 3 : 2;
  bool complete = true;
  std::vector<int32_t> ta;
  if (stop_early && !b && max_length >= specials)
    // A cut after ASCII whitespace is a token boundary for BERT's
    // pre-tokenizer, and never inside a UTF-8 sequence.
    ta = text::tokenize_up_to(
        a, max_length - specials, &complete,
        [](std::string_view t, size_t i) {
          const char c = t[i - 1];
          return c == ' ' || c == '\t' || c == '\n' || c == '\r';
        },
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
    truncate_longest_first(ta, b ? &tb : nullptr, max_length - specials);
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
