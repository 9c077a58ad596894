// The .spnl format: round trip, and every kind of damaged file is an error
// that names the problem, never a crash.
#include <doctest/doctest.h>

#include <cstring>
#include <fstream>
#include <iterator>

#include "runtime/error.h"
#include "runtime/spnl.h"
#include "tests/unit/spnl_craft.h"
#include "tests/unit/tiny_model.h"

using namespace spinel;

namespace {

using testing::load_error;
const auto& read_all = testing::read_file;
const auto& write_all = testing::write_file;

// Header field offsets (see runtime/spnl.cpp): magic 0, version 8, endian 12,
// file size 16, section offsets from 24 (config, tokenizer, graph, tensors,
// data), section sizes from 64.
constexpr size_t kOffsetField = 24, kSizeField = 64;

}  // namespace

TEST_CASE("spnl round trip keeps config, graph, tokenizer and weights") {
  const std::string dir = testing::temp_dir("spnl");
  SpnlWriter w;
  testing::fill_tiny_model(w, {});
  const std::string path = dir + "/m.spnl";
  w.write(path);

  auto m = Model::load(path);
  CHECK(m->config().vocab_size == w.config.vocab_size);
  CHECK(m->config().hidden_size == w.config.hidden_size);
  CHECK(m->config().num_layers == w.config.num_layers);
  CHECK(m->config().hidden_act == w.config.hidden_act);
  CHECK(m->config().source == "unit test");
  REQUIRE(m->graph().ops.size() == w.graph.ops.size());
  for (size_t i = 0; i < w.graph.ops.size(); ++i) {
    const Op &a = w.graph.ops[i], &b = m->graph().ops[i];
    CHECK(a.kind == b.kind);
    CHECK(a.name == b.name);
    CHECK(a.in0 == b.in0);
    CHECK(a.in1 == b.in1);
    CHECK(a.out == b.out);
    CHECK(a.w == b.w);
    CHECK(a.act == b.act);
    CHECK(a.precision == b.precision);
    CHECK(a.num_heads == b.num_heads);
    CHECK(a.scale == b.scale);
  }
  CHECK(m->graph().output == w.graph.output);
  REQUIRE(m->tensors().size() == w.tensors().size());
  for (size_t i = 0; i < w.tensors().size(); ++i) {
    const auto& t = m->tensors()[i];
    CHECK(t.name == w.tensors()[i].name);
    CHECK(t.shape == w.tensors()[i].shape);
    CHECK(reinterpret_cast<uintptr_t>(m->tensor_data(static_cast<int32_t>(i))) % 64 == 0);
    CHECK(std::memcmp(m->tensor_data(static_cast<int32_t>(i)), w.tensor_data(static_cast<int32_t>(i)),
                      t.nbytes) == 0);
  }
  CHECK(m->tokenizer().vocab_size() == w.tokenizer.vocab_size());
  CHECK(m->tokenizer().token_id("[SEP]") == 3);
}

TEST_CASE("damaged .spnl files are rejected with a clear error") {
  const std::string dir = testing::temp_dir("spnl-bad");
  SpnlWriter w;
  testing::fill_tiny_model(w, {});
  const std::string good = dir + "/good.spnl";
  w.write(good);
  const std::vector<char> bytes = read_all(good);
  const std::string bad = dir + "/bad.spnl";

  SUBCASE("missing file") { CHECK(load_error(dir + "/nope.spnl").find("cannot open") != std::string::npos); }
  SUBCASE("empty file") {
    write_all(bad, {});
    CHECK(load_error(bad).find("shorter than the header") != std::string::npos);
  }
  SUBCASE("truncated at many points") {
    for (size_t cut : {size_t{10}, size_t{127}, size_t{128}, size_t{200}, bytes.size() / 2,
                       bytes.size() - 1}) {
      write_all(bad, std::vector<char>(bytes.begin(), bytes.begin() + static_cast<long>(cut)));
      const std::string e = load_error(bad);
      INFO("cut at ", cut, ": ", e);
      CHECK(!e.empty());
      if (cut >= 128) CHECK(e.find("truncated") != std::string::npos);
    }
  }
  SUBCASE("bad magic") {
    auto b = bytes;
    b[0] = 'X';
    write_all(bad, b);
    CHECK(load_error(bad).find("bad magic") != std::string::npos);
  }
  SUBCASE("unsupported version") {
    auto b = bytes;
    b[8] = 9;
    write_all(bad, b);
    CHECK(load_error(bad).find("version 9") != std::string::npos);
  }
  SUBCASE("section offset past the end") {
    for (int s = 0; s < 5; ++s) {
      auto b = bytes;
      const uint64_t huge = uint64_t{1} << 40;
      std::memcpy(&b[kOffsetField + 8 * s], &huge, 8);
      write_all(bad, b);
      const std::string e = load_error(bad);
      INFO("section ", s, ": ", e);
      CHECK(e.find("lies outside the file") != std::string::npos);
    }
  }
  SUBCASE("section size past the end") {
    auto b = bytes;
    const uint64_t huge = ~uint64_t{0} - 4;
    std::memcpy(&b[kSizeField + 8 * 3], &huge, 8);
    write_all(bad, b);
    CHECK(load_error(bad).find("lies outside the file") != std::string::npos);
  }
  SUBCASE("tensor offset corrupted inside the tensor table") {
    // The last 24 bytes of the table are the last tensor's offset, nbytes
    // and checksum; move its offset past the data section and reseal.
    uint64_t toff = 0, tsize = 0;
    std::memcpy(&toff, &bytes[kOffsetField + 8 * 3], 8);
    std::memcpy(&tsize, &bytes[kSizeField + 8 * 3], 8);
    auto b = bytes;
    const size_t field = toff + tsize - 24;
    const uint64_t far = uint64_t{1} << 36;
    std::memcpy(&b[field], &far, 8);
    testing::reseal(b);
    write_all(bad, b);
    const std::string e = load_error(bad);
    CHECK(e.find("outside the data section") != std::string::npos);
  }
  SUBCASE("random byte flips never crash") {
    std::mt19937 rng(1);
    for (int i = 0; i < 300; ++i) {
      auto b = bytes;
      std::uniform_int_distribution<size_t> pos(0, 4096 < b.size() ? 4096 : b.size() - 1);
      for (int k = 0; k < 4; ++k) b[pos(rng)] = static_cast<char>(rng());
      write_all(bad, b);
      // Loads only if the flips hit padding between blobs (not checksummed,
      // never read); otherwise a spinel::Error (test_safety checks metadata).
      load_error(bad);
    }
  }
}
