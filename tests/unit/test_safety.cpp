// Regression tests of the reliability audit (issue "Reliability and
// security"): each case failed, crashed or misbehaved before its fix. Run
// under ASan+UBSan too (tools/build_sanitized.sh asan), where the first ones
// were found.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <random>

#include "kernels/cpu/isa.h"
#include "kernels/reference/reference.h"
#include "kernels/cpu/qgemm.h"
#include "runtime/error.h"
#include "runtime/session.h"
#include "runtime/util/text_input.h"
#include "spinel/spinel.h"
#include "tests/unit/spnl_craft.h"
#include "tests/unit/tiny_model.h"

using namespace spinel;
using namespace spinel::testing;
namespace fs = std::filesystem;

namespace {

std::string write_tiny(const std::string& dir, const TinySpec& spec = {}) {
  SpnlWriter w;
  fill_tiny_model(w, spec);
  const std::string path = dir + "/m.spnl";
  w.write(path);
  return path;
}

std::vector<std::string> dir_entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

// Audit item 2: in0/in1 of Embedding ops and in1 of Attention ops were not
// checked, and the memory plan indexed its tables with them (heap overflow
// in run / spinel_session_create on a crafted file).
TEST_CASE("graph inputs an op kind does not read must be absent") {
  const std::string dir = temp_dir("safety-graph");
  const Bytes good = read_file(write_tiny(dir));
  const std::string bad = dir + "/bad.spnl";
  struct Case {
    const char* what;
    size_t op;
    size_t OpFields::*field;
    int32_t value;
    const char* expect;
  };
  // Op 0 is the Embedding, op 2 the first Attention, op 1 the first Linear.
  for (const Case& c : {Case{"embedding in0", 0, &OpFields::in0, 100000, "takes no input"},
                        Case{"embedding in0 = a real value", 0, &OpFields::in0, 0, "takes no input"},
                        Case{"embedding in1", 0, &OpFields::in1, -7, "takes no second input"},
                        Case{"attention in1", 2, &OpFields::in1, 1, "takes no second input"},
                        Case{"attention in1 far away", 2, &OpFields::in1, 1 << 30, "takes no second input"},
                        Case{"linear output computed twice", 1, &OpFields::out, 0, "computed twice"},
                        Case{"linear input not yet computed", 1, &OpFields::in0, 5, "before it is computed"}}) {
    Bytes b = good;
    put<int32_t>(b, op_fields(b, c.op).*c.field, c.value);
    reseal(b);
    write_file(bad, b);
    const std::string e = load_error(bad);
    INFO(c.what, ": ", e);
    CHECK(e.find(c.expect) != std::string::npos);

    // The C API refuses the model, so no session is ever built on it.
    spinel_model_t m = nullptr;
    CHECK(spinel_model_load(bad.c_str(), &m) == SPINEL_INVALID_MODEL);
    CHECK(m == nullptr);
  }
  // A weight slot an op kind does not use (the Attention stores none).
  Bytes b = good;
  set_op_slots(b, 2, {0});
  write_file(bad, b);
  CHECK(load_error(bad).find("weight slot 0") != std::string::npos);
}

// Audit item 4: max_position == 0 turned the length check off while the
// position table was still read (1.3 MB past it on a 10k-token input).
TEST_CASE("max_position must be positive and covered by the position table") {
  const std::string dir = temp_dir("safety-pos");
  const Bytes good = read_file(write_tiny(dir));
  const std::string bad = dir + "/bad.spnl";
  for (int64_t v : {int64_t{0}, int64_t{-1}, int64_t{25}, int64_t{1} << 40}) {
    Bytes b = good;
    put<int64_t>(b, config_field(b, "max_position"), v);  // the table has 24 rows
    reseal(b);
    write_file(bad, b);
    const std::string e = load_error(bad);
    INFO("max_position ", v, ": ", e);
    CHECK(e.find("max_position") != std::string::npos);
  }
  // A run longer than the limit is an error naming it, and the session stays usable.
  auto m = Model::load(dir + "/m.spnl");
  Session s(m, 1);
  Sequence ok{{2, 5, 3}, {}};
  const HiddenStates h0 = s.run({ok});
  const std::vector<float> first(h0.data, h0.data + 3 * h0.width);
  Sequence long_seq;
  long_seq.ids.assign(10000, 5);
  try {
    s.run({long_seq});
    FAIL("a 10000-token sequence ran on a 24-position model");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("at most 24") != std::string::npos);
  }
  const HiddenStates h1 = s.run({ok});
  CHECK(std::equal(first.begin(), first.end(), h1.data));
}

// Audit item 6: NaN/Inf in eps or scale fields were accepted.
TEST_CASE("numeric fields must be finite and in range") {
  const std::string dir = temp_dir("safety-num");
  const Bytes good = read_file(write_tiny(dir));
  const std::string bad = dir + "/bad.spnl";
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  // Op 0 is the Embedding, op 2 an Attention, op 4 a LayerNorm.
  struct Field {
    const char* name;
    std::function<size_t(const Bytes&)> at;
  };
  const Field fields[] = {{"layer_norm_eps", [](const Bytes& b) { return config_field(b, "layer_norm_eps"); }},
                          {"eps", [](const Bytes& b) { return op_fields(b, 0).eps; }},
                          {"eps", [](const Bytes& b) { return op_fields(b, 4).eps; }},
                          {"scale", [](const Bytes& b) { return op_fields(b, 2).scale; }}};
  for (const Field& f : fields) {
    for (float v : {nan, inf, -inf, 0.f, -1.f, 1e9f}) {
      Bytes b = good;
      put<float>(b, f.at(b), v);
      reseal(b);
      write_file(bad, b);
      const std::string e = load_error(bad);
      INFO(f.name, " = ", v, ": ", e);
      CHECK(e.find(f.name) != std::string::npos);
    }
  }
}

// Audit item 6: no checksum, so a flipped weight byte ran silently.
TEST_CASE("checksums catch damaged metadata and weights") {
  const std::string dir = temp_dir("safety-sum");
  const std::string path = write_tiny(dir);
  const Bytes good = read_file(path);
  const std::string bad = dir + "/bad.spnl";

  Bytes b = good;
  b[section_offset(b, kGraphSec) + 6] ^= 0x20;  // inside the first value name
  write_file(bad, b);
  CHECK(load_error(bad).find("checksum mismatch in the header or metadata") != std::string::npos);

  b = good;
  b[b.size() - 3] ^= 1;  // the last weight blob
  write_file(bad, b);
  const std::string e = load_error(bad);
  CHECK(e.find("checksum mismatch") != std::string::npos);
  CHECK(e.find("tensor '") != std::string::npos);
  // Loading without the weight pass accepts it; verify_weights() still finds it.
  auto m = Model::load(bad, LoadOptions{false});
  CHECK_THROWS_AS(m->verify_weights(), Error);

  // Every single-byte flip in the header and metadata is caught.
  const size_t meta_end = section_offset(good, kDataSec);
  std::mt19937 rng(3);
  for (int i = 0; i < 200; ++i) {
    b = good;
    const size_t at = std::uniform_int_distribution<size_t>(0, meta_end - 1)(rng);
    b[at] ^= static_cast<char>(1 + rng() % 255);
    write_file(bad, b);
    INFO("flip at ", at);
    CHECK(!load_error(bad).empty());
  }

  // A file of an older format (1: no checksums, 2: fixed op records) gets a
  // message saying what to do.
  for (uint32_t v : {1u, 2u}) {
    b = good;
    put<uint32_t>(b, 8, v);
    reseal(b);
    write_file(bad, b);
    const std::string e = load_error(bad);
    INFO(e);
    CHECK(e.find("format version " + std::to_string(v) + " was written by an older spinel") !=
          std::string::npos);
    CHECK(e.find("convert the ONNX model again") != std::string::npos);
  }
}

// Audit item 3: the writer opened OUT.tmp with truncation, following a
// planted symlink; -o naming a device, FIFO or directory replaced it.
TEST_CASE("the writer never follows planted links and replaces only regular files") {
  const std::string dir = temp_dir("safety-write");
  SpnlWriter w;
  fill_tiny_model(w, {});
  const std::string victim = dir + "/victim.txt";
  write_file(victim, Bytes{'k', 'e', 'e', 'p'});
  const std::string out = dir + "/out.spnl";
  REQUIRE(symlink(victim.c_str(), (out + ".tmp").c_str()) == 0);
  w.write(out);
  CHECK(read_file(victim) == Bytes{'k', 'e', 'e', 'p'});
  CHECK(Model::load(out)->graph().ops.size() == w.graph.ops.size());
  struct stat st {};
  REQUIRE(lstat((out + ".tmp").c_str(), &st) == 0);
  CHECK(S_ISLNK(st.st_mode));  // the planted link is left alone
  // Permissions as a plain create gives them (mkstemp's 0600 is widened by the umask).
  REQUIRE(stat(out.c_str(), &st) == 0);
  const mode_t mask = umask(0);
  umask(mask);
  CHECK((st.st_mode & 0777) == (0666 & ~mask));

  const std::string fifo = dir + "/fifo";
  REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
  const std::string link = dir + "/link.spnl";
  REQUIRE(symlink(victim.c_str(), link.c_str()) == 0);
  const std::string sub = dir + "/sub";
  fs::create_directory(sub);
  const auto before = dir_entries(dir);
  for (const std::string& target : {fifo, link, sub, std::string("/dev/null")}) {
    try {
      w.write(target);
      FAIL("wrote over ", target);
    } catch (const Error& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find("refusing to replace it") != std::string::npos);
    }
  }
  CHECK(dir_entries(dir) == before);  // nothing replaced, no temp file left
  REQUIRE(lstat(fifo.c_str(), &st) == 0);
  CHECK(S_ISFIFO(st.st_mode));
  CHECK(read_file(victim) == Bytes{'k', 'e', 'e', 'p'});

  // A failed write (here: the folder is gone) leaves nothing behind either.
  CHECK_THROWS_AS(w.write(dir + "/missing/out.spnl"), Error);
  CHECK(dir_entries(dir) == before);
}

// Audit item 5: a FIFO given as a model blocked forever in open().
TEST_CASE("a FIFO or a device given as a model is refused without blocking") {
  const std::string dir = temp_dir("safety-fifo");
  const std::string fifo = dir + "/model.spnl";
  REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(load_error(fifo).find("not a regular file") != std::string::npos);
  CHECK(load_error("/dev/zero").find("not a regular file") != std::string::npos);
  CHECK(load_error(dir).find("not a regular file") != std::string::npos);
  CHECK_THROWS_AS(WordPieceTokenizer::from_vocab_file(fifo, {}), Error);
  CHECK_THROWS_AS(WordPieceTokenizer::from_tokenizer_json(fifo), Error);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
}

// Audit item 5: messages echoed raw bytes from the file.
TEST_CASE("error messages carry no raw control bytes from a file") {
  CHECK(printable("a\x1b[2Jb") == "a\\x1b[2Jb");
  CHECK(printable("line\nnext") == "line\nnext");
  CHECK(printable("caf\xc3\xa9") == "caf\xc3\xa9");            // valid UTF-8 stays
  CHECK(printable("bad \xc3 utf8") == "bad \\xc3 utf8");       // truncated sequence
  CHECK(printable("\xc2\x9b" "c1") == "\\xc2\\x9bc1");         // C1 control (CSI)
  CHECK(printable("\xed\xa0\x80") == "\\xed\\xa0\\x80");       // surrogate
  CHECK(printable(printable("x\x01\xff")) == printable("x\x01\xff"));
  CHECK(printable(std::string(100, 'a'), 10) == "aaaaaaaaaa ... (90 more bytes)");

  // A tensor whose name holds an escape sequence, in a file with a bad shape.
  const std::string dir = temp_dir("safety-msg");
  SpnlWriter w;
  fill_tiny_model(w, {});
  w.set_tensor(w.graph.ops[0].w[slot::kEmbGamma], DType::F32, {3}, std::vector<float>(3).data(), 12);
  try {
    SpnlWriter w2;
    fill_tiny_model(w2, {});
    const int32_t id = w2.add_tensor("evil\x1b]0;pwned\x07", DType::F32, {5},
                                     std::vector<float>(5).data(), 20);
    w2.graph.ops[0].w[slot::kEmbGamma] = id;
    w2.write(dir + "/x.spnl");
    FAIL("a gamma of the wrong shape was written");
  } catch (const Error& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("evil\\x1b]0;pwned\\x07") != std::string::npos);
    for (char c : msg) CHECK((static_cast<unsigned char>(c) >= 0x20 || c == '\n'));
  }
}

// Audit item 5: a 10 MB input line was tokenized whole before truncation.
TEST_CASE("stop_early encodes long texts like the full pass, reading only a prefix") {
  std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "##s", ",", "."};
  const WordPieceTokenizer tok(vocab, WordPieceOptions{});
  std::mt19937 rng(5);
  const char* words[] = {"hello", "worlds", "x", ",", ".", "\t", "\n", "hello,world", "  ", "\xc3\xa9"};
  std::string text;
  while (text.size() < 200000) {
    text += words[rng() % 10];
    text += rng() % 3 ? " " : "";
  }
  for (size_t max_len : {size_t{2}, size_t{3}, size_t{8}, size_t{128}, size_t{512}, size_t{100000}}) {
    const Encoding full = tok.encode(text, std::nullopt, max_len);
    const Encoding fast = tok.encode(text, std::nullopt, max_len, true);
    INFO("max_length ", max_len);
    CHECK(fast.ids == full.ids);
    CHECK(fast.type_ids == full.type_ids);
    CHECK(fast.truncated == full.truncated);
    if (fast.length_is_exact) CHECK(fast.untruncated_length == full.untruncated_length);
    else CHECK(fast.untruncated_length <= full.untruncated_length);
  }
  // 10 MB: the early stop reads a prefix (a full pass takes seconds and ~140 MB).
  const std::string huge = [&] {
    std::string s;
    while (s.size() < 10u << 20) s += "hello world ";
    return s;
  }();
  const auto t0 = std::chrono::steady_clock::now();
  const Encoding e = tok.encode(huge, std::nullopt, 128, true);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
  CHECK(e.ids.size() == 128);
  CHECK(e.truncated);
  CHECK_FALSE(e.length_is_exact);
}

TEST_CASE("split_lines: the --input reader") {
  CHECK(split_lines("").empty());
  CHECK(split_lines("a") == std::vector<std::string>{"a"});
  CHECK(split_lines("a\r\nb\n") == std::vector<std::string>{"a", "b"});
  CHECK(split_lines("\n\n") == std::vector<std::string>{"", ""});
  CHECK(split_lines("a\rb") == std::vector<std::string>{"a\rb"});
  CHECK(split_lines(std::string("x\0y\n", 4)) == std::vector<std::string>{std::string("x\0y", 3)});
  const std::string dir = temp_dir("safety-lines");
  CHECK_THROWS_AS(read_text_lines(dir + "/none.txt", 100), Error);
  CHECK_THROWS_AS(read_text_lines(dir, 100), Error);
  write_file(dir + "/big.txt", Bytes(200, 'a'));
  CHECK_THROWS_AS(read_text_lines(dir + "/big.txt", 100), Error);
}

// Issue item 7: bad run-time input is an error naming it, and the session
// (and the model) stay usable afterwards.
TEST_CASE("run-time input validation leaves the session usable") {
  const std::string dir = temp_dir("safety-run");
  auto m = Model::load(write_tiny(dir));
  Session s(m, 2);
  const std::vector<Sequence> good = {{{2, 7, 8, 3}, {0, 0, 1, 1}}, {{2, 9, 3}, {}}};
  const HiddenStates h0 = s.run(good);
  const std::vector<float> expect(h0.data, h0.data + h0.offsets.back() * h0.width);

  struct Bad {
    std::vector<Sequence> batch;
    const char* expect;
  };
  Sequence too_long;
  too_long.ids.assign(25, 4);
  for (const Bad& c : std::vector<Bad>{{{}, "batch is empty"},
                                       {{{{}, {}}}, "has no tokens"},
                                       {{{{2, 40, 3}, {}}}, "id 40 is outside the vocabulary"},
                                       {{{{2, -1, 3}, {}}}, "id -1"},
                                       {{{{2, 5, 3}, {0, 2, 0}}}, "token type 2"},
                                       {{{{2, 5, 3}, {0, 0}}}, "token type ids"},
                                       {{good[0], too_long}, "at most 24"}}) {
    try {
      s.run(c.batch);
      FAIL("accepted: ", c.expect);
    } catch (const Error& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(c.expect) != std::string::npos);
    }
    const HiddenStates h = s.run(good);
    CHECK(std::equal(expect.begin(), expect.end(), h.data));
  }
  for (int threads : {-1, kMaxThreads + 1, 1000000}) {
    try {
      Session bad(m, threads);
      FAIL("a session with ", threads, " threads");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("thread count") != std::string::npos);
    }
  }
}

// Issue item 7 through the C API: NULLs, bad sizes, sizes queries.
TEST_CASE("C API: misuse is a status, and the session stays usable") {
  const std::string dir = temp_dir("safety-capi");
  const std::string path = write_tiny(dir);
  spinel_model_t m = nullptr;
  REQUIRE(spinel_model_load(path.c_str(), &m) == SPINEL_OK);
  spinel_session_t s = nullptr;
  REQUIRE(spinel_session_create(m, 1, &s) == SPINEL_OK);

  // Audit item 5: a size query (ids NULL, capacity 0) passed NULL to memcpy.
  size_t n = 0;
  CHECK(spinel_tokenize(m, "tok5 tok6", 0, nullptr, 0, &n) == SPINEL_OK);
  CHECK(n == 4);
  std::vector<int32_t> ids(n);
  CHECK(spinel_tokenize(m, "tok5 tok6", 0, ids.data(), ids.size(), &n) == SPINEL_OK);
  CHECK(ids == std::vector<int32_t>{2, 5, 6, 3});
  CHECK(spinel_tokenize(m, "tok5", 0, nullptr, 4, &n) == SPINEL_INVALID_ARGUMENT);
  CHECK(spinel_tokenize(nullptr, "x", 0, ids.data(), 4, &n) == SPINEL_INVALID_ARGUMENT);
  CHECK(spinel_tokenize(m, nullptr, 0, ids.data(), 4, &n) == SPINEL_INVALID_ARGUMENT);
  CHECK(spinel_tokenize(m, "x", 0, ids.data(), 4, nullptr) == SPINEL_INVALID_ARGUMENT);

  const int64_t off[] = {0, 4};
  std::vector<float> out(4 * 16), first;
  REQUIRE(spinel_session_run(s, ids.data(), nullptr, off, 1, out.data(), out.size()) == SPINEL_OK);
  first = out;
  const int64_t neg[] = {0, -5}, start[] = {3, 4}, huge[] = {0, int64_t{1} << 40};
  struct Call {
    const int32_t* ids;
    const int64_t* off;
    int64_t num;
    float* out;
    size_t cap;
    const char* expect;
  };
  for (const Call& c : {Call{nullptr, off, 1, out.data(), out.size(), "ids is NULL"},
                        Call{ids.data(), nullptr, 1, out.data(), out.size(), "seq_offsets is NULL"},
                        Call{ids.data(), off, 1, nullptr, out.size(), "hidden is NULL"},
                        Call{ids.data(), off, 0, out.data(), out.size(), "num_seqs is 0"},
                        Call{ids.data(), off, -2, out.data(), out.size(), "num_seqs is -2"},
                        Call{ids.data(), neg, 1, out.data(), out.size(), "must not decrease"},
                        Call{ids.data(), start, 1, out.data(), out.size(), "seq_offsets[0]"},
                        Call{ids.data(), huge, 1, out.data(), out.size(), "at most 24"},
                        Call{ids.data(), off, 1, out.data(), 63, "needs 64"}}) {
    CHECK(spinel_session_run(s, c.ids, nullptr, c.off, c.num, c.out, c.cap) == SPINEL_INVALID_ARGUMENT);
    INFO(spinel_last_error());
    CHECK(std::string(spinel_last_error()).find(c.expect) != std::string::npos);
    std::fill(out.begin(), out.end(), 0.f);
    REQUIRE(spinel_session_run(s, ids.data(), nullptr, off, 1, out.data(), out.size()) == SPINEL_OK);
    CHECK(out == first);
  }
  spinel_session_t s2 = nullptr;
  CHECK(spinel_session_create(m, 1000000, &s2) == SPINEL_INVALID_ARGUMENT);
  CHECK(s2 == nullptr);
  CHECK(spinel_session_create(nullptr, 1, &s2) == SPINEL_INVALID_ARGUMENT);
  CHECK(spinel_session_create(m, 1, nullptr) == SPINEL_INVALID_ARGUMENT);
  CHECK(spinel_model_info(nullptr, nullptr, nullptr, nullptr) == SPINEL_INVALID_ARGUMENT);
  spinel_session_free(nullptr);
  spinel_model_free(nullptr);
  spinel_session_free(s);
  spinel_model_free(m);
}

// Found by fuzz_spnl: a model whose weights are NaN or Inf (checksums made to
// match) made INT8 activation quantization cast NaN to int (UBSan). Such a
// row now gets a NaN scale: its outputs are NaN, as in f32, on every path.
TEST_CASE("INT8 activation quantization of rows holding NaN or Inf") {
  namespace k = spinel::kernels;
  const int64_t K = 70;  // a 64-wide block and a tail
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<float> x(5 * K);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * float(i));
  x[0 * K + 3] = nan;   // NaN in the 64-wide part
  x[1 * K + 66] = nan;  // NaN in the tail
  x[2 * K + 10] = inf;
  x[3 * K + 69] = -inf;
  // row 4 stays finite
  for (k::Isa isa : {k::Isa::Avx512Vnni, k::Isa::Avx2, k::Isa::Scalar}) {
    if (!k::cpu_supports(isa)) continue;
    const k::Isa prev = k::set_max_isa(isa);
    std::vector<uint8_t> q(x.size(), 7);
    std::vector<float> scale(5);
    std::vector<int32_t> zp(5, 9);
    k::quantize_rows_u8(x.data(), 5, K, q.data(), scale.data(), zp.data());
    k::set_max_isa(prev);
    INFO("isa ", k::isa_name(isa));
    for (int m = 0; m < 4; ++m) {
      CHECK(std::isnan(scale[m]));
      CHECK(zp[m] == 0);
      CHECK(std::all_of(q.begin() + m * K, q.begin() + (m + 1) * K, [](uint8_t v) { return v == 0; }));
    }
    CHECK(std::isfinite(scale[4]));
  }
  std::vector<uint8_t> rq(x.size());
  std::vector<float> rs(5);
  std::vector<int32_t> rz(5);
  k::ref::quantize_rows_u8(x.data(), 5, K, rq.data(), rs.data(), rz.data());
  for (int m = 0; m < 4; ++m) CHECK(std::isnan(rs[m]));
  // Static quantization saturates Inf (a calibrated range clips) and turns NaN rows NaN.
  k::quantize_rows_u8_static(x.data(), 5, K, 0.01f, 128, rq.data(), rs.data(), rz.data());
  CHECK(std::isnan(rs[0]));
  CHECK(std::isnan(rs[1]));
  CHECK(rs[2] == 0.01f);
  CHECK(rq[2 * K + 10] == 255);
  CHECK(rq[3 * K + 69] == 0);
}
