// Text inputs given as files (`spinel run --input`, `convert --calibrate`,
// `tokenize --input`): one input per line.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace spinel {

// Lines of `data`: '\n' ends a line, one '\r' at the end of a line is
// dropped (also on a last line without '\n', which still counts), an empty
// `data` has no lines. Bytes are
// kept as they are (invalid UTF-8 is the tokenizer's to handle).
std::vector<std::string> split_lines(std::string_view data);

// The bytes of a file, a pipe or /dev/stdin (anything readable as a stream,
// unlike model files). Throws spinel::Error naming the path if it cannot be
// read or holds more than max_bytes.
std::string read_text_file(const std::string& path, uint64_t max_bytes);

// The lines of a file, a pipe or /dev/stdin (anything readable as a stream,
// unlike model files). Throws spinel::Error naming the path if it cannot be
// read or holds more than max_bytes.
std::vector<std::string> read_text_lines(const std::string& path, uint64_t max_bytes);

}  // namespace spinel
