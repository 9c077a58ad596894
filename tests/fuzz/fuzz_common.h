// Shared pieces of the fuzz targets: a per-process scratch directory for the
// APIs that only take paths, a small fixed tokenizer, and the invariants every
// encoding must satisfy.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/error.h"
#include "runtime/tokenizer/wordpiece.h"

namespace spinel::fuzz {

// A finding that is not a crash (a broken invariant): print it and abort, so
// that libFuzzer saves the input like for any other crash.
[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "\n==FUZZ INVARIANT== %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// ---- scratch directory ------------------------------------------------------

namespace detail {
inline std::string& scratch_path() {
  static std::string p;
  return p;
}
inline void remove_scratch() {
  const std::string& d = scratch_path();
  if (d.empty()) return;
  if (DIR* dir = opendir(d.c_str())) {
    while (dirent* e = readdir(dir)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") unlink((d + "/" + n).c_str());
    }
    closedir(dir);
  }
  rmdir(d.c_str());
}
}  // namespace detail

// One directory per process (so parallel jobs never share files), in RAM when
// /dev/shm exists, removed at exit.
inline const std::string& scratch_dir() {
  std::string& p = detail::scratch_path();
  if (p.empty()) {
    std::string base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "";
    if (base.empty()) {
      const char* t = std::getenv("TMPDIR");
      base = t && *t ? t : "/tmp";
    }
    std::string templ = base + "/spinel-fuzz-XXXXXX";
    if (!mkdtemp(templ.data())) {
      std::perror("fuzz: mkdtemp");
      std::abort();
    }
    p = templ;
    std::atexit(detail::remove_scratch);
  }
  return p;
}

// Writes `data` to `name` inside the scratch directory; returns its path.
inline std::string write_scratch(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = scratch_dir() + "/" + name;
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    std::perror("fuzz: open scratch file");
    std::abort();
  }
  size_t done = 0;
  while (done < size) {
    const ssize_t w = write(fd, data + done, size - done);
    if (w <= 0) {
      std::perror("fuzz: write scratch file");
      std::abort();
    }
    done += static_cast<size_t>(w);
  }
  close(fd);
  return path;
}

// ---- tokenizers -------------------------------------------------------------

// Specials, whole words, ## pieces, accents, CJK, an emoji: enough for every
// branch of normalisation and greedy matching to be reachable.
inline std::vector<std::string> small_vocab() {
  return {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "the", "un", "##want",
          "##ed", "##ing", "runn", "##s", "##es", ",", ".", "!", "'", "-", "a", "b", "c", "##a",
          "##b", "##c", "1", "12", "##3", "cafe", "café", "##é", "é", "e", "straße", "ß", "über",
          "ü", "naive", "中", "国", "日", "本", "語", "한", "##국", "😀", "ω", "i̇", "<e>", "@@a",
          "\xc3\x85ngstr\xc3\xb6m", "x"};
}

// The tokenizer most targets use: BERT uncased defaults.
inline const WordPieceTokenizer& small_tokenizer() {
  static const WordPieceTokenizer tok(small_vocab(), WordPieceOptions{});
  return tok;
}

// Variants over the same vocabulary that switch every normaliser option and
// use added tokens with each matching flag.
inline const std::vector<WordPieceTokenizer>& tokenizer_variants() {
  static const std::vector<WordPieceTokenizer> all = [] {
    std::vector<WordPieceTokenizer> v;
    v.push_back(small_tokenizer());
    WordPieceOptions cased;
    cased.lowercase = false;
    cased.strip_accents = false;
    v.emplace_back(small_vocab(), cased);
    WordPieceOptions raw;
    raw.clean_text = false;
    raw.handle_chinese_chars = false;
    raw.strip_accents = false;
    raw.max_input_chars_per_word = 5;
    raw.continuing_prefix = "@@";
    v.emplace_back(small_vocab(), raw);
    const std::vector<std::string> vocab = small_vocab();
    auto id = [&](const std::string& t) {
      for (size_t i = 0; i < vocab.size(); ++i)
        if (vocab[i] == t) return static_cast<int32_t>(i);
      std::abort();
    };
    // content, id, special, normalized, lstrip, rstrip, single_word
    std::vector<AddedToken> added = {
        {"[CLS]", id("[CLS]"), true, false, false, false, false},
        {"[SEP]", id("[SEP]"), true, false, false, false, false},
        {"[MASK]", id("[MASK]"), true, false, true, true, false},
        {"<e>", id("<e>"), false, true, false, false, true},
        {"café", id("café"), false, true, false, true, false},
        {"x", id("x"), false, false, true, false, true},
    };
    v.emplace_back(vocab, WordPieceOptions{}, added);
    return v;
  }();
  return all;
}

// ---- invariants -------------------------------------------------------------

inline std::vector<int32_t> tokenize_checked(const WordPieceTokenizer& tok, std::string_view text) {
  std::vector<int32_t> ids;
  try {
    ids = tok.tokenize(text);
  } catch (const Error& e) {
    // Any bytes are valid input to the tokenizer (invalid UTF-8 included).
    finding(std::string("tokenize threw: ") + e.what());
  }
  for (int32_t id : ids)
    if (id < 0 || static_cast<size_t>(id) >= tok.vocab_size())
      finding("tokenize gave id " + std::to_string(id) + " outside the vocabulary of " +
              std::to_string(tok.vocab_size()));
  return ids;
}

// encode(a, b, max_len) against its contract: [CLS] a' [SEP] (b' [SEP]) where
// a', b' are prefixes of tokenize(a), tokenize(b); at most max_len ids; an
// error exactly when max_len cannot hold the special tokens.
inline void check_encode(const WordPieceTokenizer& tok, std::string_view a,
                         std::optional<std::string_view> b, size_t max_len) {
  const size_t specials = b ? 3 : 2;
  const std::vector<int32_t> ta = tokenize_checked(tok, a);
  const std::vector<int32_t> tb = b ? tokenize_checked(tok, *b) : std::vector<int32_t>{};
  const size_t full = ta.size() + tb.size() + specials;
  Encoding e;
  try {
    e = tok.encode(a, b, max_len);
  } catch (const Error& err) {
    if (max_len > 0 && max_len < specials) return;  // documented refusal
    finding(std::string("encode threw: ") + err.what());
  }
  if (max_len > 0 && max_len < specials) finding("encode accepted a max_length below the specials");
  const auto& ids = e.ids;
  if (e.type_ids.size() != ids.size()) finding("encode: type_ids and ids differ in length");
  if (ids.size() < specials) finding("encode: fewer ids than special tokens");
  if (max_len > 0 && ids.size() > max_len)
    finding("encode: " + std::to_string(ids.size()) + " ids exceed max_length " +
            std::to_string(max_len));
  if (ids.front() != tok.cls_id() || ids.back() != tok.sep_id())
    finding("encode: does not start with [CLS] and end with [SEP]");
  for (int32_t id : ids)
    if (id < 0 || static_cast<size_t>(id) >= tok.vocab_size())
      finding("encode gave id " + std::to_string(id) + " outside the vocabulary");
  if (e.untruncated_length != full) finding("encode: wrong untruncated_length");
  if (e.truncated != (full > ids.size())) finding("encode: wrong truncated flag");
  if (e.truncated && ids.size() != max_len) finding("encode: truncation left the budget unused");

  // Segment a' runs while type ids are 0 (minus [CLS] and its [SEP]).
  size_t n0 = 0;
  while (n0 < ids.size() && e.type_ids[n0] == 0) ++n0;
  if (n0 < 2) finding("encode: [CLS] or the first [SEP] has type id 1");
  for (size_t i = n0; i < ids.size(); ++i)
    if (e.type_ids[i] != 1) finding("encode: type ids are not 0...0 1...1");
  if (!b && n0 != ids.size()) finding("encode: type id 1 in a single-text encoding");
  const size_t na = n0 - 2, nb = b ? ids.size() - n0 - 1 : 0;
  if (ids[n0 - 1] != tok.sep_id()) finding("encode: first segment does not end with [SEP]");
  if (na > ta.size() || nb > tb.size()) finding("encode: a segment grew");
  for (size_t i = 0; i < na; ++i)
    if (ids[1 + i] != ta[i]) finding("encode: first segment is not a prefix of tokenize(a)");
  for (size_t i = 0; i < nb; ++i)
    if (ids[n0 + i] != tb[i]) finding("encode: second segment is not a prefix of tokenize(b)");
}

}  // namespace spinel::fuzz
