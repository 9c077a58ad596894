// The .spnl format: round trip, and every kind of damaged file is an error
// that names the problem, never a crash.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>

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

// The tiny model plus a head using every op attribute at a non-default value:
// Pool (cls) -> S8 Linear with tanh on sequence rows ("pooler_output"), and a
// mean Pool ("mean_pooled"); default pooling "pooler_output", normalized.
void add_pooled_head(SpnlWriter& w) {
  const int64_t H = w.config.hidden_size;
  const int32_t last = w.graph.output;
  auto value = [&](const std::string& name, Rows rows) {
    w.graph.values.push_back({name, H, rows});
    return static_cast<int32_t>(w.graph.values.size() - 1);
  };
  Op cls;
  cls.kind = OpKind::Pool;
  cls.name = "pool_cls";
  cls.pool = PoolKind::Cls;
  cls.in0 = last;
  cls.out = value("cls", Rows::Sequences);
  w.graph.ops.push_back(cls);
  std::vector<int8_t> wq(static_cast<size_t>(H * H));
  for (size_t i = 0; i < wq.size(); ++i) wq[i] = static_cast<int8_t>(i % 4 == 0 ? (i * 7) % 127 : 0);
  std::vector<float> ws(static_cast<size_t>(H), 0.01f), bias(static_cast<size_t>(H), 0.1f);
  Op dense;
  dense.kind = OpKind::Linear;
  dense.name = "pooler.dense";
  dense.in0 = cls.out;
  dense.act = Activation::Tanh;
  dense.precision = Precision::S8Dense;
  dense.act_scale = 0.05f;
  dense.act_zp = 128;
  dense.block_sparsity = 0.75f;
  dense.w[slot::kWeight] = w.add_tensor("pooler.w", DType::I8, {H, H}, wq.data(), wq.size());
  dense.w[slot::kBias] = w.add_tensor("pooler.b", DType::F32, {H}, bias.data(), bias.size() * 4);
  dense.w[slot::kWeightScale] = w.add_tensor("pooler.scale", DType::F32, {H}, ws.data(), ws.size() * 4);
  dense.out = value("pooled", Rows::Sequences);
  w.graph.ops.push_back(dense);
  Op mean;
  mean.kind = OpKind::Pool;
  mean.name = "pool_mean";
  mean.pool = PoolKind::Mean;
  mean.in0 = last;
  mean.out = value("mean", Rows::Sequences);
  w.graph.ops.push_back(mean);
  w.graph.outputs = {{"pooler_output", dense.out}, {"mean_pooled", mean.out}};
  w.config.default_pool = "pooler_output";
  w.config.normalize = true;
}

std::string write_pooled(const std::string& dir) {
  SpnlWriter w;
  testing::fill_tiny_model(w, {});
  add_pooled_head(w);
  const std::string path = dir + "/pooled.spnl";
  w.write(path);
  return path;
}

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
    CHECK(a.eps == b.eps);
    CHECK(a.act_scale == b.act_scale);
    CHECK(a.act_zp == b.act_zp);
    CHECK(a.pool == b.pool);
    CHECK(a.block_sparsity == b.block_sparsity);
  }
  CHECK(m->graph().output == w.graph.output);
  CHECK(m->graph().outputs.empty());
  CHECK(m->config().default_pool == "mean");
  CHECK(!m->config().normalize);
  CHECK(m->config().architecture == "bert");
  CHECK(m->tokenizer_kind() == "wordpiece");
  CHECK(m->format_version() == 3);
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

TEST_CASE("format 3 round trip: every op attribute, row kinds, named outputs, pooling config") {
  const std::string dir = testing::temp_dir("spnl-v3");
  SpnlWriter w;
  testing::fill_tiny_model(w, {});
  add_pooled_head(w);
  w.config.hidden_act = Activation::Tanh;  // a config enum at a value format 2 could not hold
  const std::string path = dir + "/m.spnl";
  w.write(path);
  auto m = Model::load(path);

  const ModelConfig& c = m->config();
  CHECK(c.architecture == "bert");
  CHECK(c.vocab_size == w.config.vocab_size);
  CHECK(c.hidden_size == w.config.hidden_size);
  CHECK(c.num_layers == w.config.num_layers);
  CHECK(c.num_heads == w.config.num_heads);
  CHECK(c.intermediate_size == w.config.intermediate_size);
  CHECK(c.max_position == w.config.max_position);
  CHECK(c.type_vocab_size == w.config.type_vocab_size);
  CHECK(c.layer_norm_eps == w.config.layer_norm_eps);
  CHECK(c.hidden_act == Activation::Tanh);
  CHECK(c.source == "unit test");
  CHECK(c.default_pool == "pooler_output");
  CHECK(c.normalize);

  const Graph& g = m->graph();
  REQUIRE(g.values.size() == w.graph.values.size());
  for (size_t i = 0; i < g.values.size(); ++i) {
    CHECK(g.values[i].name == w.graph.values[i].name);
    CHECK(g.values[i].width == w.graph.values[i].width);
    CHECK(g.values[i].rows == w.graph.values[i].rows);
  }
  CHECK(g.values.back().rows == Rows::Sequences);
  REQUIRE(g.ops.size() == w.graph.ops.size());
  for (size_t i = 0; i < g.ops.size(); ++i) {
    const Op &a = w.graph.ops[i], &b = g.ops[i];
    INFO("op ", a.name);
    CHECK(a.kind == b.kind);
    CHECK(a.name == b.name);
    CHECK(a.in0 == b.in0);
    CHECK(a.in1 == b.in1);
    CHECK(a.out == b.out);
    CHECK(a.w == b.w);
    CHECK(a.act == b.act);
    CHECK(a.precision == b.precision);
    CHECK(a.act_scale == b.act_scale);
    CHECK(a.act_zp == b.act_zp);
    CHECK(a.num_heads == b.num_heads);
    CHECK(a.eps == b.eps);
    CHECK(a.scale == b.scale);
    CHECK(a.pool == b.pool);
    CHECK(a.block_sparsity == b.block_sparsity);
  }
  // The head as written (not only "equal to the writer's"): values that differ from every default.
  const Op& dense = g.ops[g.ops.size() - 2];
  CHECK(dense.act == Activation::Tanh);
  CHECK(dense.precision == Precision::S8Dense);
  CHECK(dense.act_scale == 0.05f);
  CHECK(dense.act_zp == 128);
  CHECK(dense.block_sparsity == 0.75f);
  CHECK(g.ops[g.ops.size() - 3].pool == PoolKind::Cls);
  CHECK(g.ops.back().pool == PoolKind::Mean);
  CHECK(g.ops[2].num_heads == 2);
  REQUIRE(g.outputs.size() == 2);
  CHECK(g.outputs[0].name == "pooler_output");
  CHECK(g.outputs[0].value == dense.out);
  CHECK(g.outputs[1].name == "mean_pooled");
  CHECK(g.find_output("mean_pooled") == 1);
  CHECK(g.output == w.graph.output);
}

TEST_CASE("the writer refuses what a reader would refuse") {
  const std::string dir = testing::temp_dir("spnl-wr");
  SUBCASE("an architecture no family module registers") {
    SpnlWriter w;
    testing::fill_tiny_model(w, {});
    w.config.architecture = "roberta";
    try {
      w.write(dir + "/m.spnl");
      FAIL("wrote an unknown architecture");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("architecture 'roberta' is not supported by this spinel "
                                       "(supported: bert") != std::string::npos);
    }
  }
  SUBCASE("an attribute set on an op kind it does not belong to") {
    SpnlWriter w;
    testing::fill_tiny_model(w, {});
    w.graph.ops[4].num_heads = 3;  // a LayerNorm
    try {
      w.write(dir + "/m.spnl");
      FAIL("wrote num_heads on a LayerNorm");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("'num_heads' is set but does not apply to a LayerNorm") !=
            std::string::npos);
    }
  }
  CHECK(!std::ifstream(dir + "/m.spnl").good());
}

TEST_CASE("format 3 records: unknown, duplicate, misplaced and mistyped tags") {
  const std::string dir = testing::temp_dir("spnl-tags");
  const std::string good_path = write_pooled(dir);
  const testing::Bytes good = read_all(good_path);
  const std::string bad = dir + "/bad.spnl";
  using testing::enc;
  using testing::enc_record;
  using testing::enc_str;
  // Op 2 is the first Attention ('layer0.attention'), op 1 the first Linear, op 4 a
  // LayerNorm, ops 15-17 the head (cls Pool, pooler Linear, mean Pool).
  REQUIRE(Model::load(good_path)->graph().ops.size() == 18);
  auto error_with = [&](testing::Bytes b) {
    write_all(bad, b);
    return load_error(bad);
  };
  auto has = [](const std::string& e, const std::string& what) {
    INFO(e);
    CHECK(e.find(what) != std::string::npos);
  };
  // The file is as this test thinks: every attribute it pokes exists.
  REQUIRE(testing::op_fields(good, 2).scale != 0);

  SUBCASE("unknown op attribute: names the op and the tag, asks for a newer spinel") {
    auto b = good;
    testing::add_op_record(b, 2, enc_record("rotary", 4, {1}));
    const std::string e = error_with(b);
    has(e, "graph op #2 (Attention 'layer0.attention'): attribute 'rotary' is not known to this spinel");
    has(e, "newer spinel");
  }
  SUBCASE("duplicate op attribute") {
    auto b = good;
    testing::add_op_record(b, 2, enc_record("scale", 2, enc<float>(0.5f)));
    has(error_with(b), "'layer0.attention'): attribute 'scale' appears twice");
  }
  SUBCASE("wrong type for a tag") {
    auto b = good;
    testing::add_op_record(b, 1, enc_record("act", 2, enc<float>(1.f)));
    has(error_with(b), "'layer0.qkv'): attribute 'act' has type f32, expected str");
    b = good;
    testing::add_op_record(b, 1, enc_record("act_zp", 9, enc<int64_t>(1)));
    has(error_with(b), "attribute 'act_zp' has type code 9, expected i64");
  }
  SUBCASE("an attribute on an op kind it does not belong to") {
    auto b = good;
    testing::add_op_record(b, 4, enc_record("num_heads", 1, enc<int64_t>(2)));
    has(error_with(b), "attribute 'num_heads' does not apply to a LayerNorm");
  }
  SUBCASE("an enum value this spinel does not know") {
    auto b = good;
    testing::add_op_record(b, 1, enc_record("act", 3, enc_str("swiglu")));
    has(error_with(b), "'layer0.qkv'): activation 'swiglu' is not known to this spinel");
    b = good;  // the Pool kind of the last op
    testing::add_op_record(b, 15, enc_record("block_sparsity", 2, enc<float>(0.5f)));
    has(error_with(b), "attribute 'block_sparsity' does not apply to a Pool");
  }
  SUBCASE("an i64 attribute past int32") {
    auto b = good;
    testing::put<int64_t>(b, testing::op_fields(b, 2).attrs.value_at.at("num_heads"), int64_t{1} << 40);
    testing::reseal(b);
    has(error_with(b), "num_heads 1099511627776 is out of range");
  }
  SUBCASE("truncated attribute list") {
    // The graph section ends inside the last op's first attribute record.
    auto b = good;
    const auto f = testing::op_fields(b, 17);  // the mean Pool, last op
    const size_t graph_end = testing::section_offset(b, testing::kGraphSec) +
                             testing::section_size(b, testing::kGraphSec);
    testing::splice(b, f.attrs.count_at + 4 + 6, graph_end, {});
    const std::string e = error_with(b);
    has(e, "graph op #17 (Pool 'pool_mean')");
    has(e, "truncated while reading");
    // An attribute count larger than the section can hold.
    b = good;
    testing::put<uint32_t>(b, testing::op_fields(b, 17).attrs.count_at, 0xFFFFFFF0u);
    testing::reseal(b);
    has(error_with(b), "attribute count 4294967280 exceeds the section");
  }
  SUBCASE("config: unknown, duplicate, missing and mistyped fields") {
    const auto cfg = testing::config_records(good);
    auto b = good;
    testing::put<uint32_t>(b, cfg.count_at, testing::get<uint32_t>(b, cfg.count_at) + 1);
    testing::splice(b, cfg.end, cfg.end, enc_record("rope_theta", 2, enc<float>(1e4f)));
    has(error_with(b), "config field 'rope_theta' is not known to this spinel");
    b = good;
    testing::put<uint32_t>(b, cfg.count_at, testing::get<uint32_t>(b, cfg.count_at) + 1);
    testing::splice(b, cfg.end, cfg.end, enc_record("normalize", 4, {0}));
    has(error_with(b), "config field 'normalize' appears twice");
    b = good;  // drop the first record (architecture)
    testing::put<uint32_t>(b, cfg.count_at, testing::get<uint32_t>(b, cfg.count_at) - 1);
    const size_t arch_end = cfg.value_at.at("architecture") + 4 + 4;  // "bert"
    testing::splice(b, cfg.count_at + 4, arch_end, {});
    has(error_with(b), "config field 'architecture' is missing");
    b = good;
    testing::put<uint8_t>(b, cfg.value_at.at("normalize") - 1, 1);  // bool -> i64 type code
    testing::reseal(b);
    has(error_with(b), "config field 'normalize' has type i64, expected bool");
    b = good;
    testing::put<uint8_t>(b, cfg.value_at.at("normalize"), 2);
    testing::reseal(b);
    has(error_with(b), "config field 'normalize' is a bool stored as 2");
  }
  SUBCASE("unknown architecture") {
    auto b = good;
    const size_t at = testing::config_field(b, "architecture");
    testing::splice(b, at, at + 4 + 4, enc_str("roberta"));
    has(error_with(b), "architecture 'roberta' is not supported by this spinel (supported: bert");
  }
  SUBCASE("unknown tokenizer kind") {
    auto b = good;
    const size_t at = testing::section_offset(b, testing::kTokenizerSec);
    REQUIRE(std::string(&b[at + 4], 9) == "wordpiece");
    testing::splice(b, at, at + 4 + 9, enc_str("unigram"));
    has(error_with(b),
        "tokenizer: kind 'unigram' is not supported by this spinel (supported: wordpiece, bpe, "
        "sentencepiece)");
    // A known kind over another kind's bytes is that kind's error.
    auto c = good;
    testing::splice(c, at, at + 4 + 9, enc_str("bpe"));
    has(error_with(c), "tokenizer: BPE tokenizer section has a bad magic number");
  }
  SUBCASE("unknown value row kind, named output past the values") {
    auto b = good;
    const size_t g = testing::section_offset(b, testing::kGraphSec);
    const size_t rows_at = testing::str_end(b, g + 4) + 8;  // value 0: name, width, rows
    testing::put<uint32_t>(b, rows_at, 2);
    testing::reseal(b);
    has(error_with(b), "value 'embeddings' has unknown row kind 2");
    b = good;
    const auto last = testing::op_fields(b, 17);
    // graph output (i32), output count, then "pooler_output" and its value.
    const size_t value_at = testing::str_end(b, last.end + 8);
    testing::put<int32_t>(b, value_at, 1 << 20);
    testing::reseal(b);
    has(error_with(b), "graph output 'pooler_output' refers to value 1048576");
  }
  SUBCASE("a weight slot count past what this spinel knows") {
    auto b = good;
    testing::set_op_slots(b, 0, {0, 1, 2, 3, 4, -1});
    has(error_with(b), "6 weight slots, this spinel knows 5");
  }
  SUBCASE("format 2 and format 4 files") {
    for (uint32_t v : {2u, 4u}) {
      auto b = good;
      testing::put<uint32_t>(b, 8, v);
      testing::reseal(b);
      const std::string e = error_with(b);
      if (v == 2) {
        has(e, "format version 2 was written by an older spinel; convert the ONNX model again");
      } else {
        has(e, "format version 4 is newer than this spinel reads (format 3)");
      }
    }
  }
}

TEST_CASE("a Linear's input scale: kept by a round trip; 0, negative, NaN, Inf and wrong shapes refused") {
  const std::string dir = testing::temp_dir("spnl-in-scale");
  const float kGood = 0.375f;
  // The pooled head's S8 Linear with an input scale of `bad` at channel 5.
  auto make = [&](float bad, int64_t width_extra = 0) {
    auto w = std::make_unique<SpnlWriter>();
    testing::fill_tiny_model(*w, {});
    add_pooled_head(*w);
    Op& dense = w->graph.ops[w->graph.ops.size() - 2];
    REQUIRE(dense.name == "pooler.dense");
    const int64_t H = w->config.hidden_size + width_extra;
    std::vector<float> s(static_cast<size_t>(H), kGood);
    s[5] = bad;
    dense.w[slot::kInScale] = w->add_tensor("pooler.in_scale", DType::F32, {H}, s.data(), s.size() * 4);
    return w;
  };
  auto write_error = [&](const SpnlWriter& w) -> std::string {
    try {
      w.write(dir + "/bad.spnl");
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  const std::string path = dir + "/good.spnl";
  make(2.5f)->write(path);
  {
    auto m = Model::load(path);
    const Op& dense = m->graph().ops[m->graph().ops.size() - 2];
    REQUIRE(dense.w[slot::kInScale] >= 0);
    const float* s = m->data<float>(dense.w[slot::kInScale]);
    CHECK(s[0] == kGood);
    CHECK(s[5] == 2.5f);
  }
  for (float bad : {0.f, -1.f, std::nanf(""), std::numeric_limits<float>::infinity()}) {
    CAPTURE(bad);
    const std::string e = write_error(*make(bad));
    CHECK(e.find("Linear 'pooler.dense': input scale 'pooler.in_scale' holds") != std::string::npos);
    CHECK(e.find("at channel 5 (must be finite and > 0)") != std::string::npos);
  }
  CHECK(write_error(*make(1.f, 1)).find("weight 'input scale' (pooler.in_scale) has shape") != std::string::npos);
  {
    SpnlWriter w;
    testing::fill_tiny_model(w, {});
    Op* f32 = nullptr;
    for (Op& op : w.graph.ops)
      if (op.kind == OpKind::Linear && op.precision == Precision::F32) f32 = &op;
    REQUIRE(f32 != nullptr);
    const int64_t K = w.graph.values[static_cast<size_t>(f32->in0)].width;
    std::vector<float> s(static_cast<size_t>(K), 1.f);
    f32->w[slot::kInScale] = w.add_tensor("f32.in_scale", DType::F32, {K}, s.data(), s.size() * 4);
    CHECK(write_error(w).find("an f32 Linear has no input scale") != std::string::npos);
  }
  CHECK(!std::ifstream(dir + "/bad.spnl").good());

  // A file whose input scale was changed after writing (checksums fixed up
  // or not, the reader checks the values first): channel 5 set to -1.
  testing::Bytes bytes = read_all(path);
  const float want[2] = {kGood, 2.5f};
  const char* at = nullptr;
  for (size_t i = 0; i + 24 <= bytes.size(); i += 4) {
    float v[6];
    std::memcpy(v, bytes.data() + i, sizeof v);
    if (v[0] == kGood && v[4] == kGood && v[5] == want[1]) {
      at = bytes.data() + i;
      break;
    }
  }
  REQUIRE(at != nullptr);
  const float minus_one = -1.f;
  std::memcpy(bytes.data() + (at - bytes.data()) + 20, &minus_one, 4);
  write_all(dir + "/patched.spnl", bytes);
  const std::string e = load_error(dir + "/patched.spnl");
  CHECK(e.find("input scale 'pooler.in_scale' holds -1 at channel 5") != std::string::npos);
}
