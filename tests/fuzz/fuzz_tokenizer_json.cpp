// The HF tokenizer.json loaders, WordPiece and BPE (and the JSON parser under
// them), on arbitrary bytes. A tokenizer they accept must encode within its
// contract and survive the round trip through its binary .spnl form unchanged.
#include <cstddef>
#include <cstdint>

#include "runtime/tokenizer/bpe.h"
#include "tests/fuzz/fuzz_common.h"

namespace {

const char* const kSamples[] = {
    "",
    "Hello, world!",
    "[CLS] un##wanted [MASK] running\t[SEP]",
    "Café STRASSE über naïve Ångström 中国語 한국 😀",
    "\x01\x7f\xc2\x80 \xe2\x80\x8b\xff",
    "ACGTNNACGTacgtRYKM ACGT",
    "  don't  stop <mask>\t\xe3\x80\x80 I'm 42\xc2\xbd",
};

// A BPE tokenizer: ids in the vocabulary, encode within max_length with
// a' a prefix of tokenize(a), the same ids after serialize/deserialize.
void check_bpe(const spinel::BpeTokenizer& tok) {
  using namespace spinel::fuzz;
  size_t specials = 0;
  for (const auto& p : tok.config().single)
    if (p.kind == spinel::TemplatePiece::Special) specials += p.ids.size();
  for (const char* s : kSamples) {
    std::vector<int32_t> ids;
    try {
      ids = tok.tokenize(s);
    } catch (const spinel::Error& e) {
      finding(std::string("BPE tokenize threw: ") + e.what());
    }
    for (const int32_t id : ids)
      if (id < 0 || static_cast<size_t>(id) >= tok.vocab_size()) finding("BPE id outside the vocabulary");
    for (const size_t max_len : {size_t{0}, size_t{3}, size_t{8}}) {
      spinel::Encoding e;
      try {
        e = tok.encode(s, std::nullopt, max_len, max_len == 8);
      } catch (const spinel::Error&) {
        if (max_len > 0 && max_len < specials) continue;  // documented refusal
        finding("BPE encode threw");
      }
      if (max_len > 0 && e.ids.size() > max_len) finding("BPE encode exceeds max_length");
      if (e.type_ids.size() != e.ids.size()) finding("BPE encode: type_ids and ids differ in length");
      if (max_len == 0 && e.ids.size() != ids.size() + specials) finding("BPE encode: wrong length");
      for (const int32_t id : e.ids)
        if (id < 0 || static_cast<size_t>(id) >= tok.vocab_size()) finding("BPE encode id outside the vocabulary");
    }
    try {
      tok.encode(s, std::string_view("pair ACGT"), 6);
    } catch (const spinel::Error&) {
    }
  }
  spinel::ByteWriter w;
  tok.serialize(w);
  spinel::ByteReader r(w.bytes().data(), w.bytes().size(), "tokenizer");
  spinel::BpeTokenizer back;
  try {
    back = spinel::BpeTokenizer::deserialize(r);
  } catch (const spinel::Error& e) {
    finding(std::string("a loaded BPE tokenizer does not deserialize: ") + e.what());
  }
  if (r.remaining() != 0) finding("BPE deserialize left bytes unread");
  if (back.vocab_size() != tok.vocab_size() || back.cls_id() != tok.cls_id() ||
      back.sep_id() != tok.sep_id() || back.unk_id() != tok.unk_id() || back.pad_id() != tok.pad_id())
    finding("BPE tokenizer changed in the serialize/deserialize round trip");
  for (const char* s : kSamples)
    if (back.tokenize(s) != tok.tokenize(s))
      finding(std::string("round-tripped BPE tokenizer tokenizes differently: ") + s);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spinel::fuzz;
  const std::string path = write_scratch("tokenizer.json", data, size);
  // Both loaders see every input: each refuses the other's model type.
  try {
    check_bpe(spinel::BpeTokenizer::from_tokenizer_json(path));
  } catch (const spinel::Error&) {
  }
  spinel::WordPieceTokenizer tok;
  try {
    tok = spinel::WordPieceTokenizer::from_tokenizer_json(path);
  } catch (const spinel::Error&) {
    return 0;
  }
  for (const char* s : kSamples) {
    check_encode(tok, s, std::nullopt, 0);
    check_encode(tok, s, std::nullopt, 8);
    check_encode(tok, s, std::string_view("pair text"), 5);
  }

  spinel::ByteWriter w;
  tok.serialize(w);
  spinel::ByteReader r(w.bytes().data(), w.bytes().size(), "tokenizer");
  spinel::WordPieceTokenizer back;
  try {
    back = spinel::WordPieceTokenizer::deserialize(r);
  } catch (const spinel::Error& e) {
    finding(std::string("a loaded tokenizer does not deserialize: ") + e.what());
  }
  if (r.remaining() != 0) finding("tokenizer deserialize left bytes unread");
  if (back.vocab_size() != tok.vocab_size() || back.cls_id() != tok.cls_id() ||
      back.sep_id() != tok.sep_id() || back.unk_id() != tok.unk_id() ||
      back.pad_id() != tok.pad_id() || back.added_tokens().size() != tok.added_tokens().size())
    finding("tokenizer changed in the serialize/deserialize round trip");
  for (const char* s : kSamples)
    if (back.tokenize(s) != tok.tokenize(s))
      finding(std::string("round-tripped tokenizer tokenizes differently: ") + s);
  return 0;
}
