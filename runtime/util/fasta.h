// FASTA files (`spinel run --fasta`), read as untrusted input.
//
// A record is a header line ">name description" followed by sequence lines.
// Accepted: several records, sequences wrapped over any number of lines,
// blank lines anywhere, CRLF or LF line ends, a UTF-8 byte order mark,
// spaces and tabs inside sequence lines (dropped), lower case (kept, or
// upper-cased when FastaOptions::uppercase: DNABERT-2's vocabulary is upper
// case), N and the other IUPAC nucleotide codes (ACGTU RYKMSWBDHV N).
// Not accepted: ';' comment lines, gap ('-', '.') or stop ('*') symbols,
// amino-acid-only letters (E F I J L O P Q X Z).
//
// Errors name the source, the line (1-based) and the record. Two kinds:
//  - bad record (skipped with a warning under OnBadRecord::Skip, an error
//    under OnBadRecord::Error): a header without a name or not valid UTF-8,
//    a record without sequence, a character that is not a nucleotide letter,
//    a record over FastaOptions::max_record_bytes letters;
//  - bad file (always an error): a NUL byte (a binary file), sequence lines
//    before the first header, no record at all.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace spinel {

struct FastaRecord {
  std::string name;         // the header up to the first ASCII white space
  std::string description;  // the rest of the header, white space around it removed
  std::string sequence;     // the letters, lines joined, blanks removed
  int64_t line = 0;         // line of the header (1-based)
  int64_t ordinal = 0;      // position in the file among all records, bad ones included (0-based)
};

enum class OnBadRecord { Error, Skip };

struct FastaOptions {
  OnBadRecord on_bad_record = OnBadRecord::Error;
  // Letters in one record above which it is a bad record.
  uint64_t max_record_bytes = uint64_t{1} << 24;
  // Upper-case the sequence letters (a -> A); false keeps them as written.
  bool uppercase = true;
  // Called with each skipped record's message (OnBadRecord::Skip); may be empty.
  std::function<void(const std::string&)> warn;
};

// The records of `data`; `source` names it in messages (a path). Throws
// spinel::Error for a bad file, and for a bad record under OnBadRecord::Error.
std::vector<FastaRecord> parse_fasta(std::string_view data, const std::string& source,
                                     const FastaOptions& opts = {});

// parse_fasta on the bytes of a file, a pipe or /dev/stdin; throws
// spinel::Error naming the path if it cannot be read or holds more than
// max_file_bytes.
std::vector<FastaRecord> read_fasta(const std::string& path, uint64_t max_file_bytes,
                                    const FastaOptions& opts = {});

// True for the letters a sequence line may hold (IUPAC nucleotide codes,
// either case).
bool is_nucleotide_letter(char c);

}  // namespace spinel
