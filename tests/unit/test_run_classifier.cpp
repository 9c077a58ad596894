// A classifier head (a per-sequence graph output "logits", as the DNABERT-2
// module imports it) through the session and through `spinel run`: logits,
// their softmax, --fasta and --chunk on a tiny model whose tokenizer gives one
// token per base. Runs the spinel binary next to this test (or $SPINEL_BIN).
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "runtime/session.h"
#include "runtime/util/chunk.h"
#include "runtime/util/json.h"
#include "tests/unit/tiny_model.h"

using namespace spinel;

namespace {

constexpr int64_t kClasses = 3;

// Tiny BERT (limit 24 tokens) + Pool(Cls) + Linear -> "logits"; the
// vocabulary spells DNA one base per token (A, ##C, ##G, ...), upper case.
std::string write_classifier(const std::string& dir) {
  SpnlWriter w;
  testing::TinySpec spec;
  testing::fill_tiny_model(w, spec);
  const int64_t H = spec.hidden;
  std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]"};
  for (const char* b : {"A", "C", "G", "T", "N"}) vocab.push_back(b);
  for (const char* b : {"A", "C", "G", "T", "N"}) vocab.push_back(std::string("##") + b);
  while (static_cast<int64_t>(vocab.size()) < spec.vocab) vocab.push_back("tok" + std::to_string(vocab.size()));
  WordPieceOptions o;
  o.lowercase = false;
  o.strip_accents = false;
  o.max_input_chars_per_word = 1 << 20;
  w.tokenizer = WordPieceTokenizer(vocab, o);

  std::mt19937 rng(11);
  testing::add_logits_head(w, H, kClasses, rng);
  const std::string path = dir + "/classifier.spnl";
  w.write(path);
  return path;
}

std::string spinel_bin() {
  if (const char* e = std::getenv("SPINEL_BIN"); e && *e) return e;
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  REQUIRE(n > 0);
  std::string self(buf, static_cast<size_t>(n));
  return self.substr(0, self.rfind('/')) + "/spinel";
}

struct Cli {
  int status = -1;
  std::string out, err;
};

Cli run_cli(const std::string& dir, const std::string& args) {
  const std::string bin = spinel_bin();
  REQUIRE_MESSAGE(access(bin.c_str(), X_OK) == 0, bin, " is missing (build the spinel target)");
  const std::string err_path = dir + "/stderr.txt";
  const std::string cmd = "'" + bin + "' run " + args + " 2>'" + err_path + "'";
  Cli r;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p);
  char buf[4096];
  size_t got;
  while ((got = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, got);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  std::ifstream f(err_path);
  std::stringstream ss;
  ss << f.rdbuf();
  r.err = ss.str();
  return r;
}

std::vector<json::Value> json_lines(const Cli& r) {
  INFO(r.err);
  REQUIRE(r.status == 0);
  std::vector<json::Value> rows;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) rows.push_back(json::parse(line, "spinel run output"));
  return rows;
}

std::vector<float> floats(const json::Value& v) {
  REQUIRE(v.is_array());
  std::vector<float> out;
  for (const auto& x : v.arr) out.push_back(static_cast<float>(x.num));
  return out;
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary);
  f << data;
}

// Logits of each sequence run alone in a fresh session.
std::vector<std::vector<float>> logits_of(const std::shared_ptr<const Model>& m, const std::vector<Sequence>& seqs) {
  Session s(m, 1);
  std::vector<std::vector<float>> out;
  for (const Sequence& q : seqs) {
    s.run({q});
    const OutputView o = s.output("logits");
    out.emplace_back(o.row(0), o.row(0) + o.width);
  }
  return out;
}

}  // namespace

TEST_CASE("classifier: session logits are the [CLS] row through the head") {
  const std::string dir = testing::temp_dir("classifier");
  const auto m = Model::load(write_classifier(dir));
  Session s(m, 1);
  const HiddenStates h = s.run({{{2, 4, 10, 11, 3}, {}}, {{2, 6, 3}, {}}});
  const OutputView o = s.output("logits");
  CHECK(o.rows == 2);
  CHECK(o.width == kClasses);
  // The head by hand, from the weights in the file.
  const Graph& g = m->graph();
  const Op& lin = g.ops.back();
  const float* W = m->data<float>(lin.w[slot::kWeight]);
  const float* B = m->data<float>(lin.w[slot::kBias]);
  for (int64_t r = 0; r < 2; ++r) {
    const float* cls = h.row(h.offsets[r]);
    for (int64_t c = 0; c < kClasses; ++c) {
      double acc = B[c];
      for (int64_t k = 0; k < h.width; ++k) acc += double(cls[k]) * W[k * kClasses + c];
      CHECK(o.row(r)[c] == doctest::Approx(acc).epsilon(1e-4));
    }
  }
}

TEST_CASE("spinel run: logits and probabilities for a classifier, from ids, text and FASTA") {
  const std::string dir = testing::temp_dir("classifier-cli");
  const std::string spnl = write_classifier(dir);
  const auto m = Model::load(spnl);

  const auto rows = json_lines(run_cli(dir, "'" + spnl + "' --ids 2,4,10,11,3 --ids 2,6,3 --text ACGGT"));
  REQUIRE(rows.size() == 3);
  // --text inputs come first, then --ids.
  const auto want = logits_of(m, {{{2, 4, 10, 11, 11, 12, 3}, {}}, {{2, 4, 10, 11, 3}, {}}, {{2, 6, 3}, {}}});
  for (size_t i = 0; i < 3; ++i) {
    CHECK(rows[i].find("embedding") == nullptr);
    const auto lg = floats(*rows[i].find("logits"));
    const auto p = floats(*rows[i].find("probabilities"));
    REQUIRE(lg.size() == static_cast<size_t>(kClasses));
    REQUIRE(p.size() == static_cast<size_t>(kClasses));
    double sum = 0;
    for (size_t c = 0; c < lg.size(); ++c) {
      CHECK(lg[c] == doctest::Approx(want[i][c]).epsilon(1e-5));
      CHECK(p[c] >= 0.f);
      sum += p[c];
    }
    CHECK(sum == doctest::Approx(1.0).epsilon(1e-6));
    CHECK(std::max_element(p.begin(), p.end()) - p.begin() == std::max_element(lg.begin(), lg.end()) - lg.begin());
    const auto sm = softmax(lg);
    for (size_t c = 0; c < p.size(); ++c) CHECK(p[c] == doctest::Approx(sm[c]).epsilon(1e-6));
  }
  CHECK(rows[0].find("tokens")->num == 7);
  CHECK(rows[0].find("text")->str == "ACGGT");

  // --pool asks for the embedding as well.
  const auto with_emb = json_lines(run_cli(dir, "'" + spnl + "' --ids 2,6,3 --pool mean"));
  REQUIRE(with_emb.size() == 1);
  CHECK(with_emb[0].find("logits") != nullptr);
  CHECK(floats(*with_emb[0].find("embedding")).size() == 16);

  // FASTA: lower case is upper-cased before tokenizing (the vocabulary is upper case).
  write_file(dir + "/a.fa", ">r1 some description\nacgg\nt\n\n>r2\nNNA\n");
  const auto fa = json_lines(run_cli(dir, "'" + spnl + "' --fasta '" + dir + "/a.fa'"));
  REQUIRE(fa.size() == 2);
  CHECK(fa[0].find("name")->str == "r1");
  CHECK(fa[0].find("description")->str == "some description");
  CHECK(fa[0].find("length")->num == 5);
  CHECK(fa[0].find("tokens")->num == 7);
  CHECK(fa[1].find("description") == nullptr);
  CHECK(fa[0].find("chunks") == nullptr);
  const auto lg0 = floats(*fa[0].find("logits"));
  for (size_t c = 0; c < lg0.size(); ++c) CHECK(lg0[c] == doctest::Approx(want[0][c]).epsilon(1e-5));

  // The table shows the top class.
  const Cli t = run_cli(dir, "'" + spnl + "' --fasta '" + dir + "/a.fa' --format table");
  CHECK(t.status == 0);
  CHECK(t.out.find("top class") != std::string::npos);
  CHECK(t.out.find("r1") != std::string::npos);
}

TEST_CASE("spinel run --fasta --chunk: long records in windows, logits averaged by window length") {
  const std::string dir = testing::temp_dir("classifier-chunk");
  const std::string spnl = write_classifier(dir);
  const auto m = Model::load(spnl);
  const std::string bases = "ACGTN";
  std::string seq;
  for (int i = 0; i < 61; ++i) seq += bases[(i * 7 + i / 3) % 5];
  write_file(dir + "/long.fa", ">short\nACGT\n>long chr1 part\n" + seq.substr(0, 30) + "\n" + seq.substr(30) + "\n");

  // Without --chunk: an error naming the record, its tokens and the limit.
  Cli r = run_cli(dir, "'" + spnl + "' --fasta '" + dir + "/long.fa'");
  CHECK(r.status == 1);
  CHECK(r.out.empty());
  CHECK(r.err.find("record 'long' has 63 tokens (61 bp), more than the limit of 24") != std::string::npos);
  CHECK(r.err.find("line 3") != std::string::npos);
  CHECK(r.err.find("--chunk") != std::string::npos);
  // Skipped under --on-bad-record skip.
  r = run_cli(dir, "'" + spnl + "' --fasta '" + dir + "/long.fa' --on-bad-record skip");
  const auto skipped = json_lines(r);
  REQUIRE(skipped.size() == 1);
  CHECK(skipped[0].find("name")->str == "short");
  CHECK(r.err.find("warning") != std::string::npos);

  // The windows by hand: 61 bases + specials, window 24 (22 bases), overlap 4.
  std::vector<int32_t> content;
  for (size_t i = 0; i < seq.size(); ++i)
    content.push_back(static_cast<int32_t>((i ? 9 : 4) + bases.find(seq[i])));
  const auto windows = chunk_sequence(content, 2, 3, 24, 4);
  REQUIRE(windows.size() == 4);  // starts 0, 18, 36, 54
  const auto per_window = logits_of(m, windows);
  std::vector<double> weights;
  for (const auto& w : windows) weights.push_back(static_cast<double>(w.ids.size()));
  const auto want = weighted_mean(per_window, weights);

  for (const char* opt : {"--chunk 24:4", "--chunk max --chunk-overlap 4", "--chunk=max:4"}) {
    INFO(opt);
    const auto rows = json_lines(run_cli(dir, "'" + spnl + "' --fasta '" + dir + "/long.fa' " + std::string(opt) + " --batch-size 3"));
    REQUIRE(rows.size() == 2);
    CHECK(rows[0].find("chunks")->num == 1);
    CHECK(rows[1].find("chunks")->num == 4);
    CHECK(rows[1].find("tokens")->num == 63);
    CHECK(rows[1].find("length")->num == 61);
    const auto lg = floats(*rows[1].find("logits"));
    REQUIRE(lg.size() == want.size());
    for (size_t c = 0; c < lg.size(); ++c) CHECK(lg[c] == doctest::Approx(want[c]).epsilon(1e-5));
  }
  // Bad --chunk values are usage errors.
  for (const char* opt : {"--chunk 25", "--chunk 2", "--chunk 24:22", "--chunk x", "--chunk 24:1 --chunk-overlap 2",
                                 "--chunk-overlap 2", "--chunk 10 --pool none"}) {
    INFO(opt);
    r = run_cli(dir, "'" + spnl + "' --fasta '" + dir + "/long.fa' " + opt);
    CHECK(r.status == 2);
    CHECK(r.out.empty());
  }
}
