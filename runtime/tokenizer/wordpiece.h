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
#include <vector>

#include "runtime/bytes.h"

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

struct Encoding {
  std::vector<int32_t> ids;
  std::vector<int32_t> type_ids;
  bool truncated = false;      // true when tokens were dropped to fit max_length
  size_t untruncated_length = 0;  // length (with specials) before truncation
};

class WordPieceTokenizer {
 public:
  WordPieceTokenizer() = default;
  WordPieceTokenizer(std::vector<std::string> vocab, WordPieceOptions opts);

  // vocab.txt: one token per line, id = line number.
  static WordPieceTokenizer from_vocab_file(const std::string& path, const WordPieceOptions& opts);
  // HF tokenizer.json with "model": {"type": "WordPiece"}; the normalizer
  // options come from the file's "normalizer" section. Throws spinel::Error
  // naming the file and the unsupported part for anything else.
  static WordPieceTokenizer from_tokenizer_json(const std::string& path);

  // Word pieces of a text, without special tokens.
  std::vector<int32_t> tokenize(std::string_view text) const;
  // [CLS] a [SEP] (b [SEP]); truncated to max_length (0 = no limit) by
  // removing tokens from the end of the longest segment, like HF's
  // "longest_first" strategy.
  Encoding encode(std::string_view a, std::optional<std::string_view> b, size_t max_length) const;

  int32_t token_id(const std::string& token) const;  // -1 when absent
  const std::string& token(int32_t id) const;
  size_t vocab_size() const { return vocab_.size(); }
  const WordPieceOptions& options() const { return opts_; }
  int32_t cls_id() const { return cls_id_; }
  int32_t sep_id() const { return sep_id_; }
  int32_t unk_id() const { return unk_id_; }
  int32_t pad_id() const { return pad_id_; }

  void serialize(ByteWriter& w) const;
  static WordPieceTokenizer deserialize(ByteReader& r);

 private:
  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int32_t> index_;
  WordPieceOptions opts_;
  int32_t cls_id_ = -1, sep_id_ = -1, unk_id_ = -1, pad_id_ = -1;
};

}  // namespace spinel
