// Builds small random BERT-shaped models with SpnlWriter for the unit tests.
#pragma once

#include <cmath>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/spnl.h"

namespace spinel::testing {

struct TinySpec {
  int64_t vocab = 40, hidden = 16, heads = 2, layers = 2, intermediate = 32, positions = 24;
  int64_t types = 2;
  Activation act = Activation::GeluErf;
  unsigned seed = 7;
};

inline std::vector<float> random_floats(size_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

inline void fill_tiny_model(SpnlWriter& w, const TinySpec& s) {
  std::mt19937 rng(s.seed);
  auto tensor = [&](const std::string& name, std::vector<int64_t> shape, float scale, float mean = 0.f) {
    size_t n = 1;
    for (auto d : shape) n *= static_cast<size_t>(d);
    auto v = random_floats(n, rng, scale);
    for (auto& x : v) x += mean;
    return w.add_tensor(name, DType::F32, shape, v.data(), v.size() * sizeof(float));
  };
  const int64_t H = s.hidden;
  w.config.vocab_size = s.vocab;
  w.config.hidden_size = H;
  w.config.num_layers = s.layers;
  w.config.num_heads = s.heads;
  w.config.intermediate_size = s.intermediate;
  w.config.max_position = s.positions;
  w.config.type_vocab_size = s.types;
  w.config.layer_norm_eps = 1e-12f;
  w.config.hidden_act = s.act;
  w.config.source = "unit test";

  auto value = [&](const std::string& name, int64_t width) {
    w.graph.values.push_back({name, width});
    return static_cast<int32_t>(w.graph.values.size() - 1);
  };
  Op emb;
  emb.kind = OpKind::Embedding;
  emb.name = "embeddings";
  emb.w[slot::kWord] = tensor("word", {s.vocab, H}, 0.5f);
  emb.w[slot::kPosition] = tensor("pos", {s.positions, H}, 0.5f);
  emb.w[slot::kTokenType] = tensor("type", {s.types, H}, 0.5f);
  emb.w[slot::kEmbGamma] = tensor("emb.gamma", {H}, 0.1f, 1.f);
  emb.w[slot::kEmbBeta] = tensor("emb.beta", {H}, 0.1f);
  emb.eps = 1e-12f;
  int32_t x = emb.out = value("embeddings", H);
  w.graph.ops.push_back(emb);
  const float wscale = 1.f / std::sqrt(static_cast<float>(H));
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = "layer" + std::to_string(l) + ".";
    Op qkv;
    qkv.kind = OpKind::Linear;
    qkv.name = p + "qkv";
    qkv.in0 = x;
    qkv.w[slot::kWeight] = tensor(p + "qkv.w", {H, 3 * H}, wscale);
    qkv.w[slot::kBias] = tensor(p + "qkv.b", {3 * H}, 0.1f);
    qkv.out = value(p + "qkv", 3 * H);
    w.graph.ops.push_back(qkv);
    Op att;
    att.kind = OpKind::Attention;
    att.name = p + "attention";
    att.in0 = qkv.out;
    att.num_heads = static_cast<int32_t>(s.heads);
    att.scale = 1.f / std::sqrt(static_cast<float>(H / s.heads));
    att.out = value(p + "context", H);
    w.graph.ops.push_back(att);
    Op ao;
    ao.kind = OpKind::Linear;
    ao.name = p + "attn_out";
    ao.in0 = att.out;
    ao.in1 = x;
    ao.w[slot::kWeight] = tensor(p + "ao.w", {H, H}, wscale);
    ao.w[slot::kBias] = tensor(p + "ao.b", {H}, 0.1f);
    ao.out = value(p + "attn_sum", H);
    w.graph.ops.push_back(ao);
    Op ln1;
    ln1.kind = OpKind::LayerNorm;
    ln1.name = p + "ln1";
    ln1.in0 = ao.out;
    ln1.w[slot::kGamma] = tensor(p + "ln1.g", {H}, 0.1f, 1.f);
    ln1.w[slot::kBeta] = tensor(p + "ln1.b", {H}, 0.1f);
    ln1.eps = 1e-12f;
    ln1.out = value(p + "ln1", H);
    w.graph.ops.push_back(ln1);
    Op up;
    up.kind = OpKind::Linear;
    up.name = p + "intermediate";
    up.in0 = ln1.out;
    up.act = s.act;
    up.w[slot::kWeight] = tensor(p + "up.w", {H, s.intermediate}, wscale);
    up.w[slot::kBias] = tensor(p + "up.b", {s.intermediate}, 0.1f);
    up.out = value(p + "intermediate", s.intermediate);
    w.graph.ops.push_back(up);
    Op down;
    down.kind = OpKind::Linear;
    down.name = p + "output";
    down.in0 = up.out;
    down.in1 = ln1.out;
    down.w[slot::kWeight] = tensor(p + "down.w", {s.intermediate, H},
                                   1.f / std::sqrt(static_cast<float>(s.intermediate)));
    down.w[slot::kBias] = tensor(p + "down.b", {H}, 0.1f);
    down.out = value(p + "out_sum", H);
    w.graph.ops.push_back(down);
    Op ln2 = ln1;
    ln2.name = p + "ln2";
    ln2.in0 = down.out;
    ln2.w[slot::kGamma] = tensor(p + "ln2.g", {H}, 0.1f, 1.f);
    ln2.w[slot::kBeta] = tensor(p + "ln2.b", {H}, 0.1f);
    ln2.out = value(p + "ln2", H);
    w.graph.ops.push_back(ln2);
    x = ln2.out;
  }
  w.graph.output = x;

  std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]"};
  while (static_cast<int64_t>(vocab.size()) < s.vocab) vocab.push_back("tok" + std::to_string(vocab.size()));
  w.tokenizer = WordPieceTokenizer(vocab, WordPieceOptions{});
}

// A per-sequence head on the graph's output (width `hidden`): its first row
// per sequence (Pool Cls) through a Linear to `classes` values, the graph
// output "logits". The weights come from rng, the weight matrix first.
inline void add_logits_head(SpnlWriter& w, int64_t hidden, int64_t classes, std::mt19937& rng) {
  w.graph.values.push_back({"cls", hidden, Rows::Sequences});
  Op pool;
  pool.kind = OpKind::Pool;
  pool.pool = PoolKind::Cls;
  pool.name = "classifier.pool";
  pool.in0 = w.graph.output;
  pool.out = static_cast<int32_t>(w.graph.values.size() - 1);
  w.graph.ops.push_back(pool);
  const auto wt = random_floats(static_cast<size_t>(hidden * classes), rng, 0.8f);
  const auto bias = random_floats(static_cast<size_t>(classes), rng, 0.3f);
  w.graph.values.push_back({"logits", classes, Rows::Sequences});
  Op lin;
  lin.kind = OpKind::Linear;
  lin.name = "classifier";
  lin.in0 = pool.out;
  lin.w[slot::kWeight] = w.add_tensor("classifier.weight", DType::F32, {hidden, classes}, wt.data(), wt.size() * 4);
  lin.w[slot::kBias] = w.add_tensor("classifier.bias", DType::F32, {classes}, bias.data(), bias.size() * 4);
  lin.out = static_cast<int32_t>(w.graph.values.size() - 1);
  w.graph.ops.push_back(lin);
  w.graph.outputs.push_back({"logits", lin.out});
}

// A fresh directory under the system temp dir, removed by the caller if wanted.
inline std::string temp_dir(const std::string& tag) {
  std::string tmpl = "/tmp/spinel-test-" + tag + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
  return buf.data();
}

}  // namespace spinel::testing
