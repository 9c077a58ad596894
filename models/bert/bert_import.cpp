#include "models/bert/bert_import.h"

#include "converters/encoder_patterns.h"
#include "converters/pooling_patterns.h"
#include "runtime/error.h"

namespace spinel {
namespace onnx_import {
namespace {

template <typename T>
std::optional<T> miss(std::string& why, const std::string& msg) {
  why = msg;
  return std::nullopt;
}

class BertMatch final : public FamilyMatch {
 public:
  std::optional<EmbeddingMatch> emb;
  EncoderMatch enc;
  std::optional<PoolerMatch> pooler;
  std::optional<MeanPoolMatch> mean;

  void build(const GraphIndex& g, IrBuilder& ir, ImportReport& rep) const override {
    const int32_t e = lower_embeddings(g, *emb, ir);
    const int32_t hidden = lower_post_ln_layers(g, enc.layers, e, ir);
    ir.graph().output = hidden;
    ModelConfig& cfg = ir.config();
    const int64_t H = cfg.hidden_size;
    std::string heads;
    if (pooler) {
      if (pooler->in_features != H || pooler->out_features != H)
        fail(g.describe(pooler->first), ": pooler weight is [", pooler->in_features, ", ", pooler->out_features,
             "], expected [", H, ", ", H, "]");
      Op pool;
      pool.kind = OpKind::Pool;
      pool.pool = PoolKind::Cls;
      pool.name = g.node(pooler->first).name();
      pool.in0 = hidden;
      pool.out = ir.value("pooler.cls", H, Rows::Sequences);
      const int32_t cls = ir.add(std::move(pool));

      Op dense;
      dense.kind = OpKind::Linear;
      dense.name = g.node(pooler->nodes[1]).name();
      dense.in0 = cls;
      dense.act = Activation::Tanh;
      dense.out = ir.value("pooler_output", H, Rows::Sequences);
      std::vector<float> w = ir.floats(pooler->weight, H * H);
      if (pooler->transposed) {  // [out, in] -> [in, out]
        std::vector<float> t(w.size());
        for (int64_t r = 0; r < H; ++r)
          for (int64_t c = 0; c < H; ++c) t[static_cast<size_t>(c * H + r)] = w[static_cast<size_t>(r * H + c)];
        w.swap(t);
      }
      dense.w[slot::kWeight] = ir.tensor("pooler.dense.weight", {H, H}, w);
      if (!pooler->bias.empty()) dense.w[slot::kBias] = ir.weight("pooler.dense.bias", pooler->bias, {H});
      const int32_t out = ir.add(std::move(dense));
      ir.graph().outputs.push_back(GraphOutput{"pooler_output", out});
      heads = "pooler_output";
    }
    if (mean) {
      cfg.default_pool = "mean";
      cfg.normalize = mean->normalized;
      heads += std::string(heads.empty() ? "" : ", ") + (mean->normalized ? "mean pooling + L2 normalize" : "mean pooling");
    }
    rep.heads = heads;
    rep.layer_norm_form = emb->ln.fused ? "LayerNormalization" : "decomposed";
    rep.gelu_form = cfg.hidden_act == Activation::GeluTanh ? "tanh" : "erf";
    rep.mask_form = mask_form(enc.mask);
  }
};

}  // namespace

std::optional<PoolerMatch> match_bert_pooler(const GraphIndex& g, const std::string& hidden, int gather,
                                             std::string& why) {
  const std::string at = "pooler at " + g.describe(gather) + ": ";
  PoolerMatch p;
  p.first = gather;
  const onnx::NodeProto& ga = g.node(gather);
  if (!g.is_op(gather, "Gather") || ga.input(0) != hidden || g.attr_int(gather, "axis", 0) != 1)
    return miss<PoolerMatch>(why, at + "not a Gather of the hidden states over the sequence axis");
  const auto idx = g.scalar(ga.input(1));
  if (!idx || *idx != 0 || !g.consts().dims(ga.input(1)).empty())
    return miss<PoolerMatch>(why, at + "does not take the first ([CLS]) token");
  p.nodes.push_back(gather);
  const std::string cls = ga.output(0);
  const int d = g.sole_consumer(cls);
  std::string dense_out;
  if (g.is_op(d, "Gemm")) {
    const onnx::NodeProto& n = g.node(d);
    if (n.input(0) != cls || !g.is_const(n.input(1)) || g.consts().dims(n.input(1)).size() != 2 ||
        g.consts().elem_type(n.input(1)) != onnx::TensorProto::FLOAT)
      return miss<PoolerMatch>(why, at + g.describe(d) + " does not multiply the [CLS] row by a constant 2-D weight");
    if (g.attr_float(d, "alpha", 1.f) != 1.f || g.attr_float(d, "beta", 1.f) != 1.f || g.attr_int(d, "transA", 0) != 0)
      return miss<PoolerMatch>(why, at + g.describe(d) + ": alpha, beta or transA differ from a plain Linear");
    p.transposed = g.attr_int(d, "transB", 0) != 0;
    const std::vector<int64_t> wd = g.consts().dims(n.input(1));
    p.weight = n.input(1);
    p.in_features = p.transposed ? wd[1] : wd[0];
    p.out_features = p.transposed ? wd[0] : wd[1];
    if (n.input_size() > 2 && !n.input(2).empty()) {
      const std::string& b = n.input(2);
      const std::vector<int64_t> bd = g.is_const(b) ? g.consts().dims(b) : std::vector<int64_t>{};
      if (bd.size() != 1 || bd[0] != p.out_features)
        return miss<PoolerMatch>(why, at + g.describe(d) + ": bias is not a constant vector of " + std::to_string(p.out_features));
      p.bias = b;
    }
    p.nodes.push_back(d);
    dense_out = n.output(0);
  } else if (g.is_op(d, "MatMul")) {
    auto l = match_linear(g, d, why);
    if (!l) return std::nullopt;
    if (l->x != cls) return miss<PoolerMatch>(why, at + g.describe(d) + " does not read the [CLS] row");
    p.weight = l->weight;
    p.bias = l->bias;
    p.in_features = l->in_features;
    p.out_features = l->out_features;
    p.nodes.insert(p.nodes.end(), l->nodes.begin(), l->nodes.end());
    dense_out = l->out;
  } else {
    return miss<PoolerMatch>(why, at + "the [CLS] row does not go through a dense layer (Gemm or MatMul)");
  }
  const int act = g.sole_consumer(dense_out);
  if (!g.is_op(act, "Tanh")) {
    const std::string what = act >= 0 ? g.describe(act) : "'" + dense_out + "' is used directly";
    return miss<PoolerMatch>(why, at + "the pooler's activation must be tanh (BertPooler), found " + what);
  }
  p.nodes.push_back(act);
  p.out = g.node(act).output(0);
  if (!g.is_graph_output(p.out) || !g.consumers(p.out).empty())
    return miss<PoolerMatch>(why, at + "its result '" + p.out + "' is not a graph output read by nothing else");
  return p;
}

std::unique_ptr<FamilyMatch> match_bert(GraphIndex& g) {
  auto b = std::make_unique<BertMatch>();
  std::string why;
  b->emb = match_embeddings(g, why);
  if (!b->emb) {
    b->problems.push_back(why);
  } else if (b->emb->token_type.empty()) {
    b->problems.push_back("no token-type embeddings: not a BERT export");
  }
  std::string emb_out = b->emb ? b->emb->ln.out : "";
  b->enc = match_post_ln_encoder(g, emb_out);
  b->problems.insert(b->problems.end(), b->enc.problems.begin(), b->enc.problems.end());
  if (!b->emb || b->enc.layers.empty()) return b;

  // Heads reading the last layer's output.
  const std::string& hidden = b->enc.output;
  std::vector<std::string> heads;
  for (int r : g.data_consumers(hidden)) {
    if (g.is_op(r, "Gather") && !b->pooler) {
      b->pooler = match_bert_pooler(g, hidden, r, why);
      if (!b->pooler) b->problems.push_back(why);
      else {
        g.cover(b->pooler->nodes);
        heads.push_back(b->pooler->out);
      }
    } else if (g.is_op(r, "Mul") && !b->mean) {
      b->mean = match_mean_pooling(g, hidden, why);
      if (!b->mean) b->problems.push_back(why);
      else if (b->enc.mask && b->mean->mask_input != b->enc.mask->input)
        b->problems.push_back("mean pooling reads mask '" + b->mean->mask_input + "', attention reads '" + b->enc.mask->input + "'");
      else {
        g.cover(b->mean->nodes);
        heads.push_back(b->mean->out);
      }
    }
  }
  check_graph_outputs(g, hidden, heads, b->problems);
  return b;
}

}  // namespace onnx_import
}  // namespace spinel
