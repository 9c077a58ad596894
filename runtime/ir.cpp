#include "runtime/ir.h"

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
  }
  return "?";
}

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::None: return "none";
    case Activation::GeluErf: return "gelu_erf";
    case Activation::GeluTanh: return "gelu_tanh";
  }
  return "?";
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

void validate_graph(const Graph& g, const std::vector<TensorInfo>& tensors, const ModelConfig& cfg) {
  if (g.ops.empty()) fail("graph has no ops");
  if (cfg.hidden_size <= 0 || cfg.num_heads <= 0 || cfg.hidden_size % cfg.num_heads != 0)
    fail("config: hidden_size ", cfg.hidden_size, " is not a positive multiple of num_heads ",
         cfg.num_heads);
  if (cfg.vocab_size <= 0) fail("config: vocab_size ", cfg.vocab_size, " must be positive");
  for (const Value& v : g.values)
    if (v.width <= 0) fail("graph value '", v.name, "' has width ", v.width);

  std::vector<bool> defined(g.values.size(), false);
  Checker c{g, tensors};
  for (c.op_index = 0; c.op_index < g.ops.size(); ++c.op_index) {
    const Op& op = g.ops[c.op_index];
    auto use = [&](int32_t id, const char* role) -> const Value& {
      const Value& v = c.value(id, role);
      if (!defined[id]) c.bad(std::string(role) + " '" + v.name + "' is used before it is computed");
      return v;
    };
    const Value& out = c.value(op.out, "output");
    switch (op.kind) {
      case OpKind::Embedding: {
        const auto* word = c.weight(op, slot::kWord, "word", true);
        if (word->shape.size() != 2) c.bad("word embedding table must be 2-D");
        const int64_t H = word->shape[1];
        if (word->shape[0] != cfg.vocab_size)
          c.bad("word table has " + std::to_string(word->shape[0]) + " rows, config vocab_size is " +
                std::to_string(cfg.vocab_size));
        if (const auto* pos = c.weight(op, slot::kPosition, "position", false)) {
          c.shape_is(pos, {cfg.max_position, H}, "position");
        }
        if (const auto* type = c.weight(op, slot::kTokenType, "token_type", false)) {
          c.shape_is(type, {cfg.type_vocab_size, H}, "token_type");
        }
        c.shape_is(c.weight(op, slot::kEmbGamma, "gamma", true), {H}, "gamma");
        c.shape_is(c.weight(op, slot::kEmbBeta, "beta", true), {H}, "beta");
        if (out.width != H) c.bad("output width differs from the embedding width");
        break;
      }
      case OpKind::Linear: {
        const Value& x = use(op.in0, "input");
        const bool s8 = op.precision != Precision::F32;
        if (static_cast<uint32_t>(op.precision) > static_cast<uint32_t>(Precision::S8Sparse))
          c.bad("unknown precision");
        const auto* w = c.weight(op, slot::kWeight, "weight", true, s8 ? DType::I8 : DType::F32);
        if (w->shape.size() != 2) c.bad("weight must be 2-D");
        c.shape_is(w, {x.width, out.width}, "weight");
        if (s8) c.shape_is(c.weight(op, slot::kWeightScale, "weight scale", true), {out.width}, "weight scale");
        if (!(op.act_scale >= 0.f) || op.act_zp < 0 || op.act_zp > 255 ||
            (op.act_scale > 0.f && !s8))
          c.bad("invalid static activation quantization (scale " + std::to_string(op.act_scale) +
                ", zero point " + std::to_string(op.act_zp) + ")");
        if (op.precision == Precision::S8Sparse && (x.width % 4 != 0 || out.width % 4 != 0))
          c.bad("block-sparse weights need K and N multiples of 4, got " + std::to_string(x.width) +
                "x" + std::to_string(out.width));
        c.shape_is(c.weight(op, slot::kBias, "bias", false), {out.width}, "bias");
        if (op.in1 >= 0 && use(op.in1, "residual").width != out.width)
          c.bad("residual width differs from the output width");
        break;
      }
      case OpKind::Attention: {
        const Value& qkv = use(op.in0, "qkv");
        if (op.num_heads <= 0 || out.width % op.num_heads != 0)
          c.bad("output width " + std::to_string(out.width) + " is not a multiple of num_heads " +
                std::to_string(op.num_heads));
        if (qkv.width != 3 * out.width) c.bad("qkv width must be 3x the output width");
        if (!(op.scale > 0.f)) c.bad("scale must be positive");
        break;
      }
      case OpKind::LayerNorm: {
        const Value& x = use(op.in0, "input");
        if (op.in1 >= 0 && use(op.in1, "residual").width != x.width)
          c.bad("residual width differs from the input width");
        if (out.width != x.width) c.bad("output width differs from the input width");
        c.shape_is(c.weight(op, slot::kGamma, "gamma", true), {x.width}, "gamma");
        c.shape_is(c.weight(op, slot::kBeta, "beta", true), {x.width}, "beta");
        if (!(op.eps > 0.f)) c.bad("eps must be positive");
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
}

}  // namespace spinel
