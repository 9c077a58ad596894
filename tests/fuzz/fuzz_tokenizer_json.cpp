// The HF tokenizer.json loader (and the JSON parser under it) on arbitrary
// bytes. A tokenizer it accepts must encode within its contract and survive
// the round trip through its binary .spnl form unchanged.
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/fuzz_common.h"

namespace {

const char* const kSamples[] = {
    "",
    "Hello, world!",
    "[CLS] un##wanted [MASK] running\t[SEP]",
    "Café STRASSE über naïve Ångström 中国語 한국 😀",
    "\x01\x7f\xc2\x80 \xe2\x80\x8b\xff",
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spinel::fuzz;
  const std::string path = write_scratch("tokenizer.json", data, size);
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
