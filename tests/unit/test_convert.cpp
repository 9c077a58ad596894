// converters/convert.h (the pipeline: its order, its option checks, nothing
// written on failure), converters/onnx_float16.h (float16 files widened to
// f32) and converters/diagnose.h (rejection messages that name the fix).
// Real exports of each form are tested end to end against ONNX Runtime in
// tests/conformance/test_import_forms.py.
#include <doctest/doctest.h>
#include <onnx/onnx_pb.h>
#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "converters/convert.h"
#include "converters/onnx_float16.h"
#include "converters/onnx_import.h"
#include "converters/onnx_tensors.h"
#include "runtime/error.h"

using namespace spinel;
using namespace spinel::onnx_import;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/spinel_convert_test_XXXXXX";
    const char* p = mkdtemp(tmpl);
    REQUIRE(p != nullptr);
    path = p;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  REQUIRE(out.good());
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void save(const onnx::ModelProto& m, const std::string& path) {
  std::ofstream out(path, std::ios::binary);
  REQUIRE(m.SerializeToOstream(&out));
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

onnx::ModelProto empty_model(int opset = 17) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  auto* os = m.add_opset_import();
  os->set_domain("");
  os->set_version(opset);
  m.mutable_graph()->set_name("g");
  return m;
}

onnx::NodeProto* add_node(onnx::ModelProto& m, const std::string& op, const std::string& name,
                          std::vector<std::string> ins, std::string out, const std::string& domain = "") {
  onnx::NodeProto* n = m.mutable_graph()->add_node();
  n->set_op_type(op);
  n->set_name(name);
  n->set_domain(domain);
  for (auto& i : ins) n->add_input(i);
  n->add_output(out);
  return n;
}

void add_io(onnx::ValueInfoProto* v, const std::string& name, int32_t type) {
  v->set_name(name);
  v->mutable_type()->mutable_tensor_type()->set_elem_type(type);
}

onnx::AttributeProto cast_to(int32_t type) {
  onnx::AttributeProto a;
  a.set_name("to");
  a.set_type(onnx::AttributeProto::INT);
  a.set_i(type);
  return a;
}

uint16_t half_bits(float f) {  // round to nearest even, for normal values in range
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int32_t exp = static_cast<int32_t>((x >> 23) & 0xff) - 127 + 15;
  uint32_t mant = x & 0x7fffffu;
  REQUIRE(exp > 0);
  REQUIRE(exp < 31);
  uint32_t h = sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  const uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(h);
}

onnx::TensorProto half_tensor(const std::string& name, const std::vector<float>& v, std::vector<int64_t> dims,
                              bool raw) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(onnx::TensorProto::FLOAT16);
  for (int64_t d : dims) t.add_dims(d);
  std::string bytes;
  for (float f : v) {
    const uint16_t h = half_bits(f);
    if (raw)
      bytes.append(reinterpret_cast<const char*>(&h), 2);
    else
      t.add_int32_data(h);
  }
  if (raw) t.set_raw_data(bytes);
  return t;
}

std::vector<float> floats_of(const onnx::TensorProto& t) {
  REQUIRE(t.data_type() == onnx::TensorProto::FLOAT);
  std::vector<float> v(t.raw_data().size() / 4);
  std::memcpy(v.data(), t.raw_data().data(), t.raw_data().size());
  return v;
}

// The message of the spinel::Error `f` throws ("" if none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string import_error(const std::string& path) {
  return error_of([&] {
    SpnlWriter w;
    import_onnx(path, w);
  });
}

const char* kWordPieceVocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n";

// A model type spinel does not read (BPE and WordPiece it does).
const char* kUnigramTokenizerJson =
    R"({"version": "1.0", "model": {"type": "Unigram", "unk_id": 0, "vocab": [["a", 0.0]]},
        "pre_tokenizer": {"type": "Metaspace"}})";
const char* kBpeTokenizerJson =
    R"({"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
        "pre_tokenizer": {"type": "ByteLevel"}})";

}  // namespace

// ---- float16 ---------------------------------------------------------------------------

TEST_CASE("half_to_float and bfloat16_to_float are exact") {
  CHECK(half_to_float(0x3c00) == 1.0f);
  CHECK(half_to_float(0xc000) == -2.0f);
  CHECK(half_to_float(0x7bff) == 65504.0f);
  CHECK(half_to_float(0xfbff) == -65504.0f);
  CHECK(half_to_float(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(half_to_float(0x03ff) == std::ldexp(1023.0f, -24));  // largest subnormal
  CHECK(half_to_float(0x0400) == std::ldexp(1.0f, -14));  // smallest normal
  CHECK(half_to_float(0x3dc0) == 1.4375f);
  CHECK(half_to_float(0x3da8) == 1.4140625f);  // sqrt(2) in float16
  CHECK(std::signbit(half_to_float(0x8000)));
  CHECK(half_to_float(0x8000) == 0.0f);
  CHECK(std::isinf(half_to_float(0x7c00)));
  CHECK(std::isnan(half_to_float(0x7e00)));
  // Every finite positive half is larger than the one before, and converts back.
  float prev = -1.0f;
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const float f = half_to_float(static_cast<uint16_t>(h));
    REQUIRE(f > prev);
    prev = f;
    if (h >= 0x0400) REQUIRE(half_bits(f) == h);
  }
  CHECK(bfloat16_to_float(0x3f80) == 1.0f);
  CHECK(bfloat16_to_float(0xc040) == -3.0f);
  CHECK(bfloat16_to_float(0x7f7f) == std::ldexp(255.0f, 120));
}

TEST_CASE("a float16 graph is widened to float32 and its no-op Casts dropped") {
  TempDir dir;
  // x (f32) -> Cast(FLOAT16) -> MatMul(W fp16) -> Add(b fp16) -> Mul(Constant fp16)
  //   -> Cast(FLOAT) -> y (graph output); ids (int64) -> Cast(FLOAT16) -> z (graph output)
  onnx::ModelProto m = empty_model();
  onnx::GraphProto* g = m.mutable_graph();
  add_io(g->add_input(), "x", onnx::TensorProto::FLOAT);
  add_io(g->add_input(), "ids", onnx::TensorProto::INT64);
  add_io(g->add_output(), "y", onnx::TensorProto::FLOAT);
  add_io(g->add_output(), "z", onnx::TensorProto::FLOAT16);
  *g->add_initializer() = half_tensor("W", {1.0f, -0.5f, 0.25f, 1.4140625f}, {2, 2}, true);
  *g->add_initializer() = half_tensor("b", {0.1f, -65504.0f}, {2}, false);
  *add_node(m, "Cast", "cast_in", {"x"}, "x16")->add_attribute() = cast_to(onnx::TensorProto::FLOAT16);
  add_node(m, "MatMul", "mm", {"x16", "W"}, "h");
  add_node(m, "Add", "add", {"h", "b"}, "hb");
  onnx::NodeProto* c = add_node(m, "Constant", "half_const", {}, "k");
  onnx::AttributeProto* ca = c->add_attribute();
  ca->set_name("value");
  ca->set_type(onnx::AttributeProto::TENSOR);
  *ca->mutable_t() = half_tensor("", {0.5f}, {}, true);
  add_node(m, "Mul", "mul", {"hb", "k"}, "y16");
  *add_node(m, "Cast", "graph_output_cast0", {"y16"}, "y")->add_attribute() = cast_to(onnx::TensorProto::FLOAT);
  *add_node(m, "Cast", "ids_cast", {"ids"}, "z")->add_attribute() = cast_to(onnx::TensorProto::FLOAT16);
  save(m, dir.file("half.onnx"));

  Float16Widening w;
  const onnx::ModelProto r = load_model_proto(dir.file("half.onnx"), &w);
  CHECK(w.tensors == 3);
  CHECK(w.casts_retargeted == 2);  // cast_in and ids_cast
  CHECK(w.casts_removed == 2);     // cast_in (float -> float) and the output cast
  const onnx::GraphProto& rg = r.graph();
  REQUIRE(rg.node_size() == 5);  // MatMul, Add, Constant, Mul, ids_cast
  CHECK(floats_of(rg.initializer(0)) == std::vector<float>{1.0f, -0.5f, 0.25f, 1.4140625f});
  const std::vector<float> b = floats_of(rg.initializer(1));
  CHECK(b[0] == half_to_float(half_bits(0.1f)));
  CHECK(b[1] == -65504.0f);
  CHECK(rg.output(0).name() == "y");
  CHECK(rg.output(1).type().tensor_type().elem_type() == onnx::TensorProto::FLOAT);
  for (const auto& n : rg.node()) {
    if (n.name() == "mm") CHECK(n.input(0) == "x");  // reads the graph input directly now
    if (n.name() == "mul") CHECK(n.output(0) == "y");  // produces the graph output under its name
    if (n.name() == "half_const") CHECK(floats_of(n.attribute(0).t()) == std::vector<float>{0.5f});
    if (n.name() == "ids_cast") CHECK(n.attribute(0).i() == onnx::TensorProto::FLOAT);  // int -> float stays
  }
}

TEST_CASE("a float32 graph is left exactly as it was") {
  TempDir dir;
  onnx::ModelProto m = empty_model();
  onnx::GraphProto* g = m.mutable_graph();
  add_io(g->add_input(), "x", onnx::TensorProto::FLOAT);
  add_io(g->add_output(), "y", onnx::TensorProto::FLOAT);
  *add_node(m, "Cast", "noop_cast", {"x"}, "y")->add_attribute() = cast_to(onnx::TensorProto::FLOAT);
  save(m, dir.file("f32.onnx"));
  Float16Widening w;
  const onnx::ModelProto r = load_model_proto(dir.file("f32.onnx"), &w);
  CHECK(!w.any());
  CHECK(r.SerializeAsString() == m.SerializeAsString());
}

TEST_CASE("malformed float16 data is refused naming the tensor and the file") {
  TempDir dir;
  onnx::ModelProto m = empty_model();
  add_io(m.mutable_graph()->add_output(), "y", onnx::TensorProto::FLOAT16);
  onnx::TensorProto t = half_tensor("short_weight", {1.0f, 2.0f}, {3}, true);  // 2 values, shape says 3
  *m.mutable_graph()->add_initializer() = t;
  add_node(m, "Identity", "id", {"short_weight"}, "y");
  save(m, dir.file("bad.onnx"));
  const std::string err = import_error(dir.file("bad.onnx"));
  CHECK(contains(err, dir.file("bad.onnx")));
  CHECK(contains(err, "short_weight"));
}

// ---- rejection messages ---------------------------------------------------------------------

TEST_CASE("many unsupported nodes: 20 names, a count, grouped by op type") {
  TempDir dir;
  onnx::ModelProto m = empty_model();
  add_io(m.mutable_graph()->add_input(), "x", onnx::TensorProto::FLOAT);
  std::string prev = "x";
  const char* ops[] = {"Cos", "Sin", "Abs"};
  for (int i = 0; i < 310; ++i) {
    const std::string out = "v" + std::to_string(i);
    add_node(m, ops[i % 3], "odd_node_" + std::to_string(i), {prev}, out);
    prev = out;
  }
  add_io(m.mutable_graph()->add_output(), prev, onnx::TensorProto::FLOAT);
  save(m, dir.file("model.onnx"));
  const std::string err = import_error(dir.file("model.onnx"));
  CHECK(err.size() < 2048);
  CHECK(contains(err, "unsupported nodes (310): odd_node_0 (Op: Cos), "));
  CHECK(contains(err, "odd_node_19 (Op: Sin), and 290 more"));
  CHECK(!contains(err, "odd_node_20 "));
  CHECK(contains(err, "by op type: Cos x104, Abs x103, Sin x103"));
}

TEST_CASE("an ONNX Runtime-optimized graph is told to convert the unoptimized export") {
  TempDir dir;
  onnx::ModelProto m = empty_model();
  add_io(m.mutable_graph()->add_input(), "x", onnx::TensorProto::FLOAT);
  add_node(m, "SkipLayerNormalization", "sln0", {"x", "x"}, "a", "com.microsoft");
  add_node(m, "Attention", "att0", {"a"}, "b", "com.microsoft");
  add_node(m, "FastGelu", "fg0", {"b"}, "c", "com.microsoft");
  add_io(m.mutable_graph()->add_output(), "c", onnx::TensorProto::FLOAT);
  save(m, dir.file("model.onnx"));
  const std::string err = import_error(dir.file("model.onnx"));
  CHECK(contains(err, "this is an ONNX Runtime-optimized file (com.microsoft.Attention x1, "
                      "com.microsoft.FastGelu x1, com.microsoft.SkipLayerNormalization x1); "
                      "convert the unoptimized export"));
  CHECK(contains(err, "att0 (Op: com.microsoft.Attention)"));
}

TEST_CASE("a quantized graph is told to convert the f32 export with --quant int8") {
  TempDir dir;
  onnx::ModelProto m = empty_model();
  add_io(m.mutable_graph()->add_input(), "x", onnx::TensorProto::FLOAT);
  onnx::NodeProto* q = add_node(m, "DynamicQuantizeLinear", "dql", {"x"}, "xq");
  q->add_output("xs");
  q->add_output("xz");
  add_node(m, "MatMulInteger", "mmi", {"xq", "xq"}, "y");
  add_io(m.mutable_graph()->add_output(), "y", onnx::TensorProto::INT32);
  save(m, dir.file("model.onnx"));
  const std::string err = import_error(dir.file("model.onnx"));
  CHECK(contains(err, "this file is already quantized (DynamicQuantizeLinear x1, MatMulInteger x1); "
                      "convert the f32 export with --quant int8"));
}

TEST_CASE("config.json beside the model names a family spinel does not support") {
  TempDir dir;
  onnx::ModelProto m = empty_model();
  add_io(m.mutable_graph()->add_input(), "x", onnx::TensorProto::FLOAT);
  add_node(m, "Relu", "relu0", {"x"}, "y");
  add_io(m.mutable_graph()->add_output(), "y", onnx::TensorProto::FLOAT);
  save(m, dir.file("model.onnx"));
  const std::string path = dir.file("model.onnx");

  CHECK(!contains(import_error(path), "not supported yet"));  // no config.json
  write_text(dir.file("config.json"), R"({"model_type": "xlm-roberta", "hidden_size": 768})");
  CHECK(contains(import_error(path), "XLM-RoBERTa is not supported yet (supported: BERT"));
  write_text(dir.file("config.json"), R"({"model_type": "some_new_thing"})");
  CHECK(contains(import_error(path), "'some_new_thing' is not supported yet"));
  write_text(dir.file("config.json"), R"({"model_type": "bert"})");
  CHECK(!contains(import_error(path), "not supported yet"));
  // A broken config.json is only a missing hint: the graph's own message stays.
  write_text(dir.file("config.json"), R"({"model_type": )");
  const std::string err = import_error(path);
  CHECK(contains(err, "relu0 (Op: Relu)"));
  CHECK(!contains(err, "config.json"));
}

// ---- the pipeline ---------------------------------------------------------------------------

TEST_CASE("convert() reads the tokenizer before the graph") {
  TempDir dir;
  write_text(dir.file("model.onnx"), "not an onnx file at all");
  write_text(dir.file("tokenizer.json"), kUnigramTokenizerJson);
  write_text(dir.file("config.json"), R"({"model_type": "roberta"})");
  ConvertOptions o;
  o.onnx_path = dir.file("model.onnx");
  o.output_path = dir.file("out.spnl");
  std::vector<std::pair<ConvertStep, bool>> seen;
  const std::string err = error_of([&] {
    convert(o, [&](const ConvertProgress& p, const ConvertReport&) { seen.push_back({p.step, p.finished}); });
  });
  CHECK(contains(err, dir.file("tokenizer.json")));
  CHECK(contains(err, "\"Unigram\""));
  CHECK(contains(err, "RoBERTa is not supported yet"));
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].first == ConvertStep::Tokenizer);
  CHECK(!fs::exists(o.output_path));

  // A WordPiece tokenizer gets past that; then the graph is read and refused.
  write_text(dir.file("vocab.txt"), kWordPieceVocab);
  o.tokenizer_path = dir.file("vocab.txt");
  seen.clear();
  const std::string err2 = error_of([&] {
    convert(o, [&](const ConvertProgress& p, const ConvertReport&) { seen.push_back({p.step, p.finished}); });
  });
  CHECK(contains(err2, dir.file("model.onnx")));
  CHECK(contains(err2, "not an ONNX model"));
  REQUIRE(seen.size() == 3);
  CHECK(seen[1] == std::make_pair(ConvertStep::Tokenizer, true));
  CHECK(seen[2] == std::make_pair(ConvertStep::Graph, false));
  CHECK(!fs::exists(o.output_path));

  // So does a BPE tokenizer.json (issue 9).
  write_text(dir.file("bpe.json"), kBpeTokenizerJson);
  o.tokenizer_path = dir.file("bpe.json");
  seen.clear();
  const std::string err3 = error_of([&] {
    convert(o, [&](const ConvertProgress& p, const ConvertReport&) { seen.push_back({p.step, p.finished}); });
  });
  CHECK(contains(err3, "not an ONNX model"));
  REQUIRE(seen.size() == 3);
  CHECK(seen[1] == std::make_pair(ConvertStep::Tokenizer, true));
}

TEST_CASE("convert() refuses inconsistent options before reading anything") {
  TempDir dir;
  write_text(dir.file("model.onnx"), "x");
  write_text(dir.file("vocab.txt"), kWordPieceVocab);
  ConvertOptions o;
  o.onnx_path = dir.file("model.onnx");

  o.output_path = dir.file("model.onnx");  // would replace the input
  CHECK_THROWS_AS(convert(o), ConvertOptionError);
  CHECK(read_text(dir.file("model.onnx")) == "x");
  o.output_path = dir.file("vocab.txt");
  CHECK_THROWS_AS(convert(o), ConvertOptionError);
  CHECK(read_text(dir.file("vocab.txt")) == kWordPieceVocab);
  fs::create_hard_link(dir.file("model.onnx"), dir.file("hard.spnl"));
  o.output_path = dir.file("hard.spnl");
  CHECK_THROWS_AS(convert(o), ConvertOptionError);

  o.output_path = dir.file("out.spnl");
  o.calibration_path = dir.file("vocab.txt");  // calibration without int8
  CHECK_THROWS_AS(convert(o), ConvertOptionError);
  o.calibration_path.clear();

  TempDir empty;
  write_text(empty.file("model.onnx"), "x");
  ConvertOptions n;
  n.onnx_path = empty.file("model.onnx");
  n.output_path = empty.file("out.spnl");
  const std::string err = error_of([&] { convert(n); });
  CHECK(contains(err, "no --tokenizer given and no tokenizer.json or vocab.txt next to"));

  // A model path that is not a regular file is named before the tokenizer is read.
  fs::create_directory(dir.file("dir.onnx"));
  o.onnx_path = dir.file("dir.onnx");
  o.tokenizer_path = dir.file("missing-tokenizer.json");
  CHECK(contains(error_of([&] { convert(o); }), dir.file("dir.onnx")));
  CHECK(!fs::exists(dir.file("out.spnl")));
}

TEST_CASE("convert() leaves an existing output as it was when it fails") {
  TempDir dir;
  write_text(dir.file("model.onnx"), "not onnx");
  write_text(dir.file("vocab.txt"), kWordPieceVocab);
  write_text(dir.file("out.spnl"), "previous contents");
  ConvertOptions o;
  o.onnx_path = dir.file("model.onnx");
  o.output_path = dir.file("out.spnl");
  CHECK_THROWS_AS(convert(o), Error);
  CHECK(read_text(dir.file("out.spnl")) == "previous contents");
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir.path)) names.push_back(e.path().filename());
  CHECK(names.size() == 3);
}
