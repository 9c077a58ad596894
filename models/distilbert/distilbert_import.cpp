#include "models/distilbert/distilbert_import.h"

#include "converters/encoder_patterns.h"
#include "converters/pooling_patterns.h"

namespace spinel {
namespace onnx_import {
namespace {

class DistilBertMatch final : public FamilyMatch {
 public:
  std::optional<EmbeddingMatch> emb;
  EncoderMatch enc;
  std::optional<MeanPoolMatch> mean;

  void build(const GraphIndex& g, IrBuilder& ir, ImportReport& rep) const override {
    const int32_t e = lower_embeddings(g, *emb, ir);
    ir.graph().output = lower_post_ln_layers(g, enc.layers, e, ir);
    ModelConfig& cfg = ir.config();
    if (mean) {
      cfg.default_pool = "mean";
      cfg.normalize = mean->normalized;
      rep.heads = mean->normalized ? "mean pooling + L2 normalize" : "mean pooling";
    }
    rep.layer_norm_form = emb->ln.fused ? "LayerNormalization" : "decomposed";
    rep.gelu_form = cfg.hidden_act == Activation::GeluTanh ? "tanh" : "erf";
    rep.mask_form = mask_form(enc.mask);
  }
};

}  // namespace

std::unique_ptr<FamilyMatch> match_distilbert(GraphIndex& g) {
  auto d = std::make_unique<DistilBertMatch>();
  std::string why;
  d->emb = match_embeddings(g, why);
  if (!d->emb) {
    d->problems.push_back(why);
  } else {
    if (!d->emb->token_type.empty())
      d->problems.push_back("token-type embeddings ('" + d->emb->token_type + "'): not a DistilBERT export");
    if (d->emb->position.empty()) d->problems.push_back("no position embeddings: not a DistilBERT export");
  }
  d->enc = match_post_ln_encoder(g, d->emb ? d->emb->ln.out : "");
  d->problems.insert(d->problems.end(), d->enc.problems.begin(), d->enc.problems.end());
  if (!d->emb || d->enc.layers.empty()) return d;

  const std::string& hidden = d->enc.output;
  std::vector<std::string> heads;
  for (int r : g.data_consumers(hidden)) {
    if (!g.is_op(r, "Mul") || d->mean) continue;
    d->mean = match_mean_pooling(g, hidden, why);
    if (!d->mean) d->problems.push_back(why);
    else if (d->enc.mask && d->mean->mask_input != d->enc.mask->input)
      d->problems.push_back("mean pooling reads mask '" + d->mean->mask_input + "', attention reads '" + d->enc.mask->input + "'");
    else {
      g.cover(d->mean->nodes);
      heads.push_back(d->mean->out);
    }
  }
  check_graph_outputs(g, hidden, heads, d->problems);
  return d;
}

}  // namespace onnx_import
}  // namespace spinel
