// ONNX importer tests on small models built here with onnx::ModelProto: a
// tiny BERT encoder laid out like torch.onnx.export's output (both LayerNorm
// forms, both GELUs), graphs with unsupported nodes, broken files and
// external-data references that try to leave the model directory.
#include <doctest/doctest.h>
#include <onnx/onnx_pb.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "converters/onnx_import.h"
#include "runtime/error.h"

using namespace spinel;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/spinel_onnx_test_XXXXXX";
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

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  REQUIRE(out.good());
}

void save(const onnx::ModelProto& m, const std::string& path) {
  std::ofstream out(path, std::ios::binary);
  REQUIRE(m.SerializeToOstream(&out));
}

// The message of the spinel::Error the import throws ("" if it succeeds).
std::string import_error(const std::string& path) {
  SpnlWriter w;
  try {
    import_onnx(path, w);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Builds graphs node by node, naming every value after its node.
class Builder {
 public:
  explicit Builder(int opset) {
    model_.set_ir_version(8);
    model_.set_producer_name("spinel-test");
    auto* os = model_.add_opset_import();
    os->set_domain("");
    os->set_version(opset);
    g_ = model_.mutable_graph();
    g_->set_name("test");
  }
  onnx::ModelProto& model() { return model_; }
  onnx::GraphProto& graph() { return *g_; }

  void input(const std::string& name, int32_t type) {
    auto* v = g_->add_input();
    v->set_name(name);
    v->mutable_type()->mutable_tensor_type()->set_elem_type(type);
  }
  void output(const std::string& name) {
    auto* v = g_->add_output();
    v->set_name(name);
    v->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  }

  onnx::TensorProto* floats(const std::string& name, std::vector<int64_t> dims, const std::vector<float>& v) {
    auto* t = g_->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) t->add_dims(d);
    t->set_raw_data(std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)));
    return t;
  }
  // A Constant node, the way torch emits scalars and shape pieces.
  std::string constant(std::vector<int64_t> dims, const std::vector<double>& v, bool is_float) {
    const std::string name = "/const_" + std::to_string(++counter_);
    onnx::NodeProto* n = g_->add_node();
    n->set_op_type("Constant");
    n->set_name(name);
    n->add_output(name + "_output_0");
    auto* a = n->add_attribute();
    a->set_name("value");
    a->set_type(onnx::AttributeProto::TENSOR);
    onnx::TensorProto* t = a->mutable_t();
    for (int64_t d : dims) t->add_dims(d);
    t->set_data_type(is_float ? onnx::TensorProto::FLOAT : onnx::TensorProto::INT64);
    for (double x : v) {
      if (is_float) t->add_float_data(static_cast<float>(x));
      else t->add_int64_data(static_cast<int64_t>(x));
    }
    return n->output(0);
  }
  std::string scalar(double v) { return constant({}, {v}, true); }
  std::string ints(const std::vector<double>& v) { return constant({static_cast<int64_t>(v.size())}, v, false); }

  onnx::NodeProto* node(const std::string& op, const std::string& name, std::vector<std::string> inputs,
                        const std::string& out = "") {
    onnx::NodeProto* n = g_->add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (const auto& i : inputs) n->add_input(i);
    n->add_output(out.empty() ? name + "_output_0" : out);
    return n;
  }
  std::string op(const std::string& op, const std::string& name, std::vector<std::string> inputs,
                 const std::string& out = "") {
    return node(op, name, std::move(inputs), out)->output(0);
  }
  static void ints_attr(onnx::NodeProto* n, const char* name, std::vector<int64_t> v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  static void int_attr(onnx::NodeProto* n, const char* name, int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void float_attr(onnx::NodeProto* n, const char* name, float v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }

 private:
  onnx::ModelProto model_;
  onnx::GraphProto* g_;
  int counter_ = 0;
};

std::vector<float> pattern(size_t n, float seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = 0.1f * std::sin(seed + 0.37f * static_cast<float>(i));
  return v;
}

struct TinyOptions {
  bool fused_layernorm = true;  // opset 17 LayerNormalization, else decomposed
  bool tanh_gelu = false;
  double mask_fill = -10000.0;
  bool use_mask = true;          // false: scores go straight to Softmax
  bool range_positions = false;  // Range(0, seq, 1) instead of slicing a buffer
  bool mul_scale = false;        // scores * 0.5 instead of scores / 2
  int layers = 2;
  // Token types: "input" (token_type_ids), "constant" (no such input: the
  // table is read by Expand(Slice(all-zero buffer)), as BertModel without
  // token_type_ids exports), "none" (no table: DistilBERT).
  std::string token_types = "input";
  bool where_mask = false;  // DistilBERT: Where(Equal(mask, 0) reshaped/expanded, fill, scores) per layer
  bool prescale_q = false;  // DistilBERT: q / sqrt(D) before Q.K^T, no scale after it
  // BertPooler after the last layer: "" (none), or its activation ("Tanh", "Relu").
  std::string pooler;
  bool pooler_gemm = true;  // Gemm(transB=1) as torch exports nn.Linear on a 2-D input, else MatMul + Add
  // sentence-transformers heads: "" (none), "mean", "mean+normalize".
  std::string sentence_pooling;
  std::string hidden_name;  // name of the last layer's output ("" = its node output)
};

// A BERT encoder shaped like torch.onnx.export's: hidden 8, 2 heads, FFN 16,
// vocab 10, 2 token types, 16 positions.
struct TinyBert {
  static constexpr int64_t H = 8, heads = 2, D = 4, I = 16, V = 10, P = 16;
  TinyOptions opt;
  Builder b;
  std::vector<float> wq0, wk0, wv0, bq0, bk0, bv0;

  explicit TinyBert(TinyOptions o) : opt(o), b(o.fused_layernorm ? 17 : 14) {}

  std::string layernorm(const std::string& x, const std::string& p, float seed) {
    const std::string gamma = p + ".weight", beta = p + ".bias";
    b.floats(gamma, {H}, pattern(H, seed));
    b.floats(beta, {H}, pattern(H, seed + 1));
    if (opt.fused_layernorm) {
      auto* n = b.node("LayerNormalization", p + "/LayerNormalization", {x, gamma, beta});
      Builder::int_attr(n, "axis", -1);
      Builder::float_attr(n, "epsilon", 1e-12f);
      return n->output(0);
    }
    auto* rm = b.node("ReduceMean", p + "/ReduceMean", {x});
    Builder::ints_attr(rm, "axes", {-1});
    const std::string d = b.op("Sub", p + "/Sub", {x, rm->output(0)});
    const std::string sq = b.op("Pow", p + "/Pow", {d, b.scalar(2.0)});
    auto* rm2 = b.node("ReduceMean", p + "/ReduceMean_1", {sq});
    Builder::ints_attr(rm2, "axes", {-1});
    const std::string ve = b.op("Add", p + "/Add", {rm2->output(0), b.scalar(1e-12)});
    const std::string s = b.op("Sqrt", p + "/Sqrt", {ve});
    const std::string n = b.op("Div", p + "/Div", {d, s});
    const std::string m = b.op("Mul", p + "/Mul", {n, gamma});
    return b.op("Add", p + "/Add_1", {m, beta});
  }

  // y = x W + b with torch's [in, out] weight, bias added as Add(bias, MatMul).
  std::string linear(const std::string& x, const std::string& p, int64_t in, int64_t out, float seed,
                     std::vector<float>* w_out = nullptr, std::vector<float>* b_out = nullptr) {
    const std::vector<float> w = pattern(static_cast<size_t>(in * out), seed);
    const std::vector<float> bias = pattern(static_cast<size_t>(out), seed + 0.5f);
    if (w_out) *w_out = w;
    if (b_out) *b_out = bias;
    b.floats(p + ".weight", {in, out}, w);
    b.floats(p + ".bias", {out}, bias);
    const std::string mm = b.op("MatMul", p + "/MatMul", {x, p + ".weight"});
    return b.op("Add", p + "/Add", {p + ".bias", mm});
  }

  // [b, s] dims of `x` through Shape -> Gather -> Unsqueeze, as torch exports them.
  std::string dim(const std::string& x, int i, const std::string& p) {
    const std::string sh = b.op("Shape", p + "/Shape_" + std::to_string(i), {x});
    auto* ga = b.node("Gather", p + "/Gather_" + std::to_string(i), {sh, b.constant({}, {double(i)}, false)});
    Builder::int_attr(ga, "axis", 0);
    return b.op("Unsqueeze", p + "/Unsqueeze_" + std::to_string(i), {ga->output(0), b.ints({0})});
  }
  std::vector<std::string> batch_seq(const std::string& x, const std::string& p) {
    return {dim(x, 0, p), dim(x, 1, p)};
  }

  std::string split_heads(const std::string& x, const std::string& p, std::vector<int64_t> perm) {
    auto bs = batch_seq(x, p);
    const std::string shape =
        b.op("Concat", p + "/Concat", {bs[0], bs[1], b.ints({double(heads)}), b.ints({double(D)})});
    Builder::int_attr(b.graph().mutable_node(b.graph().node_size() - 1), "axis", 0);
    const std::string r = b.op("Reshape", p + "/Reshape", {x, shape});
    auto* t = b.node("Transpose", p + "/Transpose", {r});
    Builder::ints_attr(t, "perm", perm);
    return t->output(0);
  }

  std::string gelu(const std::string& x, const std::string& p) {
    if (!opt.tanh_gelu) {
      const std::string d = b.op("Div", p + "/Div", {x, b.scalar(1.4142135381698608)});
      const std::string e = b.op("Erf", p + "/Erf", {d});
      const std::string a = b.op("Add", p + "/Add", {e, b.scalar(1.0)});
      const std::string m = b.op("Mul", p + "/Mul", {x, a});
      return b.op("Mul", p + "/Mul_1", {m, b.scalar(0.5)});
    }
    const std::string half = b.op("Mul", p + "/Mul", {x, b.scalar(0.5)});
    const std::string cube = b.op("Pow", p + "/Pow", {x, b.scalar(3.0)});
    const std::string c = b.op("Mul", p + "/Mul_1", {cube, b.scalar(0.044715)});
    const std::string s = b.op("Add", p + "/Add", {x, c});
    const std::string k = b.op("Mul", p + "/Mul_2", {s, b.scalar(0.7978845834732056)});
    const std::string t = b.op("Tanh", p + "/Tanh", {k});
    const std::string a = b.op("Add", p + "/Add_1", {t, b.scalar(1.0)});
    return b.op("Mul", p + "/Mul_3", {half, a});
  }

  onnx::ModelProto& build() {
    b.input("input_ids", onnx::TensorProto::INT64);
    b.input("attention_mask", onnx::TensorProto::INT64);
    if (opt.token_types == "input") b.input("token_type_ids", onnx::TensorProto::INT64);

    std::string mask;
    if (opt.use_mask && !opt.where_mask) mask = build_mask();
    build_encoder(mask);
    return b.model();
  }

  // DistilBERT's masked_fill: Where(Expand(Reshape(mask == 0, [b,1,1,s]), Shape(scores)), fill, scores).
  std::string where_mask(const std::string& scores, const std::string& p, double compare_with = 0.0) {
    const std::string eq = b.op("Equal", p + "/Equal", {"attention_mask", b.constant({}, {compare_with}, false)});
    auto bs = batch_seq("attention_mask", p + "/mask");
    auto* cat = b.node("Concat", p + "/Concat_mask", {bs[0], b.ints({1}), b.ints({1}), bs[1]});
    Builder::int_attr(cat, "axis", 0);
    const std::string r = b.op("Reshape", p + "/Reshape_mask", {eq, cat->output(0)});
    const std::string sh = b.op("Shape", p + "/Shape_scores", {scores});
    const std::string ex = b.op("Expand", p + "/Expand_mask", {r, sh});
    auto* cast = b.node("Cast", p + "/Cast_mask", {ex});
    Builder::int_attr(cast, "to", onnx::TensorProto::BOOL);
    return b.op("Where", p + "/Where", {cast->output(0), b.scalar(opt.mask_fill), scores});
  }

  // BertPooler: Tanh(Gemm(Gather(h, 0, axis=1), W, b)).
  std::vector<float> pooler_w, pooler_b;  // torch layout [out, in]
  void build_pooler(const std::string& h) {
    auto* ga = b.node("Gather", "/pooler/Gather", {h, b.constant({}, {0.0}, false)});
    Builder::int_attr(ga, "axis", 1);
    pooler_w = pattern(H * H, 77);
    pooler_b = pattern(H, 78);
    std::string dense;
    if (opt.pooler_gemm) {
      b.floats("pooler.dense.weight", {H, H}, pooler_w);
      b.floats("pooler.dense.bias", {H}, pooler_b);
      auto* gemm = b.node("Gemm", "/pooler/dense/Gemm", {ga->output(0), "pooler.dense.weight", "pooler.dense.bias"});
      Builder::float_attr(gemm, "alpha", 1.f);
      Builder::float_attr(gemm, "beta", 1.f);
      Builder::int_attr(gemm, "transB", 1);
      dense = gemm->output(0);
    } else {
      std::vector<float> wt(static_cast<size_t>(H * H));  // [in, out] for MatMul
      for (int64_t r = 0; r < H; ++r)
        for (int64_t c = 0; c < H; ++c) wt[static_cast<size_t>(c * H + r)] = pooler_w[static_cast<size_t>(r * H + c)];
      b.floats("pooler.dense.weight", {H, H}, wt);
      b.floats("pooler.dense.bias", {H}, pooler_b);
      const std::string mm = b.op("MatMul", "/pooler/dense/MatMul", {ga->output(0), "pooler.dense.weight"});
      dense = b.op("Add", "/pooler/dense/Add", {mm, "pooler.dense.bias"});
    }
    b.op(opt.pooler, "/pooler/activation/" + opt.pooler, {dense}, "pooler_output");
    b.output("pooler_output");
  }

  // sentence-transformers Pooling (mean) [+ Normalize], as Optimum exports them.
  void build_sentence_pooling(const std::string& h) {
    const std::string u = b.op("Unsqueeze", "/Unsqueeze", {"attention_mask", b.ints({-1})});
    const std::string sh = b.op("Shape", "/Shape", {h});
    const std::string ex = b.op("Expand", "/Expand", {u, sh});
    auto* cast = b.node("Cast", "/Cast", {ex});
    Builder::int_attr(cast, "to", onnx::TensorProto::FLOAT);
    const std::string m = cast->output(0);
    const std::string hm = b.op("Mul", "/Mul_1", {h, m});
    auto* s1 = b.node("ReduceSum", "/ReduceSum", {hm, b.ints({1})});
    Builder::int_attr(s1, "keepdims", 0);
    auto* s2 = b.node("ReduceSum", "/ReduceSum_1", {m, b.ints({1})});
    Builder::int_attr(s2, "keepdims", 0);
    const std::string clip = b.op("Clip", "/Clip", {s2->output(0), b.scalar(1e-9)});
    const bool norm = opt.sentence_pooling == "mean+normalize";
    const std::string mean = b.op("Div", "/Div", {s1->output(0), clip}, norm ? "" : "sentence_embedding");
    if (norm) {
      auto* l2 = b.node("ReduceL2", "/ReduceL2", {mean});
      Builder::ints_attr(l2, "axes", {1});
      Builder::int_attr(l2, "keepdims", 1);
      const std::string c = b.op("Clip", "/Clip_1", {l2->output(0), b.scalar(1e-12)});
      const std::string e = b.op("Expand", "/Expand_1", {c, b.op("Shape", "/Shape_4", {mean})});
      b.op("Div", "/Div_1", {mean, e}, "sentence_embedding");
    }
    b.output("sentence_embedding");
  }

  // Additive mask: (1 - mask[:, None, None, :]) * fill.
  std::string build_mask() {
    auto* u1 = b.node("Unsqueeze", "/bert/Unsqueeze", {"attention_mask", b.ints({1})});
    auto* u2 = b.node("Unsqueeze", "/bert/Unsqueeze_1", {u1->output(0), b.ints({2})});
    auto* cast = b.node("Cast", "/bert/Cast", {u2->output(0)});
    Builder::int_attr(cast, "to", onnx::TensorProto::FLOAT);
    const std::string inv = b.op("Sub", "/bert/Sub", {b.scalar(1.0), cast->output(0)});
    return b.op("Mul", "/bert/Mul", {inv, b.scalar(opt.mask_fill)});
  }

  void build_encoder(const std::string& mask) {
    // Embeddings; position ids are a slice of a constant 0..P-1 buffer, or a Range.
    b.floats("word_embeddings.weight", {V, H}, pattern(V * H, 1));
    b.floats("position_embeddings.weight", {P, H}, pattern(P * H, 3));
    const std::string we = b.op("Gather", "/embeddings/word_embeddings/Gather", {"word_embeddings.weight", "input_ids"});
    std::string e1 = we;
    if (opt.token_types != "none") {
      b.floats("token_type_embeddings.weight", {2, H}, pattern(2 * H, 2));
      std::string type_ids = "token_type_ids";
      if (opt.token_types == "constant") {
        // buffer[:, :seq].expand(batch, seq) of a registered all-zero buffer.
        const std::string buf = b.constant({1, P}, std::vector<double>(P, 0.0), false);
        const std::string seq = dim("input_ids", 1, "/types");
        const std::string sl = b.op("Slice", "/types/Slice", {buf, b.ints({0}), seq, b.ints({1}), b.ints({1})});
        auto bs = batch_seq("input_ids", "/types/expand");
        auto* cat = b.node("Concat", "/types/Concat", {bs[0], bs[1]});
        Builder::int_attr(cat, "axis", 0);
        type_ids = b.op("Expand", "/types/Expand", {sl, cat->output(0)});
      }
      const std::string te = b.op("Gather", "/embeddings/token_type_embeddings/Gather", {"token_type_embeddings.weight", type_ids});
      e1 = b.op("Add", "/embeddings/Add", {we, te});
    }
    std::string pid;
    if (opt.range_positions) {
      const std::string sh = b.op("Shape", "/embeddings/Shape", {"input_ids"});
      auto* ga = b.node("Gather", "/embeddings/Gather", {sh, b.constant({}, {1.0}, false)});
      Builder::int_attr(ga, "axis", 0);
      const std::string r = b.op("Range", "/embeddings/Range",
                                 {b.constant({}, {0.0}, false), ga->output(0), b.constant({}, {1.0}, false)});
      pid = b.op("Unsqueeze", "/embeddings/Unsqueeze", {r, b.ints({0})});
    } else {
      std::vector<double> arange;
      for (int64_t i = 0; i < P; ++i) arange.push_back(double(i));
      const std::string buf = b.constant({1, P}, arange, false);
      const std::string seq = dim("input_ids", 1, "/embeddings");
      pid = b.op("Slice", "/embeddings/Slice", {buf, b.ints({0}), seq, b.ints({1}), b.ints({1})});
    }
    const std::string pe = b.op("Gather", "/embeddings/position_embeddings/Gather", {"position_embeddings.weight", pid});
    const std::string e2 = b.op("Add", "/embeddings/Add_1", {e1, pe});
    std::string h = layernorm(e2, "/embeddings/LayerNorm", 4);

    for (int l = 0; l < opt.layers; ++l) {
      const std::string p = "/encoder/layer." + std::to_string(l);
      const float s = 10.f * float(l + 1);
      const std::string q = linear(h, p + "/attention/self/query", H, H, s, l == 0 ? &wq0 : nullptr, l == 0 ? &bq0 : nullptr);
      const std::string k = linear(h, p + "/attention/self/key", H, H, s + 1, l == 0 ? &wk0 : nullptr, l == 0 ? &bk0 : nullptr);
      const std::string v = linear(h, p + "/attention/self/value", H, H, s + 2, l == 0 ? &wv0 : nullptr, l == 0 ? &bv0 : nullptr);
      const std::string kt = split_heads(k, p + "/attention/self/k", {0, 2, 3, 1});
      const std::string vh = split_heads(v, p + "/attention/self/v", {0, 2, 1, 3});
      std::string qh = split_heads(q, p + "/attention/self/q", {0, 2, 1, 3});
      if (opt.prescale_q) qh = b.op("Div", p + "/attention/self/Div_q", {qh, b.scalar(2.0)});
      const std::string scores = b.op("MatMul", p + "/attention/self/MatMul", {qh, kt});
      const std::string scaled = opt.prescale_q ? scores
                                 : opt.mul_scale ? b.op("Mul", p + "/attention/self/Mul", {scores, b.scalar(0.5)})
                                                 : b.op("Div", p + "/attention/self/Div", {scores, b.scalar(2.0)});
      // The mask Add, when present, is written mask-first in odd layers.
      const std::string masked =
          opt.where_mask ? where_mask(scaled, p + "/attention/self")
          : mask.empty() ? scaled
                         : b.op("Add", p + "/attention/self/Add", l % 2 ? std::vector<std::string>{mask, scaled}
                                                                         : std::vector<std::string>{scaled, mask});
      auto* sm = b.node("Softmax", p + "/attention/self/Softmax", {masked});
      Builder::int_attr(sm, "axis", -1);
      const std::string ctx = b.op("MatMul", p + "/attention/self/MatMul_1", {sm->output(0), vh});
      auto* tr = b.node("Transpose", p + "/attention/self/Transpose_3", {ctx});
      Builder::ints_attr(tr, "perm", {0, 2, 1, 3});
      auto bs = batch_seq(tr->output(0), p + "/attention/self/merge");
      auto* cat = b.node("Concat", p + "/attention/self/Concat_3", {bs[0], bs[1], b.ints({double(H)})});
      Builder::int_attr(cat, "axis", 0);
      const std::string merged = b.op("Reshape", p + "/attention/self/Reshape_3", {tr->output(0), cat->output(0)});
      const std::string ao = linear(merged, p + "/attention/output/dense", H, H, s + 3);
      const std::string r1 = b.op("Add", p + "/attention/output/Add", {ao, h});
      const std::string a = layernorm(r1, p + "/attention/output/LayerNorm", s + 4);
      const std::string mid = gelu(linear(a, p + "/intermediate/dense", H, I, s + 5), p + "/intermediate/act");
      const std::string o = linear(mid, p + "/output/dense", I, H, s + 6);
      const std::string r2 = b.op("Add", p + "/output/Add", {o, a});
      h = layernorm(r2, p + "/output/LayerNorm", s + 7);
    }
    if (!opt.hidden_name.empty()) {
      // Rename the last LayerNorm's output (torch names graph outputs so).
      onnx::NodeProto* last = b.graph().mutable_node(b.graph().node_size() - 1);
      last->set_output(0, opt.hidden_name);
      h = opt.hidden_name;
    }
    b.output(h);
    if (!opt.pooler.empty()) build_pooler(h);
    if (!opt.sentence_pooling.empty()) build_sentence_pooling(h);
  }
};

// One initializer stored externally at `location` next to a Relu: the
// external-data checks run before any pattern matching.
std::string save_with_external(const TempDir& dir, const std::string& location, const std::string& offset,
                               const std::string& length) {
  Builder b(17);
  b.input("x", onnx::TensorProto::FLOAT);
  b.op("Relu", "relu0", {"x"}, "y");
  b.output("y");
  onnx::TensorProto* t = b.graph().add_initializer();
  t->set_name("external_weight");
  t->set_data_type(onnx::TensorProto::FLOAT);
  t->add_dims(4);
  t->set_data_location(onnx::TensorProto::EXTERNAL);
  auto kv = [&](const std::string& k, const std::string& v) {
    if (v.empty()) return;
    auto* e = t->add_external_data();
    e->set_key(k);
    e->set_value(v);
  };
  kv("location", location);
  kv("offset", offset);
  kv("length", length);
  const std::string path = dir.file("model.onnx");
  save(b.model(), path);
  return path;
}

}  // namespace

TEST_CASE("a file that is not an ONNX model is rejected, naming the file") {
  TempDir dir;
  const std::string path = dir.file("garbage.onnx");
  write_bytes(path, std::string("\xff\xff\xff\xff this is not protobuf\x01\x02", 27));
  const std::string err = import_error(path);
  CHECK(contains(err, path));
  CHECK(contains(err, "not an ONNX model"));

  // Parses as protobuf (one unknown varint field) but holds no graph.
  write_bytes(path, std::string("\x68\x01", 2));
  CHECK(contains(import_error(path), path));

  const std::string missing = dir.file("missing.onnx");
  const std::string err2 = import_error(missing);
  CHECK(contains(err2, missing));
}

TEST_CASE("a graph that is not a BERT encoder lists its unsupported nodes") {
  TempDir dir;
  Builder b(17);
  b.input("x", onnx::TensorProto::FLOAT);
  b.op("Relu", "relu0", {"x"}, "y");
  b.output("y");
  save(b.model(), dir.file("relu.onnx"));
  const std::string err = import_error(dir.file("relu.onnx"));
  CHECK(contains(err, dir.file("relu.onnx")));
  CHECK(contains(err, "relu0 (Op: Relu)"));

  // A cycle (or any node reading a value produced later) is refused up front.
  Builder c(17);
  c.input("x", onnx::TensorProto::FLOAT);
  c.op("Add", "add0", {"x", "b"}, "a");
  c.op("Relu", "relu1", {"a"}, "b");
  c.output("b");
  save(c.model(), dir.file("cycle.onnx"));
  const std::string err2 = import_error(dir.file("cycle.onnx"));
  CHECK(contains(err2, "add0 (Op: Add) reads 'b'"));
}

TEST_CASE("tiny BERT imports into fused IR ops") {
  TempDir dir;
  for (const bool fused : {true, false}) {
    for (const bool tanh : {false, true}) {
      CAPTURE(fused);
      CAPTURE(tanh);
      TinyOptions opt;
      opt.fused_layernorm = fused;
      opt.tanh_gelu = tanh;
      opt.mask_fill = fused ? -10000.0 : -3.4028234663852886e38;
      TinyBert t(opt);
      const std::string path = dir.file("tiny.onnx");
      save(t.build(), path);

      SpnlWriter w;
      const ImportReport rep = import_onnx(path, w);
      CHECK(rep.opset == (fused ? 17 : 14));
      CHECK(rep.producer == "spinel-test");
      CHECK(rep.layer_norm_form == (fused ? "LayerNormalization" : "decomposed"));
      CHECK(rep.gelu_form == (tanh ? "tanh" : "erf"));
      CHECK(rep.mask_form == (fused ? "-10000" : "float32-min"));
      CHECK(rep.onnx_nodes == t.b.graph().node_size());

      const ModelConfig& c = w.config;
      CHECK(c.architecture == "bert");
      CHECK(c.vocab_size == TinyBert::V);
      CHECK(c.hidden_size == TinyBert::H);
      CHECK(c.num_layers == 2);
      CHECK(c.num_heads == TinyBert::heads);
      CHECK(c.intermediate_size == TinyBert::I);
      CHECK(c.max_position == TinyBert::P);
      CHECK(c.type_vocab_size == 2);
      CHECK(c.layer_norm_eps == doctest::Approx(1e-12));
      CHECK(c.hidden_act == (tanh ? Activation::GeluTanh : Activation::GeluErf));
      CHECK(contains(c.source, "opset"));

      const Graph& g = w.graph;
      REQUIRE(g.ops.size() == 1 + 7 * 2);
      const OpKind layer_kinds[7] = {OpKind::Linear, OpKind::Attention, OpKind::Linear, OpKind::LayerNorm,
                                     OpKind::Linear, OpKind::Linear, OpKind::LayerNorm};
      CHECK(g.ops[0].kind == OpKind::Embedding);
      CHECK(g.ops[0].w[slot::kPosition] >= 0);
      CHECK(g.ops[0].w[slot::kTokenType] >= 0);
      for (int l = 0; l < 2; ++l) {
        const Op* ops = &g.ops[static_cast<size_t>(1 + 7 * l)];
        for (int i = 0; i < 7; ++i) CHECK(ops[i].kind == layer_kinds[i]);
        const int32_t layer_in = l == 0 ? g.ops[0].out : g.ops[static_cast<size_t>(7 * l)].out;
        CHECK(ops[0].in0 == layer_in);
        CHECK(g.values[static_cast<size_t>(ops[0].out)].width == 3 * TinyBert::H);
        CHECK(ops[1].num_heads == TinyBert::heads);
        CHECK(ops[1].scale == doctest::Approx(0.5));
        CHECK(ops[2].in1 == layer_in);       // attention output + layer input
        CHECK(ops[4].act == c.hidden_act);   // intermediate GELU
        CHECK(ops[5].in1 == ops[3].out);     // output dense + post-attention LN
      }
      CHECK(g.output == g.ops.back().out);

      // Fused QKV: row r holds Wq[r] | Wk[r] | Wv[r]; the bias is bq | bk | bv.
      const int64_t H = TinyBert::H;
      const Op& qkv = g.ops[1];
      const TensorInfo& wi = w.tensors()[static_cast<size_t>(qkv.w[slot::kWeight])];
      REQUIRE(wi.shape == std::vector<int64_t>{H, 3 * H});
      const float* wd = static_cast<const float*>(w.tensor_data(qkv.w[slot::kWeight]));
      const float* bd = static_cast<const float*>(w.tensor_data(qkv.w[slot::kBias]));
      const std::vector<float>* parts[3] = {&t.wq0, &t.wk0, &t.wv0};
      const std::vector<float>* biases[3] = {&t.bq0, &t.bk0, &t.bv0};
      for (int j = 0; j < 3; ++j) {
        for (int64_t r = 0; r < H; ++r)
          for (int64_t col = 0; col < H; ++col)
            CHECK(wd[r * 3 * H + j * H + col] == (*parts[j])[static_cast<size_t>(r * H + col)]);
        for (int64_t col = 0; col < H; ++col) CHECK(bd[j * H + col] == (*biases[j])[static_cast<size_t>(col)]);
      }
    }
  }
}

TEST_CASE("tiny BERT variants: Range positions, no mask, Mul scale") {
  TempDir dir;
  TinyOptions opt;
  opt.range_positions = true;
  opt.use_mask = false;
  opt.mul_scale = true;
  opt.layers = 3;
  TinyBert t(opt);
  save(t.build(), dir.file("v.onnx"));
  SpnlWriter w;
  const ImportReport rep = import_onnx(dir.file("v.onnx"), w);
  CHECK(rep.mask_form == "none");
  CHECK(w.config.num_layers == 3);
  CHECK(w.config.max_position == TinyBert::P);  // the table's rows; Range sets no lower limit
  CHECK(w.graph.ops.at(2).kind == OpKind::Attention);
  CHECK(w.graph.ops.at(2).scale == doctest::Approx(0.5));

  // The mask written first in the Add of odd layers is recognised as well.
  TinyOptions masked;
  masked.layers = 3;
  TinyBert t2(masked);
  save(t2.build(), dir.file("m.onnx"));
  SpnlWriter w2;
  CHECK(import_onnx(dir.file("m.onnx"), w2).mask_form == "-10000");
  CHECK(w2.config.num_layers == 3);
}

TEST_CASE("a stray node in an otherwise valid encoder is named in the error") {
  TempDir dir;
  TinyBert t(TinyOptions{});
  onnx::ModelProto& m = t.build();
  const std::string hidden = m.graph().output(0).name();
  onnx::NodeProto* n = m.mutable_graph()->add_node();
  n->set_op_type("Tanh");
  n->set_name("/encoder/layer.1/Foo");
  n->add_input(hidden);
  n->add_output("foo_out");
  auto* o = m.mutable_graph()->add_output();
  o->set_name("foo_out");
  save(m, dir.file("stray.onnx"));
  const std::string err = import_error(dir.file("stray.onnx"));
  CHECK(contains(err, "unsupported nodes"));
  CHECK(contains(err, "/encoder/layer.1/Foo (Op: Tanh)"));

  // Spliced into the main path between two layers: still named, and only it.
  TinyBert t2(TinyOptions{});
  onnx::ModelProto& m2 = t2.build();
  onnx::GraphProto* g = m2.mutable_graph();
  std::string layer0_out;
  for (const auto& node : g->node())
    if (node.name() == "/encoder/layer.0/output/LayerNorm/LayerNormalization") layer0_out = node.output(0);
  REQUIRE(!layer0_out.empty());
  for (auto& node : *g->mutable_node())
    for (auto& in : *node.mutable_input())
      if (in == layer0_out) in = "spliced";
  onnx::NodeProto* s = g->add_node();
  s->set_op_type("Tanh");
  s->set_name("/encoder/layer.0/Spliced");
  s->add_input(layer0_out);
  s->add_output("spliced");
  // Keep the node list topologically sorted: move the Tanh right after its input's producer.
  for (int i = g->node_size() - 1; i > 0 && g->node(i - 1).output(0) != layer0_out; --i)
    g->mutable_node()->SwapElements(i, i - 1);
  save(m2, dir.file("spliced.onnx"));
  const std::string err2 = import_error(dir.file("spliced.onnx"));
  CHECK(contains(err2, "unsupported nodes (1): /encoder/layer.0/Spliced (Op: Tanh)"));
}

TEST_CASE("an activation that is not GELU is rejected with a reason") {
  TempDir dir;
  TinyBert t(TinyOptions{});
  onnx::ModelProto& m = t.build();
  // Change the 0.5 of layer 1's GELU to 0.6.
  bool changed = false;
  for (auto& n : *m.mutable_graph()->mutable_node()) {
    if (n.name() != "/encoder/layer.1/intermediate/act/Mul_1") continue;
    for (auto& c : *m.mutable_graph()->mutable_node())
      if (c.op_type() == "Constant" && c.output(0) == n.input(1)) {
        c.mutable_attribute(0)->mutable_t()->set_float_data(0, 0.6f);
        changed = true;
      }
  }
  REQUIRE(changed);
  save(m, dir.file("m.onnx"));
  const std::string err = import_error(dir.file("m.onnx"));
  CHECK(contains(err, "neither the erf nor the tanh GELU"));
  CHECK(contains(err, "/encoder/layer.1/intermediate/act/Erf (Op: Erf)"));
}

TEST_CASE("external data: valid reference inside the model directory imports") {
  TempDir dir;
  TinyBert t(TinyOptions{});
  onnx::ModelProto& m = t.build();
  // Move the word embeddings into weights/data.bin at offset 16.
  for (auto& init : *m.mutable_graph()->mutable_initializer()) {
    if (init.name() != "word_embeddings.weight") continue;
    fs::create_directories(dir.file("weights"));
    write_bytes(dir.file("weights/data.bin"), std::string(16, '\0') + init.raw_data());
    const std::string len = std::to_string(init.raw_data().size());
    init.clear_raw_data();
    init.set_data_location(onnx::TensorProto::EXTERNAL);
    for (auto [k, v] : std::vector<std::pair<std::string, std::string>>{
             {"location", "./weights/../weights/data.bin"}, {"offset", "16"}, {"length", len}}) {
      auto* e = init.add_external_data();
      e->set_key(k);
      e->set_value(v);
    }
  }
  save(m, dir.file("model.onnx"));
  SpnlWriter w;
  import_onnx(dir.file("model.onnx"), w);
  const Op& emb = w.graph.ops.at(0);
  const float* word = static_cast<const float*>(w.tensor_data(emb.w[slot::kWord]));
  const std::vector<float> expect = pattern(TinyBert::V * TinyBert::H, 1);
  for (size_t i = 0; i < expect.size(); ++i) CHECK(word[i] == expect[i]);
}

TEST_CASE("external data: paths leaving the model directory are rejected") {
  TempDir outside;
  write_bytes(outside.file("x.bin"), std::string(64, '\0'));

  SUBCASE("absolute path") {
    TempDir dir;
    const std::string err = import_error(save_with_external(dir, outside.file("x.bin"), "", ""));
    CHECK(contains(err, "external_weight"));
    CHECK(contains(err, outside.file("x.bin")));
    CHECK(contains(err, "absolute"));
  }
  SUBCASE("parent directory") {
    TempDir dir;
    fs::create_directories(dir.file("sub"));
    write_bytes(dir.file("x.bin"), std::string(64, '\0'));
    const std::string err = import_error(save_with_external(dir, "../x.bin", "", ""));
    CHECK(contains(err, "external_weight"));
    CHECK(contains(err, "../x.bin"));
    CHECK(contains(err, "leaves the model directory"));
    // Climbing out and back in is still an escape on the way.
    CHECK(contains(import_error(save_with_external(dir, "sub/../../x.bin", "", "")), "leaves the model directory"));
  }
  SUBCASE("symlinked file pointing outside") {
    TempDir dir;
    REQUIRE(symlink(outside.file("x.bin").c_str(), dir.file("link.bin").c_str()) == 0);
    const std::string err = import_error(save_with_external(dir, "link.bin", "", ""));
    CHECK(contains(err, "external_weight"));
    CHECK(contains(err, "outside the model directory"));
  }
  SUBCASE("symlinked folder pointing outside") {
    TempDir dir;
    REQUIRE(symlink(outside.path.c_str(), dir.file("data").c_str()) == 0);
    const std::string err = import_error(save_with_external(dir, "data/x.bin", "", ""));
    CHECK(contains(err, "outside the model directory"));
  }
  SUBCASE("missing file") {
    TempDir dir;
    const std::string err = import_error(save_with_external(dir, "nope.bin", "", ""));
    CHECK(contains(err, "external_weight"));
    CHECK(contains(err, "nope.bin"));
  }
}

TEST_CASE("external data: offset and length must lie inside the file") {
  TempDir dir;
  write_bytes(dir.file("w.bin"), std::string(16, '\0'));  // exactly 4 floats
  // In bounds: the import gets past the external-data checks to the (unsupported) Relu.
  CHECK(contains(import_error(save_with_external(dir, "w.bin", "0", "16")), "relu0 (Op: Relu)"));

  std::string err = import_error(save_with_external(dir, "w.bin", "8", "16"));
  CHECK(contains(err, "external_weight"));
  CHECK(contains(err, "past the end"));
  CHECK(contains(err, "w.bin"));

  err = import_error(save_with_external(dir, "w.bin", "32", ""));
  CHECK(contains(err, "past the end"));

  err = import_error(save_with_external(dir, "w.bin", "4", ""));  // 12 bytes left, 16 needed
  CHECK(contains(err, "needs 16"));

  err = import_error(save_with_external(dir, "w.bin", "-1", ""));
  CHECK(contains(err, "not a non-negative integer"));

  err = import_error(save_with_external(dir, "w.bin", "0", "99999999999999999999"));
  CHECK(contains(err, "not a non-negative integer"));
}

// ---- model families and heads ------------------------------------------------------

namespace {

SpnlWriter import_ok(const std::string& path, ImportReport* rep = nullptr) {
  SpnlWriter w;
  const ImportReport r = import_onnx(path, w);
  if (rep) *rep = r;
  return w;
}

const float* data_of(const SpnlWriter& w, int32_t tensor) {
  REQUIRE(tensor >= 0);
  return static_cast<const float*>(w.tensor_data(tensor));
}

}  // namespace

TEST_CASE("BertModel's default outputs: the pooler becomes Pool(cls) -> Linear(tanh) named pooler_output") {
  TempDir dir;
  for (const bool gemm : {true, false}) {
    for (const bool fused : {true, false}) {
      CAPTURE(gemm);
      CAPTURE(fused);
      TinyOptions opt;
      opt.pooler = "Tanh";
      opt.pooler_gemm = gemm;
      opt.fused_layernorm = fused;
      opt.hidden_name = "last_hidden_state";
      TinyBert t(opt);
      save(t.build(), dir.file("p.onnx"));
      ImportReport rep;
      const SpnlWriter w = import_ok(dir.file("p.onnx"), &rep);
      CHECK(rep.architecture == "bert");
      CHECK(rep.heads == "pooler_output");
      const Graph& g = w.graph;
      REQUIRE(g.ops.size() == 1 + 7 * 2 + 2);
      // last_hidden_state is unchanged: still the last LayerNorm.
      CHECK(g.ops[14].kind == OpKind::LayerNorm);
      CHECK(g.output == g.ops[14].out);
      const Op& pool = g.ops[15];
      const Op& dense = g.ops[16];
      CHECK(pool.kind == OpKind::Pool);
      CHECK(pool.pool == PoolKind::Cls);
      CHECK(pool.in0 == g.output);
      CHECK(g.values[static_cast<size_t>(pool.out)].rows == Rows::Sequences);
      CHECK(dense.kind == OpKind::Linear);
      CHECK(dense.act == Activation::Tanh);
      CHECK(dense.in0 == pool.out);
      CHECK(dense.in1 == -1);
      CHECK(g.values[static_cast<size_t>(dense.out)].rows == Rows::Sequences);
      REQUIRE(g.outputs.size() == 1);
      CHECK(g.outputs[0].name == "pooler_output");
      CHECK(g.outputs[0].value == dense.out);
      CHECK(w.config.default_pool == "mean");  // unchanged: --pool pooler asks for it
      // y = x W^T + b with torch's [out, in] weight: the IR holds W^T [in, out].
      const int64_t H = TinyBert::H;
      const float* wd = data_of(w, dense.w[slot::kWeight]);
      for (int64_t i = 0; i < H; ++i)
        for (int64_t o = 0; o < H; ++o) CHECK(wd[i * H + o] == t.pooler_w[static_cast<size_t>(o * H + i)]);
      const float* bd = data_of(w, dense.w[slot::kBias]);
      for (int64_t o = 0; o < H; ++o) CHECK(bd[o] == t.pooler_b[static_cast<size_t>(o)]);
      validate_graph(w.graph, w.tensors(), w.config);
    }
  }
}

TEST_CASE("a pooler whose activation is not tanh is rejected with the reason") {
  TempDir dir;
  TinyOptions opt;
  opt.pooler = "Relu";
  TinyBert t(opt);
  save(t.build(), dir.file("relu_pooler.onnx"));
  const std::string err = import_error(dir.file("relu_pooler.onnx"));
  CHECK(contains(err, "/pooler/activation/Relu (Op: Relu)"));  // the uncovered node
  CHECK(contains(err, "activation must be tanh"));
}

TEST_CASE("two-input BERT: the constant token-type row becomes a one-row table") {
  TempDir dir;
  for (const bool fused : {true, false}) {
    CAPTURE(fused);
    TinyOptions opt;
    opt.token_types = "constant";
    opt.fused_layernorm = fused;
    TinyBert t(opt);
    save(t.build(), dir.file("two.onnx"));
    ImportReport rep;
    const SpnlWriter w = import_ok(dir.file("two.onnx"), &rep);
    CHECK(rep.architecture == "bert");
    CHECK(w.config.type_vocab_size == 1);
    const Op& emb = w.graph.ops.at(0);
    const TensorInfo& ti = w.tensors()[static_cast<size_t>(emb.w[slot::kTokenType])];
    CHECK(ti.shape == std::vector<int64_t>{1, TinyBert::H});
    const std::vector<float> table = pattern(2 * TinyBert::H, 2);  // the builder's token-type table
    const float* row = data_of(w, emb.w[slot::kTokenType]);
    for (int64_t c = 0; c < TinyBert::H; ++c) CHECK(row[c] == table[static_cast<size_t>(c)]);  // row 0
  }
}

TEST_CASE("sentence-transformers graphs: mean pooling (+ normalize) becomes the default pooling") {
  TempDir dir;
  for (const std::string types : {"constant", "input"}) {
    for (const bool norm : {true, false}) {
      CAPTURE(types);
      CAPTURE(norm);
      TinyOptions opt;
      opt.token_types = types;
      opt.sentence_pooling = norm ? "mean+normalize" : "mean";
      opt.hidden_name = "token_embeddings";
      TinyBert t(opt);
      save(t.build(), dir.file("st.onnx"));
      ImportReport rep;
      const SpnlWriter w = import_ok(dir.file("st.onnx"), &rep);
      CHECK(rep.heads == (norm ? "mean pooling + L2 normalize" : "mean pooling"));
      CHECK(w.config.default_pool == "mean");
      CHECK(w.config.normalize == norm);
      CHECK(w.graph.outputs.empty());
      CHECK(w.graph.ops.size() == 1 + 7 * 2);
    }
  }
}

TEST_CASE("pooling that reads another mask than the attention, or an extra output, is rejected") {
  TempDir dir;
  TinyOptions opt;
  opt.sentence_pooling = "mean";
  TinyBert t(opt);
  onnx::ModelProto& m = t.build();
  // Point the pooling's Unsqueeze at a second mask input.
  auto* in = m.mutable_graph()->add_input();
  in->set_name("other_mask");
  in->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::INT64);
  for (auto& n : *m.mutable_graph()->mutable_node())
    if (n.name() == "/Unsqueeze") n.set_input(0, "other_mask");
  save(m, dir.file("other.onnx"));
  CHECK(contains(import_error(dir.file("other.onnx")), "mean pooling reads mask 'other_mask'"));

  // An output that is neither the hidden states nor a recognised head.
  TinyBert t2(TinyOptions{});
  onnx::ModelProto& m2 = t2.build();
  auto* o = m2.mutable_graph()->add_output();
  o->set_name("/encoder/layer.0/intermediate/act/Mul_1_output_0");
  save(m2, dir.file("extra.onnx"));
  CHECK(contains(import_error(dir.file("extra.onnx")),
                 "graph output '/encoder/layer.0/intermediate/act/Mul_1_output_0' is neither"));
}

TEST_CASE("DistilBERT: no token types, Q scaled before Q.K^T, mask through Where") {
  TempDir dir;
  for (const bool fused : {true, false}) {
    for (const bool st : {false, true}) {
      CAPTURE(fused);
      CAPTURE(st);
      TinyOptions opt;
      opt.token_types = "none";
      opt.where_mask = true;
      opt.prescale_q = true;
      opt.fused_layernorm = fused;
      opt.mask_fill = -3.4028234663852886e38;
      if (st) opt.sentence_pooling = "mean+normalize";
      TinyBert t(opt);
      save(t.build(), dir.file("db.onnx"));
      ImportReport rep;
      const SpnlWriter w = import_ok(dir.file("db.onnx"), &rep);
      CHECK(rep.architecture == "distilbert");
      CHECK(w.config.architecture == "distilbert");
      CHECK(rep.mask_form == "float32-min (Where)");
      CHECK(w.config.type_vocab_size == 0);
      CHECK(w.graph.ops.at(0).w[slot::kTokenType] == -1);
      CHECK(w.graph.ops.at(0).w[slot::kPosition] >= 0);
      REQUIRE(w.graph.ops.size() == 1 + 7 * 2);
      for (int l = 0; l < 2; ++l) {
        const Op& att = w.graph.ops[static_cast<size_t>(2 + 7 * l)];
        CHECK(att.kind == OpKind::Attention);
        CHECK(att.scale == doctest::Approx(0.5));  // q / 2 folded in
      }
      CHECK(w.config.default_pool == "mean");
      CHECK(w.config.normalize == st);
    }
  }
}

TEST_CASE("a Where mask that does not test mask == 0 is rejected with the reason") {
  TempDir dir;
  TinyOptions opt;
  opt.token_types = "none";
  opt.where_mask = true;
  opt.prescale_q = true;
  TinyBert t(opt);
  onnx::ModelProto& m = t.build();
  // Compare with 1 instead of 0: masks the real tokens.
  for (auto& n : *m.mutable_graph()->mutable_node()) {
    if (n.op_type() != "Equal") continue;
    for (auto& c : *m.mutable_graph()->mutable_node())
      if (c.output(0) == n.input(1)) c.mutable_attribute(0)->mutable_t()->set_int64_data(0, 1);
  }
  save(m, dir.file("eq1.onnx"));
  const std::string err = import_error(dir.file("eq1.onnx"));
  CHECK(contains(err, "does not compare the mask with 0"));
  CHECK(contains(err, "(Op: Equal)"));
}

TEST_CASE("families: BERT and DistilBERT are told apart, the rejection reports the closest one") {
  TempDir dir;
  // A BERT-shaped graph (token types) with DistilBERT's attention is still BERT.
  TinyOptions opt;
  opt.where_mask = true;
  opt.prescale_q = true;
  TinyBert t(opt);
  save(t.build(), dir.file("bert_where.onnx"));
  ImportReport rep;
  import_ok(dir.file("bert_where.onnx"), &rep);
  CHECK(rep.architecture == "bert");

  // A DistilBERT with an unsupported node: the message comes from the
  // DistilBERT candidate (fewest unexplained nodes), not BERT's "no token types".
  TinyOptions d;
  d.token_types = "none";
  d.pooler = "Relu";
  TinyBert t2(d);
  save(t2.build(), dir.file("db_relu.onnx"));
  const std::string err = import_error(dir.file("db_relu.onnx"));
  CHECK(contains(err, "/pooler/activation/Relu (Op: Relu)"));
  CHECK(contains(err, "graph output 'pooler_output' is neither"));
  CHECK(!contains(err, "not a BERT export"));
}
