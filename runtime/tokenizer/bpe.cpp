// The BPE pipeline, written to give the same ids as HF tokenizers 0.19:
// added tokens, normalizer, pre-tokenizer, the merge loop of its word.rs
// (a queue ordered by merge rank, then position), and the post-processor
// template. Loading and (de)serialisation live in bpe_io.cpp.
#include "runtime/tokenizer/bpe.h"

#include <algorithm>
#include <queue>

#include "runtime/error.h"
#include "runtime/tokenizer/regex_classes.h"
#include "runtime/tokenizer/text.h"

namespace spinel {
namespace {

using text::decode_utf8;
using text::is_whitespace;

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

uint8_t regex_class(char32_t c) {
  const auto* begin = unicode::kRegexClassRanges;
  const auto* end = begin + unicode::kRegexClassRangeCount;
  const auto* it = std::lower_bound(
      begin, end, c, [](const unicode::RegexClassRange& r, char32_t v) { return r.hi < v; });
  return (it != end && it->lo <= c) ? it->flags : 0;
}

// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others
// for 256, 257, ... in byte order.
const char32_t* byte_chars() {
  static const auto table = [] {
    static char32_t t[256];
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
      t[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

void push_piece(std::vector<std::u32string>& out, const std::u32string& s, size_t b, size_t e) {
  if (e > b) out.push_back(s.substr(b, e - b));
}

// \w+|[^\w\s]+ (whitespace dropped).
void split_whitespace(const std::u32string& s, std::vector<std::u32string>& out) {
  size_t i = 0;
  while (i < s.size()) {
    const uint8_t f = regex_class(s[i]);
    if (f & unicode::kSpace) {
      ++i;
      continue;
    }
    const bool word = f & unicode::kWord;
    size_t j = i + 1;
    while (j < s.size()) {
      const uint8_t g = regex_class(s[j]);
      if ((g & unicode::kSpace) || bool(g & unicode::kWord) != word) break;
      ++j;
    }
    push_piece(out, s, i, j);
    i = j;
  }
}

void split_on_whitespace(const std::u32string& s, std::vector<std::u32string>& out) {
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || is_whitespace(s[i])) {
      push_piece(out, s, start, i);
      start = i + 1;
    }
  }
}

// GPT-2's 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// matched by hand, alternatives tried in order at each position.
void split_gpt2(const std::u32string& s, std::vector<std::u32string>& out) {
  enum { kL, kN, kS, kO };
  auto cls = [&](size_t i) {
    const uint8_t f = regex_class(s[i]);
    if (f & unicode::kSpace) return kS;
    if (f & unicode::kLetterL) return kL;
    if (f & unicode::kNumber) return kN;
    return kO;
  };
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    if (s[i] == U'\'' && i + 1 < n) {
      const char32_t c1 = s[i + 1];
      const char32_t c2 = i + 2 < n ? s[i + 2] : 0;
      size_t len = 0;
      if (c1 == U's' || c1 == U't' || c1 == U'm' || c1 == U'd') {
        len = 2;
      } else if ((c1 == U'r' && c2 == U'e') || (c1 == U'v' && c2 == U'e') ||
                 (c1 == U'l' && c2 == U'l')) {
        len = 3;
      }
      if (len) {
        push_piece(out, s, i, i + len);
        i += len;
        continue;
      }
    }
    // ` ?X+` for X in L, N, O: an optional space, then a run of one class.
    size_t start = i, k = i;
    if (s[k] == U' ' && k + 1 < n && cls(k + 1) != kS) ++k;
    const int c = cls(k);
    if (c != kS) {
      size_t j = k + 1;
      while (j < n && cls(j) == c) ++j;
      push_piece(out, s, start, j);
      i = j;
      continue;
    }
    // Whitespace: \s+(?!\S) leaves the last one for the next word, unless
    // the run ends the text; a single one before a word is \s+.
    size_t j = i + 1;
    while (j < n && cls(j) == kS) ++j;
    if (j < n && j - 1 > i) j -= 1;
    push_piece(out, s, i, j);
    i = j;
  }
}

}  // namespace

// ---- construction -----------------------------------------------------------

BpeTokenizer::BpeTokenizer(BpeConfig config) : cfg_(std::move(config)) { init(); }

void BpeTokenizer::init() {
  if (cfg_.vocab.empty()) fail("BPE tokenizer: empty vocabulary");
  // Every id, of the model's vocabulary and of the added tokens, must be
  // used exactly once, densely from 0.
  size_t n = 0;
  for (const auto& [tok, id] : cfg_.vocab) {
    if (id < 0) fail("BPE tokenizer: token '", tok, "' has negative id ", id);
    n = std::max(n, static_cast<size_t>(id) + 1);
  }
  for (const auto& a : cfg_.added) {
    if (a.id < 0) fail("BPE tokenizer: added token '", a.content, "' has negative id ", a.id);
    if (a.content.empty()) fail("BPE tokenizer: added token with id ", a.id, " is empty");
    n = std::max(n, static_cast<size_t>(a.id) + 1);
  }
  if (n > (size_t{1} << 26)) fail("BPE tokenizer: ids up to ", n - 1, " are beyond any vocabulary");
  tokens_.assign(n, std::string());
  std::vector<bool> filled(n, false);
  model_ids_.clear();
  model_ids_.reserve(cfg_.vocab.size());
  for (const auto& [tok, id] : cfg_.vocab) {
    if (filled[id])
      fail("BPE tokenizer: id ", id, " is used by both '", tokens_[id], "' and '", tok, "'");
    if (!model_ids_.emplace(tok, id).second)
      fail("BPE tokenizer: token '", tok, "' is listed twice");
    tokens_[id] = tok;
    filled[id] = true;
  }
  for (const auto& a : cfg_.added) {
    if (filled[a.id]) {
      if (tokens_[a.id] != a.content)
        fail("BPE tokenizer: added token '", a.content, "' has id ", a.id,
             ", which the vocabulary gives to '", tokens_[a.id], "'");
      continue;
    }
    tokens_[a.id] = a.content;
    filled[a.id] = true;
  }
  for (size_t i = 0; i < n; ++i)
    if (!filled[i]) fail("BPE tokenizer: no token has id ", i, " (ids must be 0..", n - 1, ")");
  all_ids_.clear();
  all_ids_.reserve(n);
  for (size_t i = 0; i < n; ++i) all_ids_.emplace(tokens_[i], static_cast<int32_t>(i));

  // Merges: the merged token is a + b without b's continuing prefix, as HF
  // builds it (the prefix length is cut whether b has the prefix or not).
  merges_.clear();
  merges_.reserve(cfg_.merges.size());
  const size_t prefix_len = cfg_.continuing_subword_prefix.size();
  for (size_t r = 0; r < cfg_.merges.size(); ++r) {
    const auto& [a, b] = cfg_.merges[r];
    auto ia = model_ids_.find(a);
    auto ib = model_ids_.find(b);
    if (ia == model_ids_.end() || ib == model_ids_.end())
      fail("BPE tokenizer: merge #", r, " '", a, " ", b, "' uses '",
           ia == model_ids_.end() ? a : b, "', which is not in the vocabulary");
    if (b.size() < prefix_len)
      fail("BPE tokenizer: merge #", r, " '", a, " ", b,
           "': the right token is shorter than the continuing_subword_prefix");
    const std::string merged = a + b.substr(prefix_len);
    auto im = model_ids_.find(merged);
    if (im == model_ids_.end())
      fail("BPE tokenizer: merge #", r, " '", a, " ", b, "' makes '", merged,
           "', which is not in the vocabulary");
    // A pair listed twice keeps its last rank, as in HF's map.
    merges_[pair_key(ia->second, ib->second)] = Merge{static_cast<int32_t>(r), im->second};
  }

  unk_id_ = -1;
  if (cfg_.unk_token) {
    auto it = model_ids_.find(*cfg_.unk_token);
    if (it == model_ids_.end())
      fail("BPE tokenizer: unk_token '", *cfg_.unk_token, "' is not in the vocabulary");
    unk_id_ = it->second;
  }

  added_patterns_.clear();
  for (const auto& a : cfg_.added) {
    std::u32string pat = decode_utf8(a.content);
    if (a.normalized) pat = normalize(std::move(pat));
    added_patterns_.push_back(std::move(pat));
  }

  for (const auto* tpl : {&cfg_.single, &cfg_.pair}) {
    for (const auto& p : *tpl) {
      if (p.kind > TemplatePiece::SequenceB)
        fail("BPE tokenizer: post-processor template piece of unknown kind ", int(p.kind));
      if (p.kind != TemplatePiece::Special) continue;
      if (p.ids.empty())
        fail("BPE tokenizer: post-processor special token '", p.name, "' has no ids");
      for (const int32_t id : p.ids)
        if (id < 0 || static_cast<size_t>(id) >= n)
          fail("BPE tokenizer: post-processor special token '", p.name, "' has id ", id,
               " outside the vocabulary of ", n);
    }
  }
  cls_id_ = sep_id_ = -1;
  if (!cfg_.single.empty() && cfg_.single.front().kind == TemplatePiece::Special)
    cls_id_ = cfg_.single.front().ids.front();
  if (!cfg_.single.empty() && cfg_.single.back().kind == TemplatePiece::Special)
    sep_id_ = cfg_.single.back().ids.back();
  pad_id_ = -1;
  for (const std::string& p : {cfg_.pad_token, std::string("[PAD]"), std::string("<pad>")}) {
    if (pad_id_ < 0 && !p.empty()) pad_id_ = token_id(p);
  }

  // Where stop_early may cut a text: only where pieces tokenize alone to the
  // same ids. Not with Strip (it works on the whole text) or added tokens
  // that hold or swallow whitespace.
  byte_level_ = false;
  bool whitespace_only = !cfg_.pre_tokenizers.empty();
  for (const auto& p : cfg_.pre_tokenizers) {
    if (p.kind == BpePreTokenizer::ByteLevel) {
      byte_level_ = true;
      whitespace_only = false;
    }
  }
  bool safe = true;
  for (const BpeNormalizer nz : cfg_.normalizers) safe = safe && nz == BpeNormalizer::Lowercase;
  for (const auto& a : cfg_.added) {
    safe = safe && !a.lstrip && !a.rstrip && !a.single_word;
    for (const char c : a.content) safe = safe && c != ' ' && c != '\t' && c != '\n' && c != '\r';
  }
  cut_after_space_ = safe && whitespace_only;
  // Byte-level: a ' ' after a non-whitespace character starts a new match,
  // and a piece starting with ' ' gets no prefix space; one pre-tokenizer only.
  cut_before_space_ = safe && byte_level_ && cfg_.pre_tokenizers.size() == 1 &&
                      cfg_.pre_tokenizers[0].use_regex;
}

int32_t BpeTokenizer::token_id(const std::string& token) const {
  auto it = all_ids_.find(token);
  return it == all_ids_.end() ? -1 : it->second;
}

const std::string& BpeTokenizer::token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= tokens_.size())
    fail("BPE tokenizer: token id ", id, " outside the vocabulary of ", tokens_.size());
  return tokens_[static_cast<size_t>(id)];
}

std::string BpeTokenizer::describe() const {
  std::string pre;
  for (const auto& p : cfg_.pre_tokenizers) {
    pre += pre.empty() ? "" : "+";
    pre += p.kind == BpePreTokenizer::Whitespace        ? "Whitespace"
           : p.kind == BpePreTokenizer::WhitespaceSplit ? "WhitespaceSplit"
                                                        : "ByteLevel";
  }
  return "BPE, " + std::to_string(tokens_.size()) + " tokens, " +
         std::to_string(cfg_.merges.size()) + " merges, " +
         (pre.empty() ? std::string("no") : pre) + " pre-tokenizer";
}

// ---- tokenisation -------------------------------------------------------------

std::u32string BpeTokenizer::normalize(std::u32string s) const {
  for (const BpeNormalizer nz : cfg_.normalizers) {
    if (nz == BpeNormalizer::Lowercase) {
      std::u32string low;
      low.reserve(s.size());
      for (const char32_t c : s) text::append_lower(low, c);
      s.swap(low);
      continue;
    }
    size_t b = 0, e = s.size();
    if (nz != BpeNormalizer::StripRight)
      while (b < e && is_whitespace(s[b])) ++b;
    if (nz != BpeNormalizer::StripLeft)
      while (e > b && is_whitespace(s[e - 1])) --e;
    s = s.substr(b, e - b);
  }
  return s;
}

void BpeTokenizer::pre_tokenize(const std::u32string& text,
                                std::vector<std::string>& words) const {
  std::vector<std::u32string> pieces, next;
  if (!text.empty()) pieces.push_back(text);
  for (const auto& p : cfg_.pre_tokenizers) {
    next.clear();
    for (std::u32string& piece : pieces) {
      switch (p.kind) {
        case BpePreTokenizer::Whitespace: split_whitespace(piece, next); break;
        case BpePreTokenizer::WhitespaceSplit: split_on_whitespace(piece, next); break;
        case BpePreTokenizer::ByteLevel: {
          if (p.add_prefix_space && piece.front() != U' ') piece.insert(piece.begin(), U' ');
          const size_t first = next.size();
          if (p.use_regex) {
            split_gpt2(piece, next);
          } else {
            next.push_back(piece);
          }
          // Each piece's UTF-8 bytes, as characters.
          const char32_t* map = byte_chars();
          std::string utf8;
          for (size_t k = first; k < next.size(); ++k) {
            utf8 = text::encode_utf8(next[k]);
            std::u32string mapped;
            mapped.reserve(utf8.size());
            for (const char ch : utf8) mapped += map[static_cast<uint8_t>(ch)];
            next[k].swap(mapped);
          }
          break;
        }
      }
    }
    pieces.swap(next);
  }
  for (const auto& p : pieces) words.push_back(text::encode_utf8(p));
}

// HF's BPE::merge_word and Word::merge_all.
void BpeTokenizer::model_word(const std::string& word, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  if (cfg_.ignore_merges) {
    if (auto it = model_ids_.find(word); it != model_ids_.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    size_t len;  // bytes; 0 once merged into its left neighbour
  };
  std::vector<Symbol> sym;
  sym.reserve(word.size());
  auto add = [&](int32_t id, size_t len) {
    const int32_t k = static_cast<int32_t>(sym.size());
    sym.push_back(Symbol{id, k - 1, -1, len});
    if (k > 0) sym[static_cast<size_t>(k) - 1].next = k;
  };
  int32_t pending_unk = -1;
  size_t pending_len = 0;
  std::string s;
  size_t i = 0;
  while (i < word.size()) {
    size_t e = i + 1;
    while (e < word.size() && (static_cast<uint8_t>(word[e]) & 0xC0) == 0x80) ++e;
    const size_t byte_len = e - i;
    s.clear();
    if (i > 0) s += cfg_.continuing_subword_prefix;
    s.append(word, i, byte_len);
    if (e == word.size()) s += cfg_.end_of_word_suffix;
    i = e;
    if (auto it = model_ids_.find(s); it != model_ids_.end()) {
      if (pending_unk >= 0) {
        add(pending_unk, pending_len);
        pending_unk = -1;
      }
      add(it->second, byte_len);
      continue;
    }
    if (cfg_.byte_fallback) {
      std::vector<int32_t> bytes;
      static const char* hex = "0123456789ABCDEF";
      for (const char ch : s) {
        const auto b = static_cast<uint8_t>(ch);
        const std::string code = std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
        auto it = model_ids_.find(code);
        if (it == model_ids_.end()) break;
        bytes.push_back(it->second);
      }
      if (bytes.size() == s.size()) {
        // As in HF, a pending unknown is not flushed first.
        for (const int32_t b : bytes) add(b, 1);
        continue;
      }
    }
    if (cfg_.unk_token) {
      if (pending_unk >= 0 && cfg_.fuse_unk) {
        pending_len += byte_len;
      } else {
        if (pending_unk >= 0) add(pending_unk, pending_len);
        pending_unk = unk_id_;
        pending_len = byte_len;
      }
    }
    // Without an unk_token the character is dropped.
  }
  if (pending_unk >= 0) add(pending_unk, pending_len);

  struct Cand {
    int32_t pos, rank, new_id;
  };
  // Lowest rank first, then leftmost.
  auto worse = [](const Cand& x, const Cand& y) {
    return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
  };
  std::priority_queue<Cand, std::vector<Cand>, decltype(worse)> queue(worse);
  auto find_merge = [&](int32_t a, int32_t b) -> const Merge* {
    auto it = merges_.find(pair_key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  for (size_t k = 0; k + 1 < sym.size(); ++k) {
    if (const Merge* m = find_merge(sym[k].id, sym[k + 1].id))
      queue.push(Cand{static_cast<int32_t>(k), m->rank, m->new_id});
  }
  while (!queue.empty()) {
    const Cand top = queue.top();
    queue.pop();
    Symbol& cur = sym[static_cast<size_t>(top.pos)];
    if (cur.len == 0 || cur.next < 0) continue;
    const size_t next_pos = static_cast<size_t>(cur.next);
    const Symbol right = sym[next_pos];
    const Merge* m = find_merge(cur.id, right.id);
    if (!m || m->new_id != top.new_id) continue;  // an expired entry
    cur.id = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    sym[next_pos].len = 0;
    if (right.next >= 0) sym[static_cast<size_t>(right.next)].prev = top.pos;
    if (cur.prev >= 0) {
      if (const Merge* pm = find_merge(sym[static_cast<size_t>(cur.prev)].id, cur.id))
        queue.push(Cand{cur.prev, pm->rank, pm->new_id});
    }
    if (cur.next >= 0) {
      if (const Merge* nm = find_merge(cur.id, sym[static_cast<size_t>(cur.next)].id))
        queue.push(Cand{top.pos, nm->rank, nm->new_id});
    }
  }
  for (const Symbol& x : sym)
    if (x.len != 0) ids.push_back(x.id);
}

std::vector<int32_t> BpeTokenizer::tokenize(std::string_view text) const {
  if (tokens_.empty()) fail("BPE tokenizer: not loaded");
  std::vector<int32_t> ids;
  std::vector<std::pair<std::u32string, int32_t>> raw_pieces, norm_pieces;
  std::vector<std::string> words;
  text::split_added(decode_utf8(text), cfg_.added, added_patterns_, false, raw_pieces);
  for (const auto& [raw, raw_id] : raw_pieces) {
    if (raw_id >= 0) {
      ids.push_back(raw_id);
      continue;
    }
    norm_pieces.clear();
    text::split_added(normalize(raw), cfg_.added, added_patterns_, true, norm_pieces);
    for (const auto& [piece, id] : norm_pieces) {
      if (id >= 0) {
        ids.push_back(id);
        continue;
      }
      words.clear();
      pre_tokenize(piece, words);
      for (const auto& w : words) model_word(w, ids);
    }
  }
  return ids;
}

std::vector<int32_t> BpeTokenizer::apply_template(const std::vector<TemplatePiece>& tpl,
                                                  const std::vector<int32_t>& a,
                                                  const std::vector<int32_t>* b,
                                                  std::vector<int32_t>* type_ids) const {
  std::vector<int32_t> ids;
  if (tpl.empty()) {
    // No post-processor: a, then b, with type ids 0 and 1.
    ids = a;
    type_ids->assign(a.size(), 0);
    if (b) {
      ids.insert(ids.end(), b->begin(), b->end());
      type_ids->resize(ids.size(), 1);
    }
    return ids;
  }
  for (const auto& p : tpl) {
    const std::vector<int32_t>* part = p.kind == TemplatePiece::Special     ? &p.ids
                                       : p.kind == TemplatePiece::SequenceA ? &a
                                                                            : b;
    if (!part) continue;
    ids.insert(ids.end(), part->begin(), part->end());
    type_ids->resize(ids.size(), p.type_id);
  }
  return ids;
}

Encoding BpeTokenizer::encode(std::string_view a, std::optional<std::string_view> b,
                              size_t max_length, bool stop_early) const {
  if (tokens_.empty()) fail("BPE tokenizer: not loaded");
  const std::vector<TemplatePiece>& tpl = b ? cfg_.pair : cfg_.single;
  size_t specials = 0;
  for (const auto& p : tpl)
    if (p.kind == TemplatePiece::Special) specials += p.ids.size();

  bool complete = true;
  std::vector<int32_t> ta;
  if (stop_early && !b && max_length >= specials && (cut_after_space_ || cut_before_space_)) {
    const bool after = cut_after_space_;
    auto space = [](char c) {
      return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
    };
    ta = text::tokenize_up_to(
        a, max_length - specials, &complete,
        [after, space](std::string_view t, size_t i) {
          return after ? space(t[i - 1]) : (t[i] == ' ' && !space(t[i - 1]));
        },
        [this](std::string_view t) { return tokenize(t); });
  } else {
    ta = tokenize(a);
  }
  std::vector<int32_t> tb;
  if (b) tb = tokenize(*b);

  Encoding enc;
  enc.untruncated_length = ta.size() + tb.size() + specials;
  enc.length_is_exact = complete;
  if (max_length > 0 && enc.untruncated_length > max_length) {
    if (max_length < specials)
      fail("max_length ", max_length, " leaves no room for the ", specials, " special tokens");
    truncate_longest_first(ta, b ? &tb : nullptr, max_length - specials);
    enc.truncated = true;
  }
  enc.ids = apply_template(tpl, ta, b ? &tb : nullptr, &enc.type_ids);
  return enc;
}

}  // namespace spinel
