#include "runtime/ir.h"

#include <cmath>
#include <utility>

#include "runtime/error.h"

namespace spinel {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::I8: return 1;
    case DType::I32: return 4;
    case DType::U8: return 1;
    case DType::I64: return 8;
  }
  fail("unknown dtype code ", static_cast<uint32_t>(t));
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::I8: return "s8";
    case DType::I32: return "s32";
    case DType::U8: return "u8";
    case DType::I64: return "s64";
  }
  return "?";
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const char* op_kind_name(OpKind k) {
  switch (k) {
    case OpKind::Embedding: return "Embedding";
    case OpKind::Linear: return "Linear";
    case OpKind::Attention: return "Attention";
    case OpKind::LayerNorm: return "LayerNorm";
    case OpKind::Pool: return "Pool";
  }
  return "?";
}

const char* pool_kind_name(PoolKind p) {
  switch (p) {
    case PoolKind::Cls: return "cls";
    case PoolKind::Mean: return "mean";
  }
  return "?";
}

int Graph::find_output(const std::string& name) const {
  for (size_t i = 0; i < outputs.size(); ++i)
    if (outputs[i].name == name) return static_cast<int>(i);
  return -1;
}

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::None: return "none";
    case Activation::GeluErf: return "gelu_erf";
    case Activation::GeluTanh: return "gelu_tanh";
    case Activation::Tanh: return "tanh";
  }
  return "?";
}

const char* gate_name(Gate g) {
  switch (g) {
    case Gate::None: return "none";
    case Gate::Geglu: return "geglu";
  }
  return "?";
}

std::vector<float> alibi_slopes(int heads) {
  if (heads <= 0) fail("alibi_slopes: ", heads, " heads");
  // Powers of two are exact in double, so the slopes are the closest floats.
  auto pow2_slopes = [](int n) {
    const double start = std::exp2(-std::exp2(-(std::log2(static_cast<double>(n)) - 3.0)));
    std::vector<double> s(static_cast<size_t>(n));
    double v = start;
    for (int i = 0; i < n; ++i, v *= start) s[static_cast<size_t>(i)] = v;
    return s;
  };
  int c = 1;
  while (c * 2 <= heads) c *= 2;
  std::vector<double> s = pow2_slopes(c);
  if (c != heads) {
    const std::vector<double> b = pow2_slopes(2 * c);
    for (int i = 0; i < heads - c; ++i) s.push_back(b[static_cast<size_t>(2 * i)]);
  }
  return std::vector<float>(s.begin(), s.end());
}

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::F32: return "f32";
    case Precision::S8Dense: return "s8-dense";
    case Precision::S8Sparse: return "s8-sparse";
  }
  return "?";
}

namespace {

struct Checker {
  const Graph& g;
  const std::vector<TensorInfo>& tensors;
  size_t op_index = 0;

  [[noreturn]] void bad(const std::string& why) const {
    const Op& op = g.ops[op_index];
    fail("graph op #", op_index, " (", op_kind_name(op.kind), " '", op.name, "'): ", why);
  }
  const Value& value(int32_t id, const char* role) const {
    if (id < 0 || static_cast<size_t>(id) >= g.values.size())
      bad(std::string(role) + " refers to value " + std::to_string(id) + ", graph has " +
          std::to_string(g.values.size()));
    return g.values[id];
  }
  const TensorInfo* weight(const Op& op, int slot_idx, const char* role, bool required,
                           DType want = DType::F32) const {
    const int32_t id = op.w[slot_idx];
    if (id < -1) bad(std::string("weight '") + role + "' refers to tensor " + std::to_string(id));
    if (id < 0) {
      if (required) bad(std::string("missing weight '") + role + "'");
      return nullptr;
    }
    if (static_cast<size_t>(id) >= tensors.size())
      bad(std::string("weight '") + role + "' refers to tensor " + std::to_string(id) +
          ", model has " + std::to_string(tensors.size()));
    const TensorInfo& t = tensors[id];
    if (t.dtype != want)
      bad(std::string("weight '") + role + "' (" + t.name + ") is " + dtype_name(t.dtype) +
          ", expected " + dtype_name(want));
    return &t;
  }
  void shape_is(const TensorInfo* t, std::vector<int64_t> want, const char* role) const {
    if (!t) return;
    if (t->shape != want) {
      std::string got, exp;
      for (auto d : t->shape) got += (got.empty() ? "" : "x") + std::to_string(d);
      for (auto d : want) exp += (exp.empty() ? "" : "x") + std::to_string(d);
      bad(std::string("weight '") + role + "' (" + t->name + ") has shape [" + got + "], expected [" +
          exp + "]");
    }
  }
};

}  // namespace

namespace {

bool finite_in(float v, float lo, float hi) { return std::isfinite(v) && v > lo && v <= hi; }

}  // namespace

// Longest sequence a model may declare: the attention scratch is quadratic in it.
constexpr int64_t kMaxPositions = int64_t{1} << 20;

void validate_config(const ModelConfig& cfg) {
  const int64_t limit = int64_t{1} << 31;
  const std::pair<const char*, int64_t> sizes[] = {
      {"vocab_size", cfg.vocab_size},         {"hidden_size", cfg.hidden_size},
      {"num_layers", cfg.num_layers},         {"num_heads", cfg.num_heads},
      {"intermediate_size", cfg.intermediate_size}, {"max_position", cfg.max_position},
      {"type_vocab_size", cfg.type_vocab_size}};
  for (const auto& [name, v] : sizes)
    if (v < 0 || v > limit) fail("config: ", name, " is ", v, ", outside [0, 2^31]");
  if (cfg.hidden_size <= 0 || cfg.num_heads <= 0 || cfg.hidden_size % cfg.num_heads != 0)
    fail("config: hidden_size ", cfg.hidden_size, " is not a positive multiple of num_heads ",
         cfg.num_heads);
  if (cfg.vocab_size <= 0) fail("config: vocab_size ", cfg.vocab_size, " must be positive");
  // The length check of every run relies on it: there is no "unlimited".
  if (cfg.max_position < 1 || cfg.max_position > kMaxPositions)
    fail("config: max_position ", cfg.max_position, " is outside [1, ", kMaxPositions, "]");
  if (!finite_in(cfg.layer_norm_eps, 0.f, 1.f))
    fail("config: layer_norm_eps ", cfg.layer_norm_eps, " is not a finite number in (0, 1]");
}

void validate_graph(const Graph& g, const std::vector<TensorInfo>& tensors, const ModelConfig& cfg) {
  validate_config(cfg);
  if (g.ops.empty()) fail("graph has no ops");
  for (const Value& v : g.values) {
    if (v.width <= 0 || v.width > (int64_t{1} << 24))
      fail("graph value '", v.name, "' has width ", v.width, ", outside [1, 2^24]");
    if (v.rows != Rows::Tokens && v.rows != Rows::Sequences)
      fail("graph value '", v.name, "' has unknown row kind ", static_cast<uint32_t>(v.rows));
  }

  std::vector<bool> defined(g.values.size(), false);
  Checker c{g, tensors};
  for (c.op_index = 0; c.op_index < g.ops.size(); ++c.op_index) {
    const Op& op = g.ops[c.op_index];
    auto use = [&](int32_t id, const char* role) -> const Value& {
      const Value& v = c.value(id, role);
      if (!defined[id]) c.bad(std::string(role) + " '" + v.name + "' is used before it is computed");
      return v;
    };
    // Inputs an op kind does not read must be absent: the memory plan and
    // the backends index buffers with every input field.
    auto unused = [&](int32_t id, const char* role) {
      if (id != -1) c.bad(std::string(op_kind_name(op.kind)) + " takes no " + role + ", got value " +
                          std::to_string(id));
    };
    // Rows of the output follow the op: token rows, except after a Pool.
    auto rows_are = [&](const Value& v, Rows want, const char* role) {
      if (v.rows != want)
        c.bad(std::string(role) + " '" + v.name + "' has " +
              (v.rows == Rows::Tokens ? "token" : "sequence") + " rows, expected " +
              (want == Rows::Tokens ? "token" : "sequence") + " rows");
    };
    if (static_cast<uint32_t>(op.act) > static_cast<uint32_t>(Activation::Tanh))
      c.bad("unknown activation " + std::to_string(static_cast<uint32_t>(op.act)));
    if (op.act != Activation::None && op.kind != OpKind::Linear) c.bad("only a Linear has an activation");
    if (static_cast<uint32_t>(op.gate) > static_cast<uint32_t>(Gate::Geglu))
      c.bad("unknown gate " + std::to_string(static_cast<uint32_t>(op.gate)));
    if (op.gate != Gate::None && op.kind != OpKind::Linear) c.bad("only a Linear is gated");
    if (op.gate != Gate::None && op.act != Activation::None)
      c.bad(std::string("a gated Linear (") + gate_name(op.gate) + ") has no separate activation");
    if (op.alibi && op.kind != OpKind::Attention) c.bad("only an Attention has an ALiBi bias");
    if (!(op.block_sparsity == -1.f || (op.block_sparsity >= 0.f && op.block_sparsity <= 1.f)))
      c.bad("block sparsity " + std::to_string(op.block_sparsity) + " is outside [0, 1]");
    const int used_slots = op.kind == OpKind::Embedding ? 5 : op.kind == OpKind::Linear ? 4
                           : op.kind == OpKind::LayerNorm ? 2 : 0;
    for (int k = used_slots; k < slot::kCount; ++k)
      if (op.w[k] != -1) c.bad("weight slot " + std::to_string(k) + " is not used by this op kind");
    const Value& out = c.value(op.out, "output");
    if (defined[op.out]) c.bad("output '" + out.name + "' is computed twice");
    switch (op.kind) {
      case OpKind::Embedding: {
        unused(op.in0, "input");
        unused(op.in1, "second input");
        const auto* word = c.weight(op, slot::kWord, "word", true);
        if (word->shape.size() != 2) c.bad("word embedding table must be 2-D");
        const int64_t H = word->shape[1];
        if (word->shape[0] != cfg.vocab_size)
          c.bad("word table has " + std::to_string(word->shape[0]) + " rows, config vocab_size is " +
                std::to_string(cfg.vocab_size));
        if (const auto* pos = c.weight(op, slot::kPosition, "position", false)) {
          // Runs are limited to max_position tokens, so that many rows must exist.
          if (pos->shape.size() != 2 || pos->shape[1] != H || pos->shape[0] < cfg.max_position)
            c.bad("position table (" + pos->name + ") must be [>= max_position " +
                  std::to_string(cfg.max_position) + ", " + std::to_string(H) + "]");
        }
        if (const auto* type = c.weight(op, slot::kTokenType, "token_type", false)) {
          if (cfg.type_vocab_size < 1) c.bad("a token type table needs type_vocab_size >= 1");
          c.shape_is(type, {cfg.type_vocab_size, H}, "token_type");
        }
        c.shape_is(c.weight(op, slot::kEmbGamma, "gamma", true), {H}, "gamma");
        c.shape_is(c.weight(op, slot::kEmbBeta, "beta", true), {H}, "beta");
        if (out.width != H) c.bad("output width differs from the embedding width");
        rows_are(out, Rows::Tokens, "output");
        if (!finite_in(op.eps, 0.f, 1.f)) c.bad("eps must be a finite number in (0, 1]");
        break;
      }
      case OpKind::Linear: {
        const Value& x = use(op.in0, "input");
        const bool s8 = op.precision != Precision::F32;
        if (static_cast<uint32_t>(op.precision) > static_cast<uint32_t>(Precision::S8Sparse))
          c.bad("unknown precision");
        const auto* w = c.weight(op, slot::kWeight, "weight", true, s8 ? DType::I8 : DType::F32);
        if (w->shape.size() != 2) c.bad("weight must be 2-D");
        // A gated Linear's weight holds both halves: [K, 2 * out width].
        const int64_t wn = linear_weight_cols(op, out.width);
        if (op.gate != Gate::None && w->shape.size() == 2 && w->shape[1] != wn)
          c.bad(std::string("gated (") + gate_name(op.gate) + ") weight (" + w->name + ") has " +
                std::to_string(w->shape[1]) + " columns, expected 2 x the output width " +
                std::to_string(out.width) + " = " + std::to_string(wn));
        c.shape_is(w, {x.width, wn}, "weight");
        if (s8) c.shape_is(c.weight(op, slot::kWeightScale, "weight scale", true), {wn}, "weight scale");
        else if (op.w[slot::kWeightScale] != -1) c.bad("an f32 Linear has no weight scale");
        if (s8) c.shape_is(c.weight(op, slot::kInScale, "input scale", false), {x.width}, "input scale");
        else if (op.w[slot::kInScale] != -1) c.bad("an f32 Linear has no input scale");
        const bool static_q = op.act_scale != 0.f;
        if ((static_q && (!s8 || !finite_in(op.act_scale, 0.f, 1e30f))) || op.act_zp < 0 ||
            op.act_zp > 255 || (!static_q && op.act_zp != 0))
          c.bad("invalid static activation quantization (scale " + std::to_string(op.act_scale) +
                ", zero point " + std::to_string(op.act_zp) + ")");
        if (op.precision == Precision::S8Sparse && (x.width % 4 != 0 || wn % 4 != 0))
          c.bad("block-sparse weights need K and N multiples of 4, got " + std::to_string(x.width) +
                "x" + std::to_string(wn));
        c.shape_is(c.weight(op, slot::kBias, "bias", false), {wn}, "bias");
        if (op.in1 != -1) {
          const Value& r = use(op.in1, "residual");
          if (r.width != out.width) c.bad("residual width differs from the output width");
          rows_are(r, x.rows, "residual");
        }
        rows_are(out, x.rows, "output");
        break;
      }
      case OpKind::Attention: {
        const Value& qkv = use(op.in0, "qkv");
        unused(op.in1, "second input");
        if (op.num_heads <= 0 || out.width % op.num_heads != 0)
          c.bad("output width " + std::to_string(out.width) + " is not a multiple of num_heads " +
                std::to_string(op.num_heads));
        if (qkv.width != 3 * out.width) c.bad("qkv width must be 3x the output width");
        if (!finite_in(op.scale, 0.f, 1e6f)) c.bad("scale must be a finite number in (0, 1e6]");
        rows_are(qkv, Rows::Tokens, "qkv");
        rows_are(out, Rows::Tokens, "output");
        break;
      }
      case OpKind::LayerNorm: {
        const Value& x = use(op.in0, "input");
        if (op.in1 != -1 && use(op.in1, "residual").width != x.width)
          c.bad("residual width differs from the input width");
        if (out.width != x.width) c.bad("output width differs from the input width");
        c.shape_is(c.weight(op, slot::kGamma, "gamma", true), {x.width}, "gamma");
        c.shape_is(c.weight(op, slot::kBeta, "beta", true), {x.width}, "beta");
        if (!finite_in(op.eps, 0.f, 1.f)) c.bad("eps must be a finite number in (0, 1]");
        if (op.in1 != -1) rows_are(g.values[op.in1], x.rows, "residual");
        rows_are(out, x.rows, "output");
        break;
      }
      case OpKind::Pool: {
        const Value& x = use(op.in0, "input");
        unused(op.in1, "second input");
        if (op.pool != PoolKind::Cls && op.pool != PoolKind::Mean)
          c.bad("unknown pooling " + std::to_string(static_cast<uint32_t>(op.pool)));
        rows_are(x, Rows::Tokens, "input");
        rows_are(out, Rows::Sequences, "output");
        if (out.width != x.width) c.bad("output width differs from the input width");
        break;
      }
      default:
        c.bad("unknown op kind " + std::to_string(static_cast<uint32_t>(op.kind)));
    }
    defined[op.out] = true;
  }
  if (g.output < 0 || static_cast<size_t>(g.output) >= g.values.size() || !defined[g.output])
    fail("graph output refers to value ", g.output, " which no op computes");
  if (g.values[g.output].width != cfg.hidden_size)
    fail("graph output width ", g.values[g.output].width, " differs from hidden_size ",
         cfg.hidden_size);
  if (g.values[g.output].rows != Rows::Tokens) fail("last_hidden_state must have token rows");
  for (size_t i = 0; i < g.outputs.size(); ++i) {
    const GraphOutput& o = g.outputs[i];
    if (o.name.empty() || o.name == "last_hidden_state" || o.name == "cls" || o.name == "mean" ||
        o.name == "none")
      fail("graph output #", i, " has the reserved name '", o.name, "'");
    if (g.find_output(o.name) != static_cast<int>(i)) fail("graph output '", o.name, "' appears twice");
    if (o.value < 0 || static_cast<size_t>(o.value) >= g.values.size() || !defined[o.value])
      fail("graph output '", o.name, "' refers to value ", o.value, " which no op computes");
    if (g.values[o.value].rows != Rows::Sequences)
      fail("graph output '", o.name, "' must have one row per sequence");
  }
  if (cfg.default_pool != "cls" && cfg.default_pool != "mean" && cfg.default_pool != "none" &&
      g.find_output(cfg.default_pool) < 0)
    fail("config: default pooling '", cfg.default_pool,
         "' is neither cls, mean, none nor a per-sequence graph output");
}

}  // namespace spinel
