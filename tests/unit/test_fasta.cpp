// The FASTA reader (runtime/util/fasta.h) and the chunking helpers
// (runtime/util/chunk.h) behind `spinel run --fasta --chunk`.
#include <doctest/doctest.h>

#include <cmath>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "runtime/util/chunk.h"
#include "runtime/util/fasta.h"
#include "tests/unit/tiny_model.h"

using namespace spinel;

namespace {

std::string error_of(std::string_view data, const FastaOptions& opts = {}) {
  try {
    parse_fasta(data, "t.fa", opts);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("fasta: records, wrapping, blank lines, CRLF, case, IUPAC") {
  const std::string data =
      "\xEF\xBB\xBF>seq1 first record\r\n"
      "ACGTacgt\r\n"
      "\r\n"
      "NNRYkm\n"
      ">seq2\n"
      "\n"
      "  gg tt\t\n"
      "ACGU\n"
      "\n"
      ">seq3\tdesc with  spaces  \n"
      "A";  // no final newline
  const auto recs = parse_fasta(data, "t.fa");
  REQUIRE(recs.size() == 3);
  CHECK(recs[0].name == "seq1");
  CHECK(recs[0].description == "first record");
  CHECK(recs[0].sequence == "ACGTACGTNNRYKM");
  CHECK(recs[0].line == 1);
  CHECK(recs[1].name == "seq2");
  CHECK(recs[1].description.empty());
  CHECK(recs[1].sequence == "GGTTACGU");
  CHECK(recs[1].line == 5);
  CHECK(recs[2].description == "desc with  spaces");
  CHECK(recs[2].sequence == "A");
  CHECK(recs[2].ordinal == 2);

  const auto odd = parse_fasta(">a\rb\vc \f\nAC\n", "t.fa");  // a '\r' inside a header line ends the name
  CHECK(odd[0].name == "a");
  CHECK(odd[0].description == "b\vc");

  FastaOptions keep;
  keep.uppercase = false;
  CHECK(parse_fasta(data, "t.fa", keep)[0].sequence == "ACGTacgtNNRYkm");
}

TEST_CASE("fasta: every IUPAC nucleotide letter, nothing else") {
  for (int c = 0; c < 256; ++c) {
    const char ch = static_cast<char>(c);
    const bool want = std::string("ACGTURYKMSWBDHVNacgturykmswbdhvn").find(ch) != std::string::npos && c != 0;
    CHECK_MESSAGE(is_nucleotide_letter(ch) == want, "byte ", c);
  }
}

TEST_CASE("fasta: bad files are errors with the line") {
  CHECK(contains(error_of("ACGT\n>a\nACGT\n"), "t.fa line 1: sequence before the first header"));
  CHECK(contains(error_of("\n\nACGT\n"), "line 3"));
  CHECK(contains(error_of(""), "no FASTA record"));
  CHECK(contains(error_of("\n \n"), "no FASTA record"));
  CHECK(contains(error_of(std::string(">a\nAC\nG\0T\n", 11)), "binary file"));
  CHECK(contains(error_of(std::string(">a\nAC\nG\0T\n", 11)), "line 3"));
  CHECK(contains(error_of(">a\nACGT\n>b \xC3\x28\n"), "not UTF-8"));
  CHECK(contains(error_of(">a\nACGT\n>b \xC3\x28\n"), "line 3"));
  CHECK(contains(error_of(">a\xF4\x90\x80\x80\nA\n"), "not UTF-8"));  // above U+10FFFF
  CHECK(contains(error_of(">a\xED\xA0\x80\nA\n"), "not UTF-8"));      // surrogate
  CHECK(error_of(">caf\xC3\xA9 \xE2\x9C\x93\nA\n").empty());          // UTF-8 in a header is fine
  // Even when bad records are skipped.
  FastaOptions skip;
  skip.on_bad_record = OnBadRecord::Skip;
  CHECK(contains(error_of("ACGT\n", skip), "sequence before the first header"));
  CHECK(contains(error_of(std::string(">a\n\0", 4), skip), "binary file"));
}

TEST_CASE("fasta: bad records name the record and the line") {
  std::string e = error_of(">ok\nACGT\n>empty one\n\n>next\nAC\n");
  CHECK(contains(e, "t.fa line 3: record 'empty'"));
  CHECK(contains(e, "no sequence"));
  e = error_of(">ok\nACGT\n>last\n");
  CHECK(contains(e, "record 'last'"));
  CHECK(contains(e, "no sequence"));
  e = error_of(">ok\nACGT\n>prot\nACGT\nACXGT\nAC\n");
  CHECK(contains(e, "t.fa line 5: record 'prot' (header on line 3)"));
  CHECK(contains(e, "'X' in column 3 is not a nucleotide letter"));
  CHECK(contains(error_of(">a\nAC-GT\n"), "'-'"));
  CHECK(contains(error_of(">a\nAC*\n"), "'*'"));
  CHECK(contains(error_of(">a\nAC\rGT\n"), "carriage return"));
  CHECK(contains(error_of(">a\nAC\xC3\xA9GT\n"), "non-ASCII"));
  CHECK(contains(error_of("> \nACGT\n"), "no name"));
  CHECK(contains(error_of(";comment\n>a\nACGT\n"), "sequence before the first header"));

  FastaOptions small;
  small.max_record_bytes = 8;
  CHECK(parse_fasta(">a\nACGT\nACGT\n", "t.fa", small).size() == 1);
  e = error_of(">a\nACGT\nACG T\nA\n", small);
  CHECK(contains(e, "t.fa line 4: record 'a'"));
  CHECK(contains(e, "limit of 8 letters"));
}

TEST_CASE("fasta: --on-bad-record skip keeps the good records and warns") {
  std::vector<std::string> warnings;
  FastaOptions skip;
  skip.on_bad_record = OnBadRecord::Skip;
  skip.max_record_bytes = 10;
  skip.warn = [&](const std::string& m) { warnings.push_back(m); };
  const std::string data =
      ">good1\nACGT\n>empty\n>bad x\nACGT\nACJT\nACGT\n>big\nACGTACGT\nACGTACGT\n>good2\nGG\n>\nAC\n";
  const auto recs = parse_fasta(data, "t.fa", skip);
  REQUIRE(recs.size() == 2);
  CHECK(recs[0].name == "good1");
  CHECK(recs[1].name == "good2");
  CHECK(recs[1].sequence == "GG");
  CHECK(recs[1].ordinal == 4);
  REQUIRE(warnings.size() == 4);
  CHECK(contains(warnings[0], "t.fa line 3: record 'empty' (header on line 3) skipped: the record has no sequence"));
  CHECK(contains(warnings[1], "t.fa line 6: record 'bad'"));
  CHECK(contains(warnings[1], "'J'"));
  CHECK(contains(warnings[2], "record 'big'"));
  CHECK(contains(warnings[2], "limit of 10"));
  CHECK(contains(warnings[3], "no name"));
  // All skipped: no records, no error from the reader (the CLI says so).
  CHECK(parse_fasta(">a\n>b\n", "t.fa", skip).empty());
}

TEST_CASE("fasta: read_fasta reads a file and names it") {
  const std::string dir = testing::temp_dir("fasta");
  const std::string path = dir + "/x.fa";
  {
    std::ofstream f(path, std::ios::binary);
    f << ">r1\nacgt\nAC\n>r2\nGG\n";
  }
  const auto recs = read_fasta(path, 1 << 20);
  REQUIRE(recs.size() == 2);
  CHECK(recs[0].sequence == "ACGTAC");
  try {
    read_fasta(path, 4);
    FAIL("no error over the file limit");
  } catch (const Error& e) {
    CHECK(contains(e.what(), path));
  }
  try {
    read_fasta(dir + "/missing.fa", 1 << 20);
    FAIL("no error for a missing file");
  } catch (const Error& e) {
    CHECK(contains(e.what(), "missing.fa"));
  }
  std::remove(path.c_str());
  rmdir(dir.c_str());
}

TEST_CASE("chunk: spans cover the sequence with the overlap asked for") {
  auto spans = chunk_spans(10, 6, 1);  // 4 content tokens per window, step 3
  REQUIRE(spans.size() == 3);
  CHECK(spans[0].begin == 0);
  CHECK(spans[0].end == 4);
  CHECK(spans[1].begin == 3);
  CHECK(spans[1].end == 7);
  CHECK(spans[2].begin == 6);
  CHECK(spans[2].end == 10);
  spans = chunk_spans(4, 6, 1);
  REQUIRE(spans.size() == 1);
  CHECK(spans[0].end == 4);
  spans = chunk_spans(0, 6, 0);
  REQUIRE(spans.size() == 1);
  CHECK(spans[0].end == 0);
  spans = chunk_spans(11, 6, 0);
  REQUIRE(spans.size() == 3);
  CHECK(spans[2].begin == 8);
  CHECK(spans[2].end == 11);
  CHECK_THROWS_AS(chunk_spans(10, 2, 0), Error);
  CHECK_THROWS_AS(chunk_spans(10, 6, 4), Error);
  CHECK_THROWS_AS(chunk_spans(10, 6, -1), Error);

  // Every n and window: contiguous cover, each window within the limit, the
  // overlap exact between neighbours.
  for (size_t n = 0; n < 40; ++n)
    for (int64_t w = 3; w < 12; ++w)
      for (int64_t o = 0; o < w - 2; ++o) {
        spans = chunk_spans(n, w, o);
        CHECK(spans.front().begin == 0);
        CHECK(spans.back().end == n);
        for (size_t i = 0; i < spans.size(); ++i) {
          CHECK(spans[i].end - spans[i].begin <= static_cast<size_t>(w - 2));
          if (i + 1 < spans.size()) {
            CHECK(spans[i].end - spans[i + 1].begin == static_cast<size_t>(o));
            CHECK(spans[i].end < n);
          }
        }
      }
}

TEST_CASE("chunk: windows get [CLS] and [SEP]") {
  const auto w = chunk_sequence({10, 11, 12, 13, 14}, 2, 3, 5, 1);
  REQUIRE(w.size() == 2);
  CHECK(w[0].ids == std::vector<int32_t>{2, 10, 11, 12, 3});
  CHECK(w[1].ids == std::vector<int32_t>{2, 12, 13, 14, 3});
  CHECK(w[0].type_ids.empty());
  CHECK(chunk_sequence({}, 2, 3, 5, 1)[0].ids == std::vector<int32_t>{2, 3});
}

TEST_CASE("chunk: weighted mean and softmax") {
  const auto m = weighted_mean({{1.f, 2.f}, {3.f, 6.f}}, {1.0, 3.0});
  CHECK(m[0] == doctest::Approx(2.5));
  CHECK(m[1] == doctest::Approx(5.0));
  CHECK(weighted_mean({{0.1f, -7.f}}, {5.0}) == std::vector<float>{0.1f, -7.f});
  CHECK_THROWS_AS(weighted_mean({{1.f}, {1.f, 2.f}}, {1.0, 1.0}), Error);
  CHECK_THROWS_AS(weighted_mean({{1.f}}, {0.0}), Error);
  CHECK_THROWS_AS(weighted_mean({}, {}), Error);

  const auto p = softmax({1000.f, 1001.f, -5.f});  // no overflow
  CHECK(p[0] + p[1] + p[2] == doctest::Approx(1.0));
  CHECK(p[1] == doctest::Approx(1.0 / (1.0 + std::exp(-1.0))).epsilon(1e-6));
  CHECK(softmax({}).empty());
}
