// BERT WordPiece tokenizer: the normaliser and pre-tokeniser of BERT
// (clean text, CJK spacing, lower-casing and accent stripping, punctuation
// split) followed by greedy longest-match WordPiece with a "##" prefix.
// Loaded from a vocab.txt or from an HF tokenizer.json whose model is
// WordPiece, and carried inside the .spnl file.
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

struct WordPieceOptions {
  bool clean_text = true;
  bool handle_chinese_chars = true;
  bool lowercase = true;
  // Strip accents; HF's default (unset) follows `lowercase`.
  bool strip_accents = true;
  std::string continuing_prefix = "##";
  int max_input_chars_per_word = 100;
  std::string unk_token = "[UNK]";
  std::string cls_token = "[CLS]";
  std::string sep_token = "[SEP]";
  std::string pad_token = "[PAD]";
};

class WordPieceTokenizer final : public Tokenizer {
 public:
  WordPieceTokenizer() = default;
  // The special tokens of opts ([CLS], [SEP], [UNK], [PAD], and [MASK] when
  // in the vocabulary) become added tokens, as in HF's BertTokenizerFast.
  WordPieceTokenizer(std::vector<std::string> vocab, WordPieceOptions opts);
  WordPieceTokenizer(std::vector<std::string> vocab, WordPieceOptions opts,
                     std::vector<AddedToken> added);

  // vocab.txt: one token per line, id = line number.
  static WordPieceTokenizer from_vocab_file(const std::string& path, const WordPieceOptions& opts);
  // HF tokenizer.json with "model": {"type": "WordPiece"}; the normalizer
  // options come from the file's "normalizer" section. Throws spinel::Error
  // naming the file and the unsupported part for anything else.
  static WordPieceTokenizer from_tokenizer_json(const std::string& path);

  // Word pieces of a text, without special tokens.
  const char* kind() const override { return "wordpiece"; }
  std::string describe() const override;
  std::vector<int32_t> tokenize(std::string_view text) const override;
  // [CLS] a [SEP] (b [SEP]); truncated to max_length (0 = no limit) by
  // removing tokens from the end of the longest segment, like HF's
  // "longest_first" strategy.
  // stop_early: for a single text, stop tokenizing once it is known to
  // exceed max_length, so a huge input costs memory and time in proportion
  // to max_length, not to its size (the text is cut only after ASCII
  // whitespace, which never lies inside a token; a run of more than 16 KiB
  // without any is still read whole).
  Encoding encode(std::string_view a, std::optional<std::string_view> b, size_t max_length,
                  bool stop_early = false) const override;

  int32_t token_id(const std::string& token) const override;  // -1 when absent
  const std::string& token(int32_t id) const override;
  size_t vocab_size() const override { return vocab_.size(); }
  const WordPieceOptions& options() const { return opts_; }
  int32_t cls_id() const override { return cls_id_; }
  int32_t sep_id() const override { return sep_id_; }
  int32_t unk_id() const override { return unk_id_; }
  int32_t pad_id() const override { return pad_id_; }  // -1 when the vocabulary has no pad token
  const std::vector<AddedToken>& added_tokens() const { return added_; }

  void serialize(ByteWriter& w) const override;
  static WordPieceTokenizer deserialize(ByteReader& r);

 private:
  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int32_t> index_;
  WordPieceOptions opts_;
  std::vector<AddedToken> added_;
  // Code points of each added token as matched: raw, or normalised when
  // the token is `normalized`.
  std::vector<std::u32string> added_patterns_;

  void init();  // builds the index and checks ids; throws spinel::Error
  void split_added(const std::u32string& text, bool normalized_pass,
                   std::vector<std::pair<std::u32string, int32_t>>& out) const;
  void word_pieces(const std::u32string& normalized, std::vector<int32_t>& ids) const;
  int32_t cls_id_ = -1, sep_id_ = -1, unk_id_ = -1, pad_id_ = -1;
};

}  // namespace spinel
