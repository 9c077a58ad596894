// Loading a tokenizer by its form, and the pieces every kind shares.
#include "runtime/tokenizer/tokenizer.h"

#include <algorithm>

#include "runtime/error.h"
#include "runtime/tokenizer/bpe.h"
#include "runtime/tokenizer/sentencepiece.h"
#include "runtime/tokenizer/wordpiece.h"
#include "runtime/util/json.h"

namespace spinel {
namespace {

bool ends_with(const std::string& s, const char* suffix) {
  const std::string x(suffix);
  return s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
}

}  // namespace

const Tokenizer& AnyTokenizer::get() const {
  if (!p_) fail("no tokenizer loaded");
  return *p_;
}

AnyTokenizer load_tokenizer_file(const std::string& path, const TokenizerFileOptions& opts) {
  if (ends_with(path, ".json")) {
    std::string type;
    {
      const json::Value doc = json::parse_file(path);
      const json::Value* model = doc.is_object() ? doc.find("model") : nullptr;
      const json::Value* t = model && model->is_object() ? model->find("type") : nullptr;
      if (t && t->is_string()) type = t->str;
    }
    if (type == "BPE") return BpeTokenizer::from_tokenizer_json(path);
    if (type == "WordPiece" || type.empty()) return WordPieceTokenizer::from_tokenizer_json(path);
    fail(path, ": model type is \"", type,
         "\"; spinel reads tokenizer.json files with a WordPiece or BPE model (and SentencePiece "
         ".model files)");
  }
  if (ends_with(path, ".model")) return SentencePieceTokenizer::from_file(path);
  WordPieceOptions wo;
  wo.lowercase = wo.strip_accents = opts.lowercase;
  return WordPieceTokenizer::from_vocab_file(path, wo);
}

void truncate_longest_first(std::vector<int32_t>& a, std::vector<int32_t>* b, size_t budget) {
  if (!b) {
    if (a.size() > budget) a.resize(budget);
    return;
  }
  // The shorter sequence keeps everything that fits (up to half the budget
  // when both are long); the longer one gets the rest, and the extra token
  // of an odd budget.
  size_t n1 = a.size(), n2 = b->size();
  const bool swap = n1 > n2;
  if (swap) std::swap(n1, n2);
  n2 = n1 > budget ? n1 : std::max(n1, budget - n1);
  if (n1 + n2 > budget) {
    n1 = budget / 2;
    n2 = n1 + budget % 2;
  }
  if (swap) std::swap(n1, n2);
  a.resize(std::min(a.size(), n1));
  b->resize(std::min(b->size(), n2));
}

}  // namespace spinel
