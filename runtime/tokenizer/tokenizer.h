// The tokenizer interface every kind implements (WordPiece, BPE,
// SentencePiece), the value type that holds any of them (AnyTokenizer, what a
// .spnl carries), and loading one from a file by its form.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "runtime/bytes.h"

namespace spinel {

// A token matched in the text before the model runs (HF "added tokens"):
// [CLS], [MASK] ... in the input become their own id instead of "[", "cls", "]".
// `normalized` tokens are matched after normalisation, the others in the raw
// text; lstrip/rstrip swallow whitespace on that side; single_word matches
// only when not inside a word.
struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = true;
  bool normalized = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
};

struct Encoding {
  std::vector<int32_t> ids;
  std::vector<int32_t> type_ids;
  bool truncated = false;      // true when tokens were dropped to fit max_length
  size_t untruncated_length = 0;  // length (with specials) before truncation
  // False when encoding stopped early (stop_early): untruncated_length is
  // then only a lower bound.
  bool length_is_exact = true;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // The .spnl kind tag: "wordpiece", "bpe" or "sentencepiece".
  virtual const char* kind() const = 0;
  // One line for `spinel inspect`, e.g. "BPE, 4096 tokens, Whitespace pre-tokenizer".
  virtual std::string describe() const = 0;

  // The model's tokens of a text, without the post-processor's special tokens.
  virtual std::vector<int32_t> tokenize(std::string_view text) const = 0;
  // The text(s) with the special tokens of the tokenizer's template (BERT:
  // [CLS] a [SEP] (b [SEP])), truncated to max_length (0 = no limit) by
  // removing tokens from the end of the longest segment (HF "longest_first"),
  // the special tokens kept.
  // stop_early: for a single text, stop tokenizing once it is known to
  // exceed max_length where the tokenizer can cut its input without changing
  // the ids (untruncated_length is then a lower bound); ids are the same.
  virtual Encoding encode(std::string_view a, std::optional<std::string_view> b,
                          size_t max_length, bool stop_early = false) const = 0;

  virtual size_t vocab_size() const = 0;
  virtual int32_t token_id(const std::string& token) const = 0;  // -1 when absent
  // Throws spinel::Error for an id outside the vocabulary.
  virtual const std::string& token(int32_t id) const = 0;
  // -1 where the tokenizer has no such token.
  virtual int32_t cls_id() const = 0;
  virtual int32_t sep_id() const = 0;
  virtual int32_t unk_id() const = 0;
  virtual int32_t pad_id() const = 0;

  // The kind's own serialization (without the kind tag).
  virtual void serialize(ByteWriter& w) const = 0;
};

// Any tokenizer, by value (shared and immutable inside): what SpnlWriter and
// Model hold. Empty until assigned; an empty one has vocab_size() 0 and
// throws from everything else.
class AnyTokenizer final : public Tokenizer {
 public:
  AnyTokenizer() = default;
  template <typename T, typename D = std::decay_t<T>,
            typename = std::enable_if_t<std::is_base_of_v<Tokenizer, D> &&
                                        !std::is_same_v<D, AnyTokenizer>>>
  AnyTokenizer(T&& t) : p_(std::make_shared<const D>(std::forward<T>(t))) {}  // NOLINT: implicit
  explicit AnyTokenizer(std::shared_ptr<const Tokenizer> p) : p_(std::move(p)) {}

  bool empty() const { return !p_; }
  const Tokenizer& get() const;
  // The held tokenizer as a concrete kind, or nullptr.
  template <typename T>
  const T* as() const {
    return dynamic_cast<const T*>(p_.get());
  }

  const char* kind() const override { return get().kind(); }
  std::string describe() const override { return get().describe(); }
  std::vector<int32_t> tokenize(std::string_view text) const override {
    return get().tokenize(text);
  }
  Encoding encode(std::string_view a, std::optional<std::string_view> b, size_t max_length,
                  bool stop_early = false) const override {
    return get().encode(a, b, max_length, stop_early);
  }
  size_t vocab_size() const override { return p_ ? p_->vocab_size() : 0; }
  int32_t token_id(const std::string& token) const override { return get().token_id(token); }
  const std::string& token(int32_t id) const override { return get().token(id); }
  int32_t cls_id() const override { return get().cls_id(); }
  int32_t sep_id() const override { return get().sep_id(); }
  int32_t unk_id() const override { return get().unk_id(); }
  int32_t pad_id() const override { return get().pad_id(); }
  void serialize(ByteWriter& w) const override { get().serialize(w); }

 private:
  std::shared_ptr<const Tokenizer> p_;
};

struct TokenizerFileOptions {
  // vocab.txt only: BERT's lower-casing and accent stripping (uncased models).
  bool lowercase = true;
};

// Loads a tokenizer by its form: an HF tokenizer.json (WordPiece or BPE
// model, by its "model.type"), a SentencePiece .model (by its extension, or
// its protobuf content), else a WordPiece vocab.txt. Throws spinel::Error
// naming the file and what is not supported.
AnyTokenizer load_tokenizer_file(const std::string& path, const TokenizerFileOptions& opts = {});

// ---- pieces the kinds share ---------------------------------------------------

// Truncates two token lists to `budget` tokens in all, like HF's
// "longest_first": the shorter keeps what fits (at most half of the budget
// when both are long), the longer gets the rest. For one list: its first
// `budget` tokens.
void truncate_longest_first(std::vector<int32_t>& a, std::vector<int32_t>* b, size_t budget);

}  // namespace spinel
