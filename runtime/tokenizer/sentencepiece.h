// A SentencePiece .model (BPE or unigram), run by libsentencepiece through
// our shim library in a link namespace of its own (spm_shim/spm_shim.h says
// why). The .model bytes travel inside the .spnl.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/tokenizer/tokenizer.h"

namespace spinel {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer() = default;
  // From the serialized ModelProto (a .model file's bytes); `name` is used in
  // messages. Throws spinel::Error when the shim cannot be loaded or
  // SentencePiece refuses the model.
  SentencePieceTokenizer(std::string model_bytes, const std::string& name);
  static SentencePieceTokenizer from_file(const std::string& path);

  const char* kind() const override { return "sentencepiece"; }
  std::string describe() const override;
  // SentencePiece's own normalisation and segmentation (sp.encode()).
  std::vector<int32_t> tokenize(std::string_view text) const override;
  // The special tokens around it: [CLS] a [SEP] (b [SEP]) when the model has
  // [CLS] and [SEP] pieces (ALBERT), else <s> a </s> (b </s>) with the
  // model's bos/eos when it has both, else none.
  Encoding encode(std::string_view a, std::optional<std::string_view> b, size_t max_length,
                  bool stop_early = false) const override;
  size_t vocab_size() const override { return pieces_.size(); }
  int32_t token_id(const std::string& token) const override;
  const std::string& token(int32_t id) const override;
  int32_t cls_id() const override { return cls_id_; }
  int32_t sep_id() const override { return sep_id_; }
  int32_t unk_id() const override { return unk_id_; }
  int32_t pad_id() const override { return pad_id_; }
  // "bpe", "unigram", "word", "char" (from the model's trainer spec), or "".
  const std::string& model_type() const { return model_type_; }

  void serialize(ByteWriter& w) const override;
  static SentencePieceTokenizer deserialize(ByteReader& r);

  // Where the shim library is looked for, in order (for messages and tests).
  static std::vector<std::string> shim_candidates();

 private:
  struct Handle;
  std::shared_ptr<Handle> h_;
  std::string model_;  // the .model bytes
  std::vector<std::string> pieces_;
  std::unordered_map<std::string, int32_t> index_;
  std::string model_type_;
  int32_t unk_id_ = -1, cls_id_ = -1, sep_id_ = -1, pad_id_ = -1;
  bool pair_type_ids_ = false;  // [CLS] style: b gets type id 1
};

}  // namespace spinel
