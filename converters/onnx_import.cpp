// Lowers a recognised BERT encoder (bert_match) into spinel's IR: one
// Embedding, then per layer Linear(QKV fused) -> Attention -> Linear(+residual)
// -> LayerNorm -> Linear(+GELU) -> Linear(+residual) -> LayerNorm.
#include "converters/onnx_import.h"

#include <cmath>
#include <cstring>
#include <sstream>

#include "converters/bert_match.h"
#include "converters/diagnose.h"
#include "converters/onnx_graph.h"
#include "converters/onnx_tensors.h"
#include "runtime/error.h"

namespace spinel {
namespace {

using namespace onnx_import;

class IrBuilder {
 public:
  IrBuilder(const ConstantTable& consts, SpnlWriter& out) : consts_(consts), out_(out) {}

  int32_t value(const std::string& name, int64_t width) {
    out_.graph.values.push_back(Value{name, width});
    return static_cast<int32_t>(out_.graph.values.size() - 1);
  }

  // Every weight the IR takes passes here. A NaN or Inf weight makes every
  // output NaN (and has no INT8 quantization): refuse it by name.
  std::vector<float> floats(const std::string& onnx_name, int64_t expect) const {
    std::vector<float> f = consts_.floats(onnx_name);
    if (static_cast<int64_t>(f.size()) != expect)
      fail("tensor '", onnx_name, "' has ", f.size(), " elements, expected ", expect);
    for (size_t i = 0; i < f.size(); ++i)
      if (!std::isfinite(f[i]))
        fail("tensor '", onnx_name, "' holds ", f[i], " at element ", i, "; weights must be finite");
    return f;
  }

  int32_t tensor(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& data) {
    return out_.add_tensor(name, DType::F32, std::move(shape), data.data(), data.size() * sizeof(float));
  }

  // A weight copied as is; `onnx_name` may be empty for an absent LayerNorm
  // bias (LayerNormalization's B is optional), which then becomes zeros.
  int32_t weight(const std::string& name, const std::string& onnx_name, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    if (onnx_name.empty()) return tensor(name, std::move(shape), std::vector<float>(static_cast<size_t>(n), 0.f));
    return tensor(name, std::move(shape), floats(onnx_name, n));
  }

  // Appends a finished op and returns its output value. Ops are built as
  // locals and moved in: a reference into graph.ops would dangle as soon as
  // the next op makes the vector grow.
  int32_t add(Op op) {
    const int32_t out = op.out;
    out_.graph.ops.push_back(std::move(op));
    return out;
  }

 private:
  const ConstantTable& consts_;
  SpnlWriter& out_;
};

std::string mask_form(const std::optional<MaskMatch>& mask) {
  if (!mask) return "none";
  if (mask->fill == -10000.0) return "-10000";
  if (mask->fill <= -3.4028234e38) return "float32-min";
  std::ostringstream os;
  os << mask->fill;
  return os.str();
}

void build_ir(const GraphIndex& g, const BertMatch& b, IrBuilder& ir, SpnlWriter& out) {
  const EmbeddingMatch& e = *b.emb;
  const ConstantTable& c = g.consts();
  const std::vector<int64_t> word_dims = c.dims(e.word);
  const int64_t vocab = word_dims[0], hidden = word_dims[1];

  ModelConfig& cfg = out.config;
  cfg.architecture = "bert";
  cfg.vocab_size = vocab;
  cfg.hidden_size = hidden;
  cfg.num_layers = static_cast<int64_t>(b.layers.size());
  cfg.num_heads = b.layers[0].att.heads;
  cfg.intermediate_size = b.layers[0].inter.out_features;
  cfg.hidden_act = b.layers[0].gelu.act;
  cfg.layer_norm_eps = e.ln.eps;
  cfg.type_vocab_size = e.token_type.empty() ? 0 : c.dims(e.token_type)[0];
  cfg.max_position = 0;
  if (!e.position.empty()) {
    cfg.max_position = c.dims(e.position)[0];
    if (e.position_limit > 0 && e.position_limit < cfg.max_position) cfg.max_position = e.position_limit;
  }

  Op emb;
  emb.kind = OpKind::Embedding;
  emb.name = g.node(e.word_gather).name();
  emb.out = ir.value("embeddings", hidden);
  emb.w[slot::kWord] = ir.weight("embeddings.word", e.word, {vocab, hidden});
  if (!e.position.empty())
    emb.w[slot::kPosition] = ir.weight("embeddings.position", e.position, c.dims(e.position));
  if (!e.token_type.empty())
    emb.w[slot::kTokenType] = ir.weight("embeddings.token_type", e.token_type, c.dims(e.token_type));
  emb.w[slot::kEmbGamma] = ir.weight("embeddings.ln.gamma", e.ln.gamma, {hidden});
  emb.w[slot::kEmbBeta] = ir.weight("embeddings.ln.beta", e.ln.beta, {hidden});
  emb.eps = e.ln.eps;
  int32_t cur = ir.add(std::move(emb));

  for (size_t i = 0; i < b.layers.size(); ++i) {
    const LayerMatch& l = b.layers[i];
    const std::string p = "layer." + std::to_string(i) + ".";
    const int64_t inter = l.inter.out_features;
    if (l.att.heads != cfg.num_heads || inter != cfg.intermediate_size || l.gelu.act != cfg.hidden_act)
      fail("layer ", i, " (", g.describe(l.att.softmax), ") differs from layer 0 in heads, intermediate size or activation");

    // Q | K | V side by side: row r of the fused weight is Wq[r] | Wk[r] | Wv[r].
    const LinearMatch* proj[3] = {&l.att.q, &l.att.k, &l.att.v};
    std::vector<float> w(static_cast<size_t>(hidden * 3 * hidden));
    std::vector<float> bias(static_cast<size_t>(3 * hidden), 0.f);
    bool any_bias = false;
    for (int j = 0; j < 3; ++j) {
      const std::vector<float> wj = ir.floats(proj[j]->weight, hidden * hidden);
      for (int64_t r = 0; r < hidden; ++r)
        std::memcpy(&w[static_cast<size_t>(r * 3 * hidden + j * hidden)], &wj[static_cast<size_t>(r * hidden)],
                    static_cast<size_t>(hidden) * sizeof(float));
      if (!proj[j]->bias.empty()) {
        const std::vector<float> bj = ir.floats(proj[j]->bias, hidden);
        std::memcpy(&bias[static_cast<size_t>(j * hidden)], bj.data(), bj.size() * sizeof(float));
        any_bias = true;
      }
    }
    Op qkv;
    qkv.kind = OpKind::Linear;
    qkv.name = g.node(l.att.q.matmul).name() + " + " + g.node(l.att.k.matmul).name() + " + " +
               g.node(l.att.v.matmul).name();
    qkv.in0 = cur;
    qkv.out = ir.value(p + "qkv", 3 * hidden);
    qkv.w[slot::kWeight] = ir.tensor(p + "attention.qkv.weight", {hidden, 3 * hidden}, w);
    if (any_bias) qkv.w[slot::kBias] = ir.tensor(p + "attention.qkv.bias", {3 * hidden}, bias);
    const int32_t qkv_out = ir.add(std::move(qkv));

    Op att;
    att.kind = OpKind::Attention;
    att.name = g.node(l.att.softmax).name();
    att.in0 = qkv_out;
    att.out = ir.value(p + "context", hidden);
    att.num_heads = static_cast<int32_t>(l.att.heads);
    att.scale = static_cast<float>(l.att.scale);
    const int32_t context = ir.add(std::move(att));

    auto linear = [&](const LinearMatch& m, const std::string& name, int32_t in, int32_t residual, Activation act) {
      Op o;
      o.kind = OpKind::Linear;
      o.name = g.node(m.matmul).name();
      o.in0 = in;
      o.in1 = residual;
      o.act = act;
      o.out = ir.value(name, m.out_features);
      o.w[slot::kWeight] = ir.weight(name + ".weight", m.weight, {m.in_features, m.out_features});
      if (!m.bias.empty()) o.w[slot::kBias] = ir.weight(name + ".bias", m.bias, {m.out_features});
      return ir.add(std::move(o));
    };
    auto layernorm = [&](const LayerNormMatch& m, const std::string& name, int32_t in) {
      Op o;
      o.kind = OpKind::LayerNorm;
      o.name = g.node(m.nodes.back()).name();
      o.in0 = in;
      o.eps = m.eps;
      o.out = ir.value(name, hidden);
      o.w[slot::kGamma] = ir.weight(name + ".gamma", m.gamma, {hidden});
      o.w[slot::kBeta] = ir.weight(name + ".beta", m.beta, {hidden});
      return ir.add(std::move(o));
    };
    const int32_t ao = linear(l.attn_out, p + "attention.output", context, cur, Activation::None);
    const int32_t a = layernorm(l.ln1, p + "attention.ln", ao);
    const int32_t mid = linear(l.inter, p + "intermediate", a, -1, l.gelu.act);
    const int32_t o = linear(l.out, p + "output", mid, a, Activation::None);
    cur = layernorm(l.ln2, p + "output.ln", o);
  }
  out.graph.output = cur;
}

}  // namespace

ImportReport import_onnx_bert(const std::string& onnx_path, SpnlWriter& out) {
  const onnx::ModelProto model = load_model_proto(onnx_path);
  const onnx::GraphProto& graph = model.graph();
  ImportReport rep;
  for (const auto& os : model.opset_import())
    if (os.domain().empty() || os.domain() == "ai.onnx") rep.opset = static_cast<int>(os.version());
  rep.producer = model.producer_name();
  if (!model.producer_version().empty()) rep.producer += " " + model.producer_version();
  rep.onnx_nodes = graph.node_size();
  if (!out.graph.ops.empty() || !out.tensors().empty())
    fail(onnx_path, ": import_onnx_bert needs an empty SpnlWriter");

  try {
    const ConstantTable consts(graph, model_directory(onnx_path));
    GraphIndex g(graph, consts);
    const BertMatch b = match_bert(g);
    const std::vector<int> uncovered = g.finish_coverage();
    if (!uncovered.empty() || !b.problems.empty() || !b.emb || b.layers.empty())
      reject_graph(g, uncovered, b.problems, onnx_path);

    IrBuilder ir(consts, out);
    build_ir(g, b, ir, out);
    out.config.source = (rep.producer.empty() ? std::string("unknown producer") : rep.producer) +
                        ", opset " + std::to_string(rep.opset);
    rep.layer_norm_form = b.emb->ln.fused ? "LayerNormalization" : "decomposed";
    rep.gelu_form = out.config.hidden_act == Activation::GeluTanh ? "tanh" : "erf";
    rep.mask_form = mask_form(b.mask);
    validate_graph(out.graph, out.tensors(), out.config);
  } catch (const Error& e) {
    fail(onnx_path, ": ", e.what());
  } catch (const std::exception& e) {
    // A malformed file must end in a message, never an unexplained abort.
    fail(onnx_path, ": cannot import: ", e.what());
  }
  return rep;
}

}  // namespace spinel
