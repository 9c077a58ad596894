// The reference backend: every op kind on the plain loops of reference.h,
// on the calling thread. Slow, and the definition the tests compare against:
// both INT8 precisions compute the same function (dense loops over the s8
// weights), only the cpu backend's kernels differ.
#include <cmath>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/reference/reference.h"

namespace spinel {
namespace {

namespace ref = kernels::ref;

enum : int { kQuantX = 0, kQuantScale = 1, kQuantZp = 2, kGateIn = 3 };

struct RefState : PreparedOp {
  OpWeights w;
  const char* name;
  RefState(OpWeights w_, const char* n) : w(w_), name(n) {}
  std::string kernel() const override { return name; }
};

template <typename Run>
class RefOp : public OpImpl {
 public:
  explicit RefOp(const char* name) : name_(name) {}
  std::unique_ptr<PreparedOp> prepare(const PrepareArgs& a) const override {
    return std::make_unique<RefState>(a.weights, name_);
  }
  void run(const Op& op, const PreparedOp& st, const OpIO& io, RunContext& ctx) const override {
    Run{}(op, static_cast<const RefState&>(st).w, io, ctx);
  }

 private:
  const char* name_;
};

struct EmbeddingRun {
  void operator()(const Op& op, const OpWeights& w, const OpIO& io, RunContext& ctx) const {
    const BatchView& b = ctx.batch;
    ref::embedding_f32(b.ids, b.type_ids, b.positions, b.tokens, io.out_width,
                       w.get<float>(slot::kWord), w.get<float>(slot::kPosition),
                       w.get<float>(slot::kTokenType), w.get<float>(slot::kEmbGamma),
                       w.get<float>(slot::kEmbBeta), op.eps, io.out);
  }
};

struct LayerNormRun {
  void operator()(const Op& op, const OpWeights& w, const OpIO& io, RunContext&) const {
    ref::layernorm_f32(io.in0, io.in1, w.get<float>(slot::kGamma), w.get<float>(slot::kBeta), op.eps,
                       io.in_rows, io.in_width, io.out);
  }
};

struct AttentionRun {
  void operator()(const Op& op, const OpWeights&, const OpIO& io, RunContext& ctx) const {
    const std::vector<float> slopes = op.alibi ? alibi_slopes(op.num_heads) : std::vector<float>{};
    ref::attention_f32(io.in0, ctx.batch.seq_offsets, ctx.batch.num_seqs, op.num_heads,
                       io.out_width / op.num_heads, op.scale, io.out,
                       op.alibi ? slopes.data() : nullptr);
  }
};

struct PoolRun {
  void operator()(const Op& op, const OpWeights&, const OpIO& io, RunContext& ctx) const {
    ref::pool_f32(io.in0, ctx.batch.seq_offsets, ctx.batch.num_seqs, io.in_width, op.pool, io.out);
  }
};

struct LinearRun {
  void operator()(const Op& op, const OpWeights& w, const OpIO& io, RunContext& ctx) const {
    const int64_t T = io.in_rows, K = io.in_width;
    // A gated Linear computes both halves [T, 2N] without activation or
    // residual, then the gate.
    const bool gated = op.gate != Gate::None;
    const int64_t N = linear_weight_cols(op, io.out_width);
    float* y = gated ? ctx.ws.get<float>(kGateIn, static_cast<size_t>(T * N)) : io.out;
    const float* residual = gated ? nullptr : io.in1;
    auto finish = [&] {
      if (gated) ref::gate_f32(y, T, io.out_width, op.gate, io.in1, io.out);
    };
    if (op.precision == Precision::F32) {
      ref::linear_f32(io.in0, w.get<float>(slot::kWeight), w.get<float>(slot::kBias), T, K, N, op.act,
                      residual, y);
      finish();
      return;
    }
    uint8_t* xq = ctx.ws.get<uint8_t>(kQuantX, static_cast<size_t>(T * K));
    float* xs = ctx.ws.get<float>(kQuantScale, static_cast<size_t>(T));
    int32_t* xz = ctx.ws.get<int32_t>(kQuantZp, static_cast<size_t>(T));
    if (op.act_scale > 0.f)
      ref::quantize_rows_u8_static(io.in0, T, K, op.act_scale, op.act_zp, xq, xs, xz,
                                   w.get<float>(slot::kInScale));
    else
      ref::quantize_rows_u8(io.in0, T, K, xq, xs, xz, w.get<float>(slot::kInScale));
    kernels::QEpilogue ep;
    const bool after = op.act == Activation::GeluTanh || op.act == Activation::Tanh;
    ep.gelu = op.act == Activation::GeluErf;
    ep.residual = after ? nullptr : residual;
    ref::linear_u8s8(xq, T, K, K, xs, xz, w.get<int8_t>(slot::kWeight), N,
                     w.get<float>(slot::kWeightScale), w.get<float>(slot::kBias), ep, y, N);
    if (after) {
      for (int64_t i = 0; i < T * N; ++i) {
        float& v = y[i];
        v = op.act == Activation::GeluTanh ? ref::gelu_tanh(v) : ref::tanh_f32(v);
        if (residual) v += residual[i];
      }
    }
    finish();
  }
};

class InlineExecutor : public Executor {
 public:
  void execute(const std::function<void()>& fn) override { fn(); }
};

class ReferenceBackend : public Backend {
 public:
  const char* name() const override { return "reference"; }
  const OpImpl* op(OpKind kind) const override {
    switch (kind) {
      case OpKind::Embedding: return &embedding_;
      case OpKind::Linear: return &linear_;
      case OpKind::Attention: return &attention_;
      case OpKind::LayerNorm: return &layernorm_;
      case OpKind::Pool: return &pool_;
    }
    return nullptr;
  }
  std::unique_ptr<Executor> make_executor(int) const override {
    return std::make_unique<InlineExecutor>();
  }
  std::string describe() const override { return "reference: plain loops, one thread"; }

 private:
  RefOp<EmbeddingRun> embedding_{"ref_embedding"};
  RefOp<LinearRun> linear_{"ref_linear"};
  RefOp<AttentionRun> attention_{"ref_attention"};
  RefOp<LayerNormRun> layernorm_{"ref_layernorm"};
  RefOp<PoolRun> pool_{"ref_pool"};
};

}  // namespace

std::unique_ptr<Backend> make_reference_backend() { return std::make_unique<ReferenceBackend>(); }

}  // namespace spinel
