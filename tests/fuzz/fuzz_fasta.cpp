// The `spinel run --fasta` reader: arbitrary bytes to parse_fasta under both
// bad-record policies, with and without upper-casing, the same bytes as a
// file to read_fasta, each record tokenized and cut into --chunk windows.
#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/error.h"
#include "runtime/util/chunk.h"
#include "runtime/util/fasta.h"
#include "tests/fuzz/fuzz_common.h"

namespace {

using spinel::FastaOptions;
using spinel::FastaRecord;
using spinel::fuzz::finding;

bool same(const std::vector<FastaRecord>& a, const std::vector<FastaRecord>& b, bool fold_case) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].name != b[i].name || a[i].description != b[i].description || a[i].line != b[i].line ||
        a[i].ordinal != b[i].ordinal || a[i].sequence.size() != b[i].sequence.size())
      return false;
    for (size_t k = 0; k < a[i].sequence.size(); ++k) {
      char x = a[i].sequence[k], y = b[i].sequence[k];
      if (fold_case) {
        if (x >= 'a' && x <= 'z') x = static_cast<char>(x - 32);
        if (y >= 'a' && y <= 'z') y = static_cast<char>(y - 32);
      }
      if (x != y) return false;
    }
  }
  return true;
}

// What every record that comes out must be.
void check_records(const std::vector<FastaRecord>& recs, const FastaOptions& o, int64_t lines) {
  int64_t last_line = 0, last_ordinal = -1;
  for (const FastaRecord& r : recs) {
    if (r.name.empty()) finding("a record without a name");
    if (r.name.find_first_of(" \t\r\n\v\f") != std::string::npos) finding("a name holds a blank");
    if (r.description.find('\n') != std::string::npos) finding("a description holds a newline");
    if (r.sequence.empty()) finding("a record without sequence");
    if (r.sequence.size() > o.max_record_bytes) finding("a record over the size limit");
    for (char c : r.sequence) {
      if (!spinel::is_nucleotide_letter(c)) finding("a sequence holds a letter that is not a nucleotide");
      if (o.uppercase && c >= 'a' && c <= 'z') finding("a lower-case letter after upper-casing");
    }
    if (r.line <= last_line || r.line > lines) finding("header lines out of order or range");
    if (r.ordinal <= last_ordinal) finding("ordinals out of order");
    last_line = r.line;
    last_ordinal = r.ordinal;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  int64_t lines = 1;
  for (char c : in) lines += c == '\n';

  FastaOptions strict;
  // A small limit, chosen by the input, so that the size check is reached.
  strict.max_record_bytes = size > 0 ? 1 + data[size - 1] % 97 : 16;
  FastaOptions skip = strict;
  skip.on_bad_record = spinel::OnBadRecord::Skip;
  size_t warnings = 0;
  skip.warn = [&](const std::string& m) {
    if (m.empty()) finding("an empty warning");
    ++warnings;
  };

  std::vector<FastaRecord> skipped;
  bool file_ok = true;
  try {
    skipped = spinel::parse_fasta(in, "fuzz.fa", skip);
  } catch (const spinel::Error& e) {
    file_ok = false;
    if (std::string(e.what()).find("fuzz.fa") == std::string::npos) finding("an error without the source name");
  }
  if (file_ok) check_records(skipped, skip, lines);

  // Error policy: an error, or exactly the records the skip policy kept
  // without any warning.
  try {
    const auto recs = spinel::parse_fasta(in, "fuzz.fa", strict);
    if (!file_ok) finding("the error policy accepted a file the skip policy refused");
    if (warnings != 0 || !same(recs, skipped, false)) finding("error and skip policies disagree on a good file");
  } catch (const spinel::Error& e) {
    if (file_ok && warnings == 0) finding(std::string("the error policy failed where nothing was skipped: ") + e.what());
    if (std::string(e.what()).find("fuzz.fa") == std::string::npos) finding("an error without the source name");
  }

  // Case kept: the same records up to case.
  FastaOptions keep = skip;
  keep.uppercase = false;
  keep.warn = nullptr;
  try {
    const auto recs = spinel::parse_fasta(in, "fuzz.fa", keep);
    if (!file_ok || !same(recs, skipped, true)) finding("keeping the case changed which records were read");
  } catch (const spinel::Error&) {
    if (file_ok) finding("keeping the case made a good file an error");
  }

  // The file reader agrees.
  const std::string path = spinel::fuzz::write_scratch("in.fa", data, size);
  try {
    FastaOptions quiet = skip;
    quiet.warn = nullptr;
    const auto recs = spinel::read_fasta(path, size, quiet);
    if (!file_ok || !same(recs, skipped, false)) finding("read_fasta differs from parse_fasta");
  } catch (const spinel::Error&) {
    if (file_ok) finding("read_fasta refused what parse_fasta read");
  }

  // Tokenize each record and cut it into windows as `spinel run --chunk` does.
  const auto& tok = spinel::fuzz::small_tokenizer();
  for (const FastaRecord& r : skipped) {
    const auto ids = spinel::fuzz::tokenize_checked(tok, r.sequence);
    const int64_t window = 3 + static_cast<int64_t>(r.sequence.size() % 13);
    const int64_t overlap = static_cast<int64_t>(r.name.size()) % (window - 2);
    const auto windows = spinel::chunk_sequence(ids, tok.cls_id(), tok.sep_id(), window, overlap);
    size_t covered = 0;
    for (const auto& w : windows) {
      if (static_cast<int64_t>(w.ids.size()) > window || w.ids.size() < 2) finding("a window over its size");
      if (w.ids.front() != tok.cls_id() || w.ids.back() != tok.sep_id()) finding("a window without its specials");
      covered += w.ids.size() - 2;
    }
    if (covered != ids.size() + (windows.size() - 1) * static_cast<size_t>(overlap))
      finding("windows do not cover the sequence with the overlap asked for");
  }
  return 0;
}
