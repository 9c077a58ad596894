// The WordPiece tokenizer on arbitrary bytes: tokenize() and encode() of one
// text or a pair, checked against their contract (fuzz_common.h).
//
// Input: byte 0 picks the tokenizer variant (bits 0-1) and pair mode (bit 2);
// byte 1 is max_length (0 = no limit); byte 2 where the pair is split; the
// rest is the text.
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spinel::fuzz;
  if (size < 3) return 0;
  const auto& variants = tokenizer_variants();
  const auto& tok = variants[data[0] % variants.size()];
  const bool pair = data[0] & 4;
  const size_t max_len = data[1];
  const std::string_view text(reinterpret_cast<const char*>(data + 3), size - 3);
  if (!pair) {
    check_encode(tok, text, std::nullopt, max_len);
  } else {
    const size_t cut = text.size() * data[2] / 256;
    check_encode(tok, text.substr(0, cut), text.substr(cut), max_len);
  }
  return 0;
}
