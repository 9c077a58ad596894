#include "runtime/util/fasta.h"

#include <cstring>

#include "runtime/error.h"
#include "runtime/util/text_input.h"

namespace spinel {
namespace {

constexpr char kLetters[] = "ACGTURYKMSWBDHVN";

// Offset of the first byte that does not belong to a well-formed UTF-8
// sequence (overlong forms, surrogates and code points above U+10FFFF
// included), or npos.
size_t first_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (i + len > n) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return i;
    i += len;
  }
  return std::string_view::npos;
}

int64_t line_of(std::string_view data, size_t offset) {
  int64_t line = 1;
  for (size_t i = 0; i < offset && i < data.size(); ++i) line += data[i] == '\n';
  return line;
}

std::string show_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (u >= 0x21 && u < 0x7F) return std::string("'") + c + "'";
  static const char* hex = "0123456789ABCDEF";
  if (u == '\r') return "a carriage return ('\\r')";
  if (u < 0x80) return std::string("byte 0x") + hex[u >> 4] + hex[u & 15];
  return "a non-ASCII character";
}

// Blanks dropped from sequence lines.
bool is_blank(char c) { return c == ' ' || c == '\t'; }
// What ends a header's name (ASCII white space; a '\r' can only be inside a
// line here, the one ending it is already gone).
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

class Parser {
 public:
  Parser(std::string_view data, const std::string& source, const FastaOptions& opts)
      : data_(data), source_(source), opts_(opts) {}

  std::vector<FastaRecord> run() {
    if (const void* nul = std::memchr(data_.data(), '\0', data_.size())) {
      const size_t at = static_cast<const char*>(nul) - data_.data();
      fail(source_, " is a binary file, not FASTA: a NUL byte on line ", line_of(data_, at));
    }
    if (const size_t bad = first_invalid_utf8(data_); bad != std::string_view::npos)
      fail(source_, " is a binary file or not UTF-8 text, not FASTA: invalid UTF-8 on line ",
           line_of(data_, bad));
    size_t pos = 0;
    if (data_.substr(0, 3) == "\xEF\xBB\xBF") pos = 3;  // byte order mark
    while (pos < data_.size()) {
      size_t end = data_.find('\n', pos);
      if (end == std::string_view::npos) end = data_.size();
      std::string_view line = data_.substr(pos, end - pos);
      pos = end + 1;
      ++line_no_;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.find_first_not_of(" \t") == std::string_view::npos) continue;  // blank
      if (line[0] == '>') {
        finish();
        start(line.substr(1));
      } else {
        sequence_line(line);
      }
    }
    finish();
    if (seen_ == 0) fail(source_, " holds no FASTA record (no header line starting with '>')");
    return std::move(out_);
  }

 private:
  std::string_view data_;
  const std::string& source_;
  const FastaOptions& opts_;
  std::vector<FastaRecord> out_;
  FastaRecord rec_;
  bool open_ = false;  // a record has started
  std::string bad_;    // why the open record is bad ("" = it is not)
  int64_t bad_line_ = 0;
  int64_t line_no_ = 0;
  int64_t seen_ = 0;

  void start(std::string_view header) {
    open_ = true;
    bad_.clear();
    rec_ = FastaRecord{};
    rec_.line = line_no_;
    rec_.ordinal = seen_++;
    size_t b = 0;
    while (b < header.size() && is_space(header[b])) ++b;
    size_t e = b;
    while (e < header.size() && !is_space(header[e])) ++e;
    rec_.name = std::string(header.substr(b, e - b));
    while (e < header.size() && is_space(header[e])) ++e;
    std::string_view desc = header.substr(e);
    while (!desc.empty() && is_space(desc.back())) desc.remove_suffix(1);
    rec_.description = std::string(desc);
    if (rec_.name.empty()) mark_bad("the header has no name after '>'");
  }

  void mark_bad(std::string why) {
    if (!bad_.empty()) return;
    bad_ = std::move(why);
    bad_line_ = line_no_;
    rec_.sequence.clear();
    rec_.sequence.shrink_to_fit();
  }

  void sequence_line(std::string_view line) {
    if (!open_)
      fail(source_, " line ", line_no_,
           ": sequence before the first header line (a FASTA record starts with '>name')");
    if (!bad_.empty()) return;  // the rest of a bad record is not read
    for (size_t i = 0; i < line.size(); ++i) {
      char c = line[i];
      if (is_blank(c)) continue;
      if (!is_nucleotide_letter(c)) {
        mark_bad(show_char(c) + " in column " + std::to_string(i + 1) +
                 " is not a nucleotide letter (IUPAC codes " + kLetters + ", either case)");
        return;
      }
      if (rec_.sequence.size() >= opts_.max_record_bytes) {
        mark_bad("the sequence is longer than the limit of " + std::to_string(opts_.max_record_bytes) +
                 " letters");
        return;
      }
      if (opts_.uppercase && c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
      rec_.sequence.push_back(c);
    }
  }

  void finish() {
    if (!open_) return;
    open_ = false;
    if (bad_.empty() && rec_.sequence.empty()) {
      bad_ = "the record has no sequence";
      bad_line_ = rec_.line;
    }
    if (bad_.empty()) {
      out_.push_back(std::move(rec_));
      return;
    }
    const std::string where = source_ + " line " + std::to_string(bad_line_) + ": record '" +
                              rec_.name + "' (header on line " + std::to_string(rec_.line) + ")";
    if (opts_.on_bad_record == OnBadRecord::Error) fail(where, ": ", bad_);
    if (opts_.warn) opts_.warn(printable(where + " skipped: " + bad_));
  }
};

}  // namespace

bool is_nucleotide_letter(char c) {
  if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return c != '\0' && std::strchr(kLetters, c) != nullptr;
}

std::vector<FastaRecord> parse_fasta(std::string_view data, const std::string& source,
                                     const FastaOptions& opts) {
  return Parser(data, source, opts).run();
}

std::vector<FastaRecord> read_fasta(const std::string& path, uint64_t max_file_bytes,
                                    const FastaOptions& opts) {
  const std::string data = read_text_file(path, max_file_bytes);
  return parse_fasta(data, path, opts);
}

}  // namespace spinel
