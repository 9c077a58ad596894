// The `spinel run --input` reader: split_lines() on arbitrary bytes, the same
// bytes read back from a file by read_text_lines(), and every line encoded
// with max_length 128 as `spinel run` does.
#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/util/text_input.h"
#include "tests/fuzz/fuzz_common.h"

namespace {

// The reference reading of the contract in text_input.h: '\n' ends a line and
// a '\r' before it is dropped; a last line without '\n' counts (split_lines
// also drops a '\r' ending it, which the tokenizer would treat as a space).
std::vector<std::string> expected_lines(std::string_view s) {
  std::vector<std::string> out;
  std::string cur;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\n') {
      if (!cur.empty() && cur.back() == '\r') cur.pop_back();
      out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur.push_back(s[i]);
    }
  }
  if (!cur.empty()) {
    if (cur.back() == '\r') cur.pop_back();
    out.push_back(std::move(cur));
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spinel::fuzz;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const std::vector<std::string> lines = spinel::split_lines(in);
  if (lines != expected_lines(in)) finding("split_lines differs from its contract");

  // Joining the lines gives the input back, without the dropped '\r's and the
  // final '\n'.
  std::string joined, stripped;
  for (size_t i = 0; i < lines.size(); ++i) joined += (i ? "\n" : "") + lines[i];
  for (size_t i = 0; i < size; ++i)
    if (in[i] != '\r' || (i + 1 < size && in[i + 1] != '\n')) stripped.push_back(in[i]);
  if (size > 0 && in.back() == '\n') stripped.pop_back();
  if (joined != stripped) finding("lines joined with '\\n' do not give the input back");

  // The file reader must agree, and refuse a file one byte over its limit.
  const std::string path = write_scratch("input.txt", data, size);
  try {
    if (spinel::read_text_lines(path, size) != lines)
      finding("read_text_lines differs from split_lines");
  } catch (const spinel::Error& e) {
    finding(std::string("read_text_lines threw within its limit: ") + e.what());
  }
  if (size > 0) {
    try {
      spinel::read_text_lines(path, size - 1);
      finding("read_text_lines accepted a file over its limit");
    } catch (const spinel::Error&) {
    }
  }

  const auto& tok = small_tokenizer();
  for (const std::string& line : lines) check_encode(tok, line, std::nullopt, 128);
  return 0;
}
