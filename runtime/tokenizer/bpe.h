// Byte-pair encoding as HF tokenizers 0.19 runs it from a tokenizer.json:
// added tokens split out, a normalizer, a pre-tokenizer, the BPE model
// (merges applied by rank), and a post-processor template. The subset of
// tokenizer.json it reads is listed with from_tokenizer_json (and in
// `spinel convert --help`); anything else that changes ids is refused with
// its name. DNABERT-2 (Whitespace pre-tokenizer, [CLS] $A [SEP]) and
// RoBERTa/GPT-2-style byte-level files are what it is made for.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "runtime/bytes.h"
#include "runtime/tokenizer/tokenizer.h"

namespace spinel {

enum class BpeNormalizer : uint8_t {
  Lowercase = 1,   // Rust's char::to_lowercase per character
  StripLeft = 2,   // Strip: leading whitespace removed
  StripRight = 3,  // trailing
  StripBoth = 4,
};

struct BpePreTokenizer {
  enum Kind : uint8_t {
    Whitespace = 1,       // \w+|[^\w\s]+
    WhitespaceSplit = 2,  // split on whitespace
    ByteLevel = 3,        // GPT-2: optional regex split, then bytes as characters
  };
  Kind kind = Whitespace;
  bool add_prefix_space = false;  // ByteLevel
  bool use_regex = true;          // ByteLevel
};

// One element of a post-processor template: a special token (one or more
// ids) or sequence A / B, each with its type id.
struct TemplatePiece {
  enum Kind : uint8_t { Special = 0, SequenceA = 1, SequenceB = 2 };
  Kind kind = Special;
  std::string name;            // Special: the token's name in the template
  std::vector<int32_t> ids;    // Special: its ids
  int32_t type_id = 0;
};

struct BpeConfig {
  // The model: its vocabulary (token, id) and merges in rank order.
  std::vector<std::pair<std::string, int32_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
  std::optional<std::string> unk_token;
  std::string continuing_subword_prefix;  // empty: none
  std::string end_of_word_suffix;         // empty: none
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;

  std::vector<BpeNormalizer> normalizers;      // applied in order
  std::vector<BpePreTokenizer> pre_tokenizers; // applied in order; none: the whole text
  std::vector<AddedToken> added;
  // Post-processor; both empty: none (no special tokens added).
  std::vector<TemplatePiece> single, pair;
  std::string pad_token;  // from "padding", else [PAD] / <pad> when present
};

class BpeTokenizer final : public Tokenizer {
 public:
  BpeTokenizer() = default;
  // Throws spinel::Error for an inconsistent config (a merge or special
  // token outside the vocabulary, ids that are not dense, ...).
  explicit BpeTokenizer(BpeConfig config);

  // An HF tokenizer.json whose model is BPE. Throws spinel::Error naming the
  // file and the feature for anything outside the supported subset:
  //   model        BPE: vocab, merges ("a b" or ["a", "b"]), unk_token,
  //                continuing_subword_prefix, end_of_word_suffix, fuse_unk,
  //                byte_fallback, ignore_merges; dropout must be null or 0
  //   normalizer   null, Lowercase, Strip, or a Sequence of those
  //   pre_tokenizer null, Whitespace, WhitespaceSplit, ByteLevel
  //                (add_prefix_space, use_regex), or a Sequence of those
  //   post_processor null, TemplateProcessing, RobertaProcessing,
  //                BertProcessing, ByteLevel (offsets only), or a Sequence
  //   added_tokens all options (single_word, lstrip, rstrip, normalized)
  //   decoder      any (decoding is not done; it changes no id)
  static BpeTokenizer from_tokenizer_json(const std::string& path);

  const char* kind() const override { return "bpe"; }
  std::string describe() const override;
  std::vector<int32_t> tokenize(std::string_view text) const override;
  Encoding encode(std::string_view a, std::optional<std::string_view> b, size_t max_length,
                  bool stop_early = false) const override;
  size_t vocab_size() const override { return tokens_.size(); }
  int32_t token_id(const std::string& token) const override;
  const std::string& token(int32_t id) const override;
  int32_t cls_id() const override { return cls_id_; }
  int32_t sep_id() const override { return sep_id_; }
  int32_t unk_id() const override { return unk_id_; }
  int32_t pad_id() const override { return pad_id_; }
  const BpeConfig& config() const { return cfg_; }

  void serialize(ByteWriter& w) const override;
  static BpeTokenizer deserialize(ByteReader& r);

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  BpeConfig cfg_;
  std::vector<std::string> tokens_;                   // id -> token (model and added)
  std::unordered_map<std::string, int32_t> all_ids_;  // token -> id (model and added)
  std::unordered_map<std::string, int32_t> model_ids_;  // the model's vocabulary
  std::unordered_map<uint64_t, Merge> merges_;        // (left id, right id) -> merge
  std::vector<std::u32string> added_patterns_;
  int32_t unk_id_ = -1, cls_id_ = -1, sep_id_ = -1, pad_id_ = -1;
  bool byte_level_ = false;     // some pre-tokenizer maps bytes to characters
  bool cut_after_space_ = false;   // stop_early may cut after ASCII whitespace
  bool cut_before_space_ = false;  // ... or before a space after a non-space

  void init();
  std::u32string normalize(std::u32string s) const;
  void pre_tokenize(const std::u32string& text, std::vector<std::string>& words) const;
  void model_word(const std::string& word, std::vector<int32_t>& ids) const;
  std::vector<int32_t> apply_template(const std::vector<TemplatePiece>& tpl,
                                      const std::vector<int32_t>& a,
                                      const std::vector<int32_t>* b,
                                      std::vector<int32_t>* type_ids) const;
};

}  // namespace spinel
