// The cpu backend: every op kind on oneDNN, TBB and our kernels, at the ISA
// level active when the model is prepared (the level is the backend's
// variant, so a later cap gets its own preparation).
#include <omp.h>
#include <tbb/task_arena.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/f32_isa.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel_util.h"
#include "kernels/cpu/qgemm.h"
#include "kernels/cpu/select.h"
#include "kernels/cpu/spmm_f32.h"

namespace spinel {
namespace {

// Runs of at most this many tokens do not use the Linear chain (see run).
constexpr int64_t kChainMinTokens = 16;

namespace k = kernels;

// Workspace slots of this backend.
enum : int {
  kAttentionScratch = 0,
  kQuantX = 1,
  kQuantScale = 2,
  kQuantZp = 3,
  kGateIn = 4,
  kChainF32 = 5,  // Linear chain: the first Linear's output, f32 blocked
  kChainU8 = 6,   // the second's input, u8 blocked
  kChainTag = 7,  // what kChainF32 holds: {tokens, width}, written by the first
  kChainRange = 8,  // the first's per-token ranges (qgemm.h BlockedRange)
  kPanelTag = 9,    // QKV in head panels: {tokens, width}, written by the Linear
  kLnQuantTag = 10,  // kLnQX/Scale/Zp hold the next Linear's input: {tokens, width}, by the LayerNorm
  kLnQX = 11,        // the LayerNorm's output quantized for the next Linear (layernorm_quantizes_next)
  kLnQScale = 12,
  kLnQZp = 13,
  kLnFusedTag = 14,  // the LayerNorm ran on the Linear's threads: {tokens, width}, by the Linear
  kLinQuantTag = 15,  // kLinQX/Scale/Zp hold the next Linear's input: {tokens, width}, by the Linear before it
  kLinQX = 16,        // a Linear's output quantized for the next one (select.h linear_quantizes_next)
  kLinQScale = 17,
  kLinQZp = 18,
  kBf16Tag = 19,  // QKV written as BF16 (rows or panels): {tokens, width}, by the Linear
  kK2Tag = 20,    // and K's panels as pair words (select.h qkv_k_pairs): {tokens, width}, by the Linear
  kV2Tag = 21,    // and V's (select.h qkv_v_pairs): {tokens, width}, by the Linear
};

// A run's word from one op to the next in workspace slot `slot`: the writer
// sets {rows, width} when it wrote what the slot names (else -1s), the reader
// takes it (true when it says {rows, width}) and clears it either way.
void set_tag(RunContext& ctx, int slot, bool wrote, int64_t rows, int64_t width) {
  int64_t* tag = ctx.ws.get<int64_t>(slot, 2);
  tag[0] = wrote ? rows : -1;
  tag[1] = wrote ? width : -1;
}
bool take_tag(RunContext& ctx, int slot, int64_t rows, int64_t width) {
  int64_t* tag = ctx.ws.get<int64_t>(slot, 2);
  const bool said = tag[0] == rows && tag[1] == width;
  tag[0] = tag[1] = -1;
  return said;
}

// The op's index in its graph (PrepareArgs::op is one of graph.ops), or -1.
int64_t op_index(const PrepareArgs& a) {
  const Op* first = a.graph.ops.data();
  if (&a.op < first || &a.op >= first + a.graph.ops.size()) return -1;
  return &a.op - first;
}

// --- ops that only read weights: the state is the op's weight pointers -----
struct WeightState : PreparedOp {
  OpWeights w;
  std::string name;
  WeightState(OpWeights w_, std::string n) : w(w_), name(std::move(n)) {}
  std::string kernel() const override { return name; }
};

class EmbeddingCpu : public OpImpl {
 public:
  std::unique_ptr<PreparedOp> prepare(const PrepareArgs& a) const override {
    return std::make_unique<WeightState>(a.weights, std::string("embedding_layernorm_f32_") +
                                                        k::f32::kernel_table().name);
  }
  void run(const Op& op, const PreparedOp& st, const OpIO& io, RunContext& ctx) const override {
    const OpWeights& w = static_cast<const WeightState&>(st).w;
    const BatchView& b = ctx.batch;
    k::embedding_f32(b.ids, b.type_ids, b.positions, b.tokens, io.out_width,
                     w.get<float>(slot::kWord), w.get<float>(slot::kPosition),
                     w.get<float>(slot::kTokenType), w.get<float>(slot::kEmbGamma),
                     w.get<float>(slot::kEmbBeta), op.eps, io.out);
  }
};

struct LayerNormState : WeightState {
  // Quantizes its output for the next op, an INT8 Linear (select.h
  // layernorm_quantizes_next), with that Linear's input scale (nullable).
  bool quantize_next = false;
  const float* next_in_scale = nullptr;
  // The Linear before it runs it (select.h linear_runs_layernorm).
  bool by_linear = false;
  using WeightState::WeightState;
  std::string why() const override {
    std::string w = quantize_next ? "output also quantized to 8 bits per token for the next Linear" : "";
    if (by_linear) w += std::string(w.empty() ? "" : "; ") + "run by the Linear before it, on its kernel's threads";
    return w;
  }
};

// The rows of a Linear's output that its kernel hands over (qgemm.h
// RowsDone), quantized per token for the Linear after it (select.h
// linear_quantizes_next), with that one's input scale (nullable).
struct QuantizeRows {
  const float* y;  // the Linear's output [T][cols]
  int64_t cols;
  const float* mul;
  uint8_t* xq;
  float* scale;
  int32_t* zp;
  static void run(const void* c, int64_t m0, int64_t rows) {
    const auto& r = *static_cast<const QuantizeRows*>(c);
    k::qgemm_detail::quantize_rows_u8_here(r.y + m0 * r.cols, rows, r.cols, r.cols, r.xq + m0 * r.cols,
                                           r.scale + m0, r.zp + m0, r.mul);
  }
};

// The rows of a Linear's output that its kernel hands over (qgemm.h
// RowsDone) go through the LayerNorm after it, and its quantization for the
// Linear after that when the LayerNorm has one.
struct LayerNormRows {
  const float* y;  // the Linear's output [T][cols]
  int64_t cols;
  const float* gamma;
  const float* beta;
  float eps;
  float* out;         // the LayerNorm's output
  const float* mul;   // the next Linear's input scale (nullable)
  uint8_t* xq;        // null: no quantization
  float* scale;
  int32_t* zp;
  static void run(const void* c, int64_t m0, int64_t rows) {
    const auto& r = *static_cast<const LayerNormRows*>(c);
    const int64_t off = m0 * r.cols;
    k::layernorm_quantize_here(r.y + off, nullptr, r.gamma, r.beta, r.eps, rows, r.cols, r.out + off, r.mul,
                               r.xq ? r.xq + off : nullptr, r.xq ? r.scale + m0 : nullptr,
                               r.xq ? r.zp + m0 : nullptr);
  }
};

class LayerNormCpu : public OpImpl {
 public:
  std::unique_ptr<PreparedOp> prepare(const PrepareArgs& a) const override {
    auto st = std::make_unique<LayerNormState>(a.weights,
                                               std::string("layernorm_f32_") + k::f32::kernel_table().name);
    if (const int64_t i = op_index(a); i >= 0 && k::layernorm_quantizes_next(a.graph, static_cast<size_t>(i))) {
      st->quantize_next = true;
      if (a.weights_of) st->next_in_scale = a.weights_of(static_cast<size_t>(i + 1)).get<float>(slot::kInScale);
    }
    // (The Linear needs this op's weights from weights_of: both ask the same.)
    if (const int64_t i = op_index(a); i > 0 && a.weights_of)
      st->by_linear = k::linear_runs_layernorm(a.graph, static_cast<size_t>(i - 1));
    return st;
  }
  void run(const Op& op, const PreparedOp& base, const OpIO& io, RunContext& ctx) const override {
    const auto& st = static_cast<const LayerNormState&>(base);
    const OpWeights& w = st.w;
    if (st.by_linear && !ctx.keep_values) {
      int64_t* tag = ctx.ws.get<int64_t>(kLnFusedTag, 2);
      if (tag[0] != io.in_rows || tag[1] != io.in_width)
        throw std::logic_error("internal error: LayerNorm '" + op.name +
                               "' expected the Linear before it to have run it, which it did not");
      tag[0] = tag[1] = -1;
      return;
    }
    if (st.quantize_next && !ctx.keep_values) {
      const int64_t T = io.in_rows, K = io.in_width;
      auto* xq = ctx.ws.get<uint8_t>(kLnQX, static_cast<size_t>(T * K));
      float* xs = ctx.ws.get<float>(kLnQScale, static_cast<size_t>(T));
      int32_t* xz = ctx.ws.get<int32_t>(kLnQZp, static_cast<size_t>(T));
      k::layernorm_quantize_f32(io.in0, io.in1, w.get<float>(slot::kGamma), w.get<float>(slot::kBeta), op.eps,
                                T, K, io.out, st.next_in_scale, xq, xs, xz);
      int64_t* tag = ctx.ws.get<int64_t>(kLnQuantTag, 2);
      tag[0] = T;
      tag[1] = K;
      return;
    }
    k::layernorm_f32(io.in0, io.in1, w.get<float>(slot::kGamma), w.get<float>(slot::kBeta), op.eps,
                     io.in_rows, io.in_width, io.out);
  }
};

struct AttentionState : PreparedOp {
  std::string name;
  k::AttentionChoice choice;
  std::vector<float> slopes;  // ALiBi, per head (empty: none)
  bool qkv_panels = false;    // the QKV Linear writes head panels (select.h qkv_head_panel)
  bool qkv_bf16 = false;      // it may write BF16 (select.h qkv_bf16_rows; kBf16Tag says)
  bool qkv_k_pairs = false;   // and K as pair words (select.h qkv_k_pairs; kK2Tag says)
  bool qkv_v_pairs = false;   // and V, in runs of an even token count (kV2Tag says)
  std::string kernel() const override { return name; }
  std::string why() const override {
    std::string w = choice.why;
    if (qkv_panels) w += "; Q, K and V read from head panels";
    if (qkv_bf16) w += "; Q, K and V read as BF16 where the Linear writes them so";
    if (qkv_k_pairs)
      w += choice.products == k::AttentionProducts::Avx512S8Qk
               ? "; K quantized from the Linear's pair words, keys as lanes (no transposes)"
               : "; K multiplied in place from the Linear's pair words";
    if (qkv_v_pairs) w += "; V read in place from the Linear's pair words";
    return w;
  }
};

// The model's Linear layers are INT8 (attention may then run in BF16).
bool graph_is_int8(const Graph& g) {
  for (const Op& op : g.ops)
    if (op.kind == OpKind::Linear && op.precision != Precision::F32) return true;
  return false;
}

class AttentionCpu : public OpImpl {
 public:
  std::unique_ptr<PreparedOp> prepare(const PrepareArgs& a) const override {
    auto st = std::make_unique<AttentionState>();
    st->choice = k::choose_attention(graph_is_int8(a.graph),
                                     a.op.num_heads > 0 ? a.out_width / a.op.num_heads : 0);
    st->name = std::string(a.op.alibi ? "attention_alibi_" : "attention_") +
               (st->choice.products == k::AttentionProducts::F32
                    ? std::string("f32_") + k::f32::kernel_table().name
                    : std::string(k::attention_products_name(st->choice.products)));
    if (a.op.alibi) st->slopes = alibi_slopes(a.op.num_heads);
    // The op that writes the qkv input (the last one before this op).
    if (const int64_t i = op_index(a); i > 0)
      for (int64_t j = i - 1; j >= 0; --j)
        if (a.graph.ops[static_cast<size_t>(j)].out == a.op.in0) {
          st->qkv_panels = k::qkv_head_panel(a.graph, static_cast<size_t>(j)) > 0;
          st->qkv_bf16 = k::qkv_bf16_rows(a.graph, static_cast<size_t>(j), graph_is_int8(a.graph)) > 0;
          st->qkv_k_pairs = k::qkv_k_pairs(a.graph, static_cast<size_t>(j), graph_is_int8(a.graph)) > 0;
          st->qkv_v_pairs =
              st->qkv_k_pairs && k::qkv_v_pairs(a.graph, static_cast<size_t>(j), graph_is_int8(a.graph));
          break;
        }
    return st;
  }
  void run(const Op& op, const PreparedOp& base, const OpIO& io, RunContext& ctx) const override {
    const auto& st = static_cast<const AttentionState&>(base);
    const int64_t hd = io.out_width / op.num_heads;
    const size_t need = k::attention_scratch_floats(ctx.batch.max_len, op.num_heads, hd);
    float* scratch = ctx.ws.get<float>(kAttentionScratch, need);
    // Head panels when its Linear says it wrote them (a dense layer on the
    // sparse kernel writes token rows for short runs).
    const bool panels = st.qkv_panels && !ctx.keep_values && take_tag(ctx, kPanelTag, io.in_rows, io.in_width);
    if (panels && ctx.batch.seq_offsets[ctx.batch.num_seqs] != io.in_rows)
      throw std::logic_error("internal error: attention '" + op.name + "' got Q, K and V in head panels of " +
                             std::to_string(io.in_rows) + " rows for a batch of another size");
    const bool bf16 = st.qkv_bf16 && take_tag(ctx, kBf16Tag, io.in_rows, io.in_width);
    if (bf16 && ctx.keep_values)
      throw std::logic_error("internal error: attention '" + op.name + "' got BF16 Q, K and V in an observed run");
    const bool k_pairs = st.qkv_k_pairs && take_tag(ctx, kK2Tag, io.in_rows, io.in_width);
    if (k_pairs && !(panels && bf16))
      throw std::logic_error("internal error: attention '" + op.name +
                             "' got K in pair words without BF16 head panels");
    const bool v_pairs = st.qkv_v_pairs && take_tag(ctx, kV2Tag, io.in_rows, io.in_width);
    if (v_pairs && !k_pairs)
      throw std::logic_error("internal error: attention '" + op.name + "' got V in pair words without K's");
    k::attention_f32(io.in0, ctx.batch.seq_offsets, ctx.batch.num_seqs, op.num_heads, hd, op.scale,
                     io.out, scratch, st.slopes.empty() ? nullptr : st.slopes.data(),
                     st.choice.products, panels, bf16, k_pairs, v_pairs);
  }
};

class PoolCpu : public OpImpl {
 public:
  std::unique_ptr<PreparedOp> prepare(const PrepareArgs& a) const override {
    return std::make_unique<WeightState>(a.weights, "pool_f32");
  }
  // One row per sequence: little work, done in order (means in double, like
  // the reference).
  void run(const Op& op, const PreparedOp&, const OpIO& io, RunContext& ctx) const override {
    const BatchView& b = ctx.batch;
    const int64_t W = io.in_width;
    for (int64_t s = 0; s < b.num_seqs; ++s) {
      const int64_t first = b.seq_offsets[s], last = b.seq_offsets[s + 1];
      float* o = io.out + s * W;
      if (op.pool == PoolKind::Cls) {
        std::memcpy(o, io.in0 + first * W, static_cast<size_t>(W) * sizeof(float));
        continue;
      }
      for (int64_t j = 0; j < W; ++j) {
        double acc = 0.0;
        for (int64_t t = first; t < last; ++t) acc += io.in0[t * W + j];
        o[j] = static_cast<float>(acc / static_cast<double>(last - first));
      }
    }
  }
};

// --- Linear: the kernel choice happens here, once per model ----------------
struct LinearState : PreparedOp {
  k::LinearChoice choice;
  // Linear chain (select.h chain_linears): this layer's output goes to the
  // next Linear in the blocked layout (chain_out), or this layer's input
  // comes from the previous one that way (chain_in).
  bool chain_out = false, chain_in = false;
  // GELU as the coarse polynomial (select.h output_only_quantized).
  bool gelu_coarse = false;
  // Output in head panels of this width for the Attention reading it
  // (select.h qkv_head_panel; 0: token rows).
  int64_t head_panel = 0;
  // The BF16 Attention reading its output may take it as BF16 (select.h
  // qkv_bf16_rows): bf16_rows when this kernel writes it. Either way every
  // run tells the Attention which it got (kBf16Tag).
  bool bf16_reader = false, bf16_rows = false;
  // And K's panels as pair words for the BF16 attention (select.h
  // qkv_k_pairs; with head_panel and bf16_rows).
  bool k_pairs = false;
  bool v_pairs = false;  // and V's, in runs of an even token count (select.h qkv_v_pairs)
  // The LayerNorm before it quantizes this layer's input
  // (select.h layernorm_quantizes_next).
  bool quant_from_ln = false;
  // The sparse kernel's threads quantize this layer's f32 input
  // (select.h sparse_quantizes_in_kernel).
  bool quant_in_kernel = false;
  // The LayerNorm after it runs on this layer's kernel threads (select.h
  // linear_runs_layernorm): its weights, and whether it quantizes for the
  // Linear after it (with that one's input scale, nullable).
  struct {
    bool on = false;
    const float* gamma = nullptr;
    const float* beta = nullptr;
    float eps = 0.f;
    bool quantize = false;
    const float* next_in_scale = nullptr;
  } ln;
  // This layer's output quantized per token for the next Linear by its
  // kernel threads (quant_next, with that one's input scale), or its input
  // so quantized by the Linear before it (quant_from_prev): select.h
  // linear_quantizes_next.
  bool quant_next = false, quant_from_prev = false;
  const float* quant_next_scale = nullptr;
  // The input scale of this Linear (slot::kInScale, nullable) and, with
  // chain_out, the next Linear's, which this one applies as it writes.
  const float* in_scale = nullptr;
  const float* next_in_scale = nullptr;
  std::unique_ptr<k::DenseLinearF32> f32;
  std::unique_ptr<k::DenseLinearU8S8> s8_dense;
  std::unique_ptr<k::PackedS8Sparse> s8_sparse;
  // A dense layer on the sparse kernel (select.h dense_s8_mode) has both:
  // runs of short sequences (kDenseOnSparseMinTokens) take s8_dense. With
  // chain_out or chain_in, whether the pair has such a layer: in those runs
  // the first then quantizes the second's input on its threads instead
  // (next_in_scale; as for linear_quantizes_next).
  bool dense_for_short = false, chain_has_dense = false;
  std::unique_ptr<k::PackedF32Sparse> f32_sparse;
  std::string kernel_name;
  size_t packed_bytes = 0;
  std::string kernel() const override { return kernel_name; }
  std::string why() const override {
    std::string w = choice.why;
    if (chain_out) w += "; output passed to the next Linear in the kernel's layout";
    if (chain_in) w += "; input from the previous Linear in the kernel's layout";
    if (gelu_coarse) w += "; GELU to 2e-5 (its output is only quantized to 8 bits next)";
    if (dense_for_short)
      w += "; sequences of fewer than " + std::to_string(k::kDenseOnSparseMinTokens) + " tokens on " +
           s8_dense->kernel_name() + " (token rows; a chain passes quantized rows instead)";
    if (head_panel > 0) w += "; output in head panels for attention";
    if (bf16_rows) w += "; output in BF16 for the BF16 attention";
    if (k_pairs) w += "; K as BF16 pair words for the BF16 attention";
    if (v_pairs) w += "; V as BF16 pair words for the BF16 attention";
    if (quant_from_ln) w += "; input quantized by the LayerNorm before it";
    else if (quant_in_kernel && !chain_out) w += "; input quantized by the kernel's threads";
    if (ln.on) w += "; the LayerNorm after it runs on the kernel's threads";
    if (quant_next) w += "; output quantized per token for the next Linear on the kernel's threads";
    if (quant_from_prev) w += "; input quantized by the Linear before it";
    return w;
  }
  size_t bytes() const override { return packed_bytes; }
  size_t run_weight_bytes() const override {
    if (s8_sparse) {
      const k::PackedS8Sparse& p = *s8_sparse;
      // The kernel reads the weights, one offset array and the group starts.
      return p.w.size() + (p.koff8.empty() ? p.koff64.size() * 4 : p.koff8.size() * 2) + p.group_ptr.size() * 4;
    }
    return packed_bytes;
  }
};

void add_rows(float* y, const float* r, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += r[i];
}

class LinearCpu : public OpImpl {
 public:
  std::unique_ptr<PreparedOp> prepare(const PrepareArgs& a) const override {
    // oneDNN's weight reorders run on one thread here: an OpenMP pool created
    // on the preparing thread (often a program's main thread) would outlive
    // the preparation, and while libgomp manages more threads than there are
    // CPUs it hardly spins, which made every later run from another thread up
    // to 3.6x slower (MiniLM INT8). The reorder is once per model.
    k::OneOmpThread one_thread;
    const Op& op = a.op;
    // A gated Linear's product has both halves: 2x the output width.
    const int64_t K = a.in_width, N = linear_weight_cols(op, a.out_width);
    auto st = std::make_unique<LinearState>();
    const float* bias = a.weights.get<float>(slot::kBias);
    const int8_t* w8 = op.precision == Precision::F32 ? nullptr : a.weights.get<int8_t>(slot::kWeight);
    const float* w32 = op.precision == Precision::F32 ? a.weights.get<float>(slot::kWeight) : nullptr;
    st->choice = k::choose_linear(op.precision, op.block_sparsity, w8, K, N, w32);
    if (op.precision != Precision::F32) st->in_scale = a.weights.get<float>(slot::kInScale);
    if (const int64_t i = op_index(a); i > 0)
      st->quant_from_ln = k::layernorm_quantizes_next(a.graph, static_cast<size_t>(i - 1));
    if (const int64_t i = op_index(a); i >= 0)
      st->bf16_reader = k::qkv_bf16_rows(a.graph, static_cast<size_t>(i), graph_is_int8(a.graph)) > 0;
    if (const int64_t i = op_index(a); i >= 0 && op.precision != Precision::F32 && op.act == Activation::GeluErf)
      st->gelu_coarse = k::output_only_quantized(a.graph, static_cast<size_t>(i));
    // The LayerNorm after it, on its threads (INT8 kernels: select.h).
    if (const int64_t i = op_index(a); i >= 0 && a.weights_of && k::linear_runs_layernorm(a.graph, static_cast<size_t>(i))) {
      const auto n = static_cast<size_t>(i + 1);
      const OpWeights lw = a.weights_of(n);
      st->ln.on = true;
      st->ln.gamma = lw.get<float>(slot::kGamma);
      st->ln.beta = lw.get<float>(slot::kBeta);
      st->ln.eps = a.graph.ops[n].eps;
      st->ln.quantize = k::layernorm_quantizes_next(a.graph, n);
      if (st->ln.quantize) st->ln.next_in_scale = a.weights_of(n + 1).get<float>(slot::kInScale);
    }
    // Quantization for the next dense INT8 Linear, on this one's threads
    // (select.h; both ends need the next one's input scale).
    if (const int64_t i = op_index(a); i >= 0 && a.weights_of) {
      if (k::linear_quantizes_next(a.graph, static_cast<size_t>(i))) {
        st->quant_next = true;
        st->quant_next_scale = a.weights_of(static_cast<size_t>(i + 1)).get<float>(slot::kInScale);
      }
      st->quant_from_prev = i > 0 && k::linear_quantizes_next(a.graph, static_cast<size_t>(i - 1));
    }
    switch (st->choice.impl) {
      case k::LinearImpl::DnnlF32:
        // The tanh of a pooler is applied by oneDNN's eltwise post-op too.
        st->f32 = std::make_unique<k::DenseLinearF32>(a.weights.get<float>(slot::kWeight), bias, K, N,
                                                      op.act);
        st->kernel_name = "dnnl_matmul_f32";
        st->packed_bytes = static_cast<size_t>(K * N) * sizeof(float);
        break;
      case k::LinearImpl::SparseF32:
        st->f32_sparse = std::make_unique<k::PackedF32Sparse>(k::pack_f32_sparse(w32, K, N, bias));
        st->kernel_name = k::spmm_f32_kernel_name();
        st->packed_bytes = st->f32_sparse->bytes();
        break;
      case k::LinearImpl::SparseU8S8: {
        st->s8_sparse = std::make_unique<k::PackedS8Sparse>(k::pack_s8_sparse(
            w8, K, N, a.weights.get<float>(slot::kWeightScale), bias));
        const k::PackedS8Sparse& p = *st->s8_sparse;
        st->kernel_name = k::spmm_u8s8_kernel_name();
        if (const int64_t i = op_index(a); i >= 0) {
          st->chain_out = k::chain_linears(a.graph, static_cast<size_t>(i));
          st->chain_in = i > 0 && k::chain_linears(a.graph, static_cast<size_t>(i - 1));
          st->head_panel = k::qkv_head_panel(a.graph, static_cast<size_t>(i));
          st->bf16_rows = st->bf16_reader && !st->chain_in && !st->chain_out && k::spmm_u8s8_bf16_available();
          st->k_pairs = st->head_panel > 0 && st->bf16_rows &&
                        k::qkv_k_pairs(a.graph, static_cast<size_t>(i), graph_is_int8(a.graph)) > 0;
          st->v_pairs =
              st->k_pairs && k::qkv_v_pairs(a.graph, static_cast<size_t>(i), graph_is_int8(a.graph));
          st->quant_in_kernel = k::sparse_quantizes_in_kernel() && op.act_scale <= 0.f;
          if (st->chain_out && a.weights_of)
            st->next_in_scale = a.weights_of(static_cast<size_t>(i + 1)).get<float>(slot::kInScale);
        }
        st->packed_bytes = p.group_ptr.size() * 4 + p.kidx.size() * 4 + p.koff64.size() * 4 + p.koff8.size() * 2 +
                           p.w.size() + p.w16.size() * 2 + p.wsum.size() * 4 + p.scale_w.size() * 4;
        if (op.precision == Precision::S8Dense) {
          st->s8_dense = std::make_unique<k::DenseLinearU8S8>(w8, K, N, a.weights.get<float>(slot::kWeightScale), bias);
          st->dense_for_short = true;
          st->packed_bytes += static_cast<size_t>(K * N);
        }
        if (const int64_t i = op_index(a); i >= 0 && (st->chain_out || st->chain_in)) {
          const Op& partner = a.graph.ops[static_cast<size_t>(st->chain_out ? i + 1 : i - 1)];
          st->chain_has_dense = op.precision == Precision::S8Dense || partner.precision == Precision::S8Dense;
        }
        break;
      }
      case k::LinearImpl::DnnlU8S8:
        st->s8_dense = std::make_unique<k::DenseLinearU8S8>(
            w8, K, N, a.weights.get<float>(slot::kWeightScale), bias);
        st->kernel_name = st->s8_dense->kernel_name();
        st->packed_bytes = static_cast<size_t>(K * N);
        st->bf16_rows = st->bf16_reader && st->s8_dense->writes_bf16();
        break;
    }
    return st;
  }

  void run(const Op& op, const PreparedOp& base, const OpIO& io, RunContext& ctx) const override {
    const LinearState& st = static_cast<const LinearState&>(base);
    const int64_t T = io.in_rows, K = io.in_width;
    if (op.gate != Gate::None) {
      // The product of both halves into scratch, then the gate (+ residual)
      // in one pass over it.
      const int64_t N2 = linear_weight_cols(op, io.out_width);
      float* y = ctx.ws.get<float>(kGateIn, static_cast<size_t>(T * N2));
      product(op, st, io.in0, T, K, N2, nullptr, y, nullptr, ctx);
      k::geglu_f32(y, T, io.out_width, io.in1, io.out);
      return;
    }
    product(op, st, io.in0, T, K, io.out_width, io.in1, io.out, io.next_out, ctx);
  }

 private:
  // y [T, N] = act(x W + b) + residual on the prepared kernel; with st.ln.on
  // (and values not observed), also ln_out = the LayerNorm after it of y.
  static void product(const Op& op, const LinearState& st, const float* x, int64_t T, int64_t K,
                      int64_t N, const float* residual, float* y, float* ln_out, RunContext& ctx) {
    const OpIO io{x, residual, T, y, T, K, N};
    if (st.f32) {
      // (An activation followed by a residual is split inside DenseLinearF32.)
      st.f32->run(io.in0, T, io.in1, io.out);
      return;
    }
    if (st.f32_sparse) {
      k::F32SparseEpilogue ep;
      ep.act = op.act;
      ep.residual = io.in1;
      k::spmm_f32(*st.f32_sparse, io.in0, T, K, ep, io.out, N);
      return;
    }
    float* xs = ctx.ws.get<float>(kQuantScale, static_cast<size_t>(T));
    int32_t* xz = ctx.ws.get<int32_t>(kQuantZp, static_cast<size_t>(T));
    // The Linear chain (select.h), unless this run must write every value, or
    // the run has at most 16 tokens: its blocked layout is 64 tokens wide, so
    // one token vector would write and convert 4x the values (measured on
    // BERT-base 90% INT8: 12% slower at 16 tokens chained, equal at 24, 4-13%
    // faster from 32). Both Linears of a pair see the same T.
    // A dense layer on the sparse kernel runs short inputs on its dense one
    // (select.h kDenseOnSparseMinTokens): sparse is then null. (Every Linear
    // of a run sees the same batch: both ends of a chain agree.)
    const bool short_run = T < k::kDenseOnSparseMinTokens || ctx.batch.max_len < k::kDenseOnSparseMinTokens;
    const k::PackedS8Sparse* sparse = st.dense_for_short && short_run ? nullptr : st.s8_sparse.get();
    // A chain with such a layer links by quantized token rows instead then
    // (as linear_quantizes_next does for dense pairs).
    const bool pair_short = st.chain_has_dense && short_run;
    const bool chain_ok = !ctx.keep_values && T > kChainMinTokens && !pair_short;
    const bool quant_from_prev = st.quant_from_prev || (st.chain_in && pair_short);
    const bool quant_next_wanted = st.quant_next || (st.chain_out && pair_short);
    const bool chain_in = st.chain_in && chain_ok;
    const bool chain_out = st.chain_out && chain_ok;
    const size_t blocked = static_cast<size_t>((T + 63) / 64 * 64);
    // The sparse kernel's threads quantize f32 input themselves (select.h
    // sparse_quantizes_in_kernel): token rows with a per-token dynamic
    // scale, or the chain's blocked output; not for a chain's first Linear
    // (spmm_u8s8_to_blocked takes u8).
    const bool in_kernel = sparse && st.quant_in_kernel && !chain_out;
    bool f32_rows = false, f32_blocked = false;
    uint8_t* xq = nullptr;
    if (chain_in) {
      int64_t* tag = ctx.ws.get<int64_t>(kChainTag, 2);
      if (tag[0] != T || tag[1] != K)
        throw std::logic_error("internal error: Linear '" + op.name +
                    "' expected its input from the previous Linear in the blocked layout, "
                    "which did not write it");
      tag[0] = tag[1] = -1;
      if (in_kernel) {
        f32_blocked = true;
      } else {
        xq = ctx.ws.get<uint8_t>(kChainU8, blocked * static_cast<size_t>(K));
        const auto nr = static_cast<size_t>(k::spmm_u8s8_blocked_ranges(K, T));
        // (The previous Linear applied this one's input scale as it wrote.)
        k::quantize_blocked_u8(ctx.ws.get<float>(kChainF32, blocked * static_cast<size_t>(K)), T, K,
                               ctx.ws.get<k::BlockedRange>(kChainRange, nr), xq, xs, xz);
      }
    } else if ((quant_from_prev || st.quant_from_ln) && !ctx.keep_values) {
      // Quantized by the op before it: the Linear (linear_quantizes_next) or
      // the LayerNorm (layernorm_quantizes_next), whose tag says for what.
      const bool lin = quant_from_prev;
      int64_t* tag = ctx.ws.get<int64_t>(lin ? kLinQuantTag : kLnQuantTag, 2);
      if (tag[0] != T || tag[1] != K)
        throw std::logic_error("internal error: Linear '" + op.name + "' expected its input quantized by the " +
                               (lin ? "Linear" : "LayerNorm") + " before it, which did not");
      tag[0] = tag[1] = -1;
      xq = ctx.ws.get<uint8_t>(lin ? kLinQX : kLnQX, static_cast<size_t>(T * K));
      xs = ctx.ws.get<float>(lin ? kLinQScale : kLnQScale, static_cast<size_t>(T));
      xz = ctx.ws.get<int32_t>(lin ? kLinQZp : kLnQZp, static_cast<size_t>(T));
    } else if (in_kernel) {
      f32_rows = true;
    } else {
      xq = ctx.ws.get<uint8_t>(kQuantX, static_cast<size_t>(T * K));
      if (op.act_scale > 0.f)
        k::quantize_rows_u8_static(io.in0, T, K, op.act_scale, op.act_zp, xq, xs, xz, st.in_scale);
      else
        k::quantize_rows_u8(io.in0, T, K, xq, xs, xz, -1, -1, st.in_scale);
    }
    if (chain_out) {
      // act is GELU (erf) or none, no residual, no gate (chain_linears).
      // (Never also chain_in: chain_linears links one pair at a time.)
      float* yb = ctx.ws.get<float>(kChainF32, blocked * static_cast<size_t>(N));
      const auto nr = static_cast<size_t>(k::spmm_u8s8_blocked_ranges(N, T));
      k::spmm_u8s8_to_blocked(*sparse, xq, T, K, xs, xz, op.act == Activation::GeluErf, yb,
                              ctx.ws.get<k::BlockedRange>(kChainRange, nr), st.next_in_scale,
                              st.gelu_coarse);
      int64_t* tag = ctx.ws.get<int64_t>(kChainTag, 2);
      tag[0] = T;
      tag[1] = N;
      return;
    }
    // The fused epilogue has exact GELU and the residual; other activations
    // are applied afterwards, then the residual.
    k::QEpilogue ep;
    const bool after = op.act == Activation::GeluTanh || op.act == Activation::Tanh;
    ep.gelu = op.act == Activation::GeluErf;
    ep.gelu_coarse = st.gelu_coarse;  // (observed runs too: they see the values the model uses)
    ep.residual = after ? nullptr : io.in1;
    // (select.h qkv_head_panel rules out a chain input, an activation and a
    // residual: the Attention reading this asks the same two questions.)
    const bool panels = st.head_panel > 0 && !ctx.keep_values && sparse;
    if (st.head_panel > 0) set_tag(ctx, kPanelTag, panels, T, N);
    // BF16 for the Attention, token rows or panels (select.h qkv_bf16_rows
    // rules out a residual and an activation); it reads the tag either way.
    const bool bf16 = !ctx.keep_values && (st.dense_for_short && !sparse
                                               ? st.bf16_reader && st.s8_dense->writes_bf16()
                                               : st.bf16_rows);
    ep.out_bf16 = bf16;
    if (st.bf16_reader) set_tag(ctx, kBf16Tag, bf16, T, N);
    // K's and V's panels as pair words (select.h qkv_k_pairs), each said by
    // its own tag.
    ep.k_pairs = st.k_pairs && bf16 && panels;
    if (st.k_pairs) set_tag(ctx, kK2Tag, ep.k_pairs, T, N);
    ep.v_pairs = st.v_pairs && ep.k_pairs && T % 2 == 0;
    if (st.v_pairs) set_tag(ctx, kV2Tag, ep.v_pairs, T, N);
    // The LayerNorm after it, on the token blocks the kernel's threads
    // finish (select.h linear_runs_layernorm rules out what would not reach
    // one of the INT8 calls below: a gate, panels, a chain output, a later
    // activation). Its output slots are not this call's input slots.
    const bool ln = st.ln.on && !ctx.keep_values && !after && (st.s8_sparse || st.s8_dense) && !panels;
    if (st.ln.on && !ctx.keep_values && (!ln || !ln_out))
      throw std::logic_error("internal error: Linear '" + op.name + "' cannot run the LayerNorm after it");
    // Its rows go straight into the LayerNorm's output, which normalizes
    // them in place: lines this core just wrote, where a separate output
    // meant as many more lines to take over, often from the other core (the
    // Linear's own output is then never written: only the LayerNorm reads
    // it). Not when that buffer is this call's f32 input (the planner may
    // give it to the LayerNorm: the Linear is the input's last reader):
    // rows of N floats written there would land on input rows of K floats
    // of other blocks, which another thread may not have read yet. Then the
    // Linear writes its own output and the LayerNorm runs after the kernel.
    const bool on_input = ln && f32_rows && ln_out < io.in0 + T * K && io.in0 < ln_out + T * N;
    float* out = ln && !on_input ? ln_out : io.out;
    LayerNormRows ln_rows{out, N, st.ln.gamma, st.ln.beta, st.ln.eps, ln_out, st.ln.next_in_scale,
                          nullptr, nullptr, nullptr};
    if (ln && st.ln.quantize) {
      ln_rows.xq = ctx.ws.get<uint8_t>(kLnQX, static_cast<size_t>(T * N));
      ln_rows.scale = ctx.ws.get<float>(kLnQScale, static_cast<size_t>(T));
      ln_rows.zp = ctx.ws.get<int32_t>(kLnQZp, static_cast<size_t>(T));
    }
    // (Split blocks are normalized in tasks of layernorm_f32's size.)
    const k::RowsDone rows_done{&LayerNormRows::run, &ln_rows, k::rows_per_task(N)};
    const k::RowsDone* done = ln && !on_input ? &rows_done : nullptr;
    // Or its rows quantized for the next Linear (select.h
    // linear_quantizes_next: no LayerNorm, panels or chain here then).
    const bool quant_next = quant_next_wanted && !ctx.keep_values && !after;
    if (quant_next_wanted && !ctx.keep_values && (!quant_next || ln || panels))
      throw std::logic_error("internal error: Linear '" + op.name + "' cannot quantize the next Linear's input");
    const float* next_scale = st.quant_next ? st.quant_next_scale : st.next_in_scale;
    QuantizeRows q_rows{out, N, next_scale, nullptr, nullptr, nullptr};
    const k::RowsDone quant_done{&QuantizeRows::run, &q_rows, k::rows_per_task(N)};
    // (The dense kernel takes them as QuantOut: where its threads hold whole
    // rows it quantizes them without writing this layer's f32 output.)
    k::DenseLinearU8S8::QuantOut q_out;
    if (quant_next) {
      q_rows.xq = ctx.ws.get<uint8_t>(kLinQX, static_cast<size_t>(T * N));
      q_rows.scale = ctx.ws.get<float>(kLinQScale, static_cast<size_t>(T));
      q_rows.zp = ctx.ws.get<int32_t>(kLinQZp, static_cast<size_t>(T));
      q_out = {next_scale, q_rows.xq, q_rows.scale, q_rows.zp};
      if (sparse) done = &quant_done;
    }
    if (f32_rows)
      k::spmm_u8s8_f32in(*sparse, io.in0, T, K, st.in_scale, ep, out, N, panels ? st.head_panel : 0, done);
    else if (f32_blocked)
      k::spmm_u8s8_from_blocked_f32(
          *sparse, ctx.ws.get<float>(kChainF32, blocked * static_cast<size_t>(K)),
          ctx.ws.get<k::BlockedRange>(kChainRange, static_cast<size_t>(k::spmm_u8s8_blocked_ranges(K, T))), T,
          ep, out, N, done);
    else if (panels)
      k::spmm_u8s8_panels(*sparse, xq, T, K, xs, xz, ep, out, st.head_panel);
    else if (chain_in)
      k::spmm_u8s8_from_blocked(*sparse, xq, T, xs, xz, ep, out, N, done);
    else if (sparse)
      k::spmm_u8s8(*sparse, xq, T, K, xs, xz, ep, out, N, done);
    else  // (with ep.out_bf16: T x N 16-bit values in the f32 output's buffer)
      st.s8_dense->run(xq, T, K, xs, xz, ep, out, N, done, quant_next ? &q_out : nullptr);
    if (on_input) k::qgemm_detail::rows_done_all(rows_done, 0, T);
    if (quant_next) {
      int64_t* tag = ctx.ws.get<int64_t>(kLinQuantTag, 2);
      tag[0] = T;
      tag[1] = N;
    }
    if (ln) {
      int64_t* tag = ctx.ws.get<int64_t>(kLnFusedTag, 2);
      tag[0] = T;
      tag[1] = N;
      if (st.ln.quantize) {
        tag = ctx.ws.get<int64_t>(kLnQuantTag, 2);
        tag[0] = T;
        tag[1] = N;
      }
    }
    if (after) {
      if (op.act == Activation::GeluTanh)
        k::gelu_tanh_f32(io.out, T * N);
      else
        for (int64_t i = 0; i < T * N; ++i) io.out[i] = std::tanh(io.out[i]);
      if (io.in1) add_rows(io.out, io.in1, T * N);
    }
  }
};

// SPINEL_RUN_ON=executor: every job of a session on its own thread (the
// behaviour before jobs could run on the caller's); auto or unset: see
// CpuExecutor. Other values warn once and mean auto.
bool run_on_caller_wanted() {
  const char* v = std::getenv("SPINEL_RUN_ON");
  if (!v || !*v || !std::strcmp(v, "auto")) return true;
  if (!std::strcmp(v, "executor")) return false;
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true))
    std::fprintf(stderr, "spinel: warning: SPINEL_RUN_ON=%s is not one of auto, executor; using auto\n", v);
  return true;
}

// A TBB arena of the session's size, and a thread of its own that runs all of
// the session's work (started on the first run), with the same OpenMP thread
// count for oneDNN.
//
// Why a thread of its own: oneDNN's OpenMP pool belongs to the thread that
// runs it, and libgomp spins much less while it manages more threads than
// there are CPUs. A session run first from one thread and then from another
// (a server's request threads, LoadGen's issue thread, the Python binding
// called from a thread pool) left two pools alive and made every later run
// up to 3.6x slower (MiniLM INT8 under LoadGen: 10.9 ms a run instead of
// 3.1). With one executor thread per session the pool is always the same
// one, whatever thread calls run(). The hand-off costs a wake-up per run.
//
// Runs on the caller's thread when that is safe: once a job on the session's
// thread has run without oneDNN's OpenMP threads (INT8 and sparse models:
// their dense layers run on TBB), later jobs from the session's owner thread
// (the first thread to call after that) run right there, in the same arena;
// jobs from other threads still go to the session's thread, so the
// thread-local buffers of a session's jobs live on at most one thread more
// than before (its own and TBB's workers). The hand-off cost a
// wake-up of the session's thread and one of the caller per run, and more
// after idle time: MiniLM INT8 at 32 tokens, one query at a time from Python
// (bench/idle_gap.py), p50 0.61 -> 0.57 ms back to back and 1.51 -> 1.13 ms
// after 5 ms gaps. A job on the caller's thread that did use OpenMP sends
// every later job back to the session's thread (one extra pool at most).
// SPINEL_RUN_ON=executor keeps every job on the session's thread.
class CpuExecutor : public Executor {
 public:
  explicit CpuExecutor(int threads)
      : threads_(threads), inline_wanted_(run_on_caller_wanted()), arena_(threads) {}
  ~CpuExecutor() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (worker_.joinable()) worker_.join();
  }
  void execute(const std::function<void()>& fn) override {
    if (running_on_ == this) {
      arena_.execute(fn);  // already on the executor thread (a nested call)
      return;
    }
    std::lock_guard<std::mutex> one_at_a_time(run_mu_);
    if (inline_ok_ && (owner_ == std::thread::id() || owner_ == std::this_thread::get_id())) {
      owner_ = std::this_thread::get_id();
      run_here(fn);
      return;
    }
    std::unique_lock<std::mutex> lock(mu_);
    if (!worker_.joinable()) worker_ = std::thread([this] { loop(); });
    job_ = &fn;
    error_ = nullptr;
    cv_.notify_all();
    cv_.wait(lock, [this] { return job_ == nullptr; });
    // (used_omp_ is read under mu_, written by the session's thread under it.)
    if (used_omp_) inline_never_ = true;
    inline_ok_ = inline_wanted_ && !inline_never_;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  // A job on the calling thread (under run_mu_), with the session's OpenMP
  // thread count for its length.
  void run_here(const std::function<void()>& fn) {
    struct Restore {
      const CpuExecutor* prev = running_on_;
      int omp = omp_get_max_threads();
      ~Restore() {
        running_on_ = prev;
        omp_set_num_threads(omp);
      }
    } restore;
    running_on_ = this;
    omp_set_num_threads(threads_);
    const uint64_t omp0 = k::openmp_notes();
    struct Check {
      CpuExecutor* self;
      uint64_t omp0;
      ~Check() {
        if (k::openmp_notes() != omp0) self->inline_ok_ = false, self->inline_never_ = true;
      }
    } check{this, omp0};
    arena_.execute(fn);
  }

  void loop() {
    running_on_ = this;
    omp_set_num_threads(threads_);
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return stop_ || job_ != nullptr; });
      if (job_ == nullptr) return;  // stop_, nothing pending
      const std::function<void()>* fn = job_;
      lock.unlock();
      std::exception_ptr err;
      const uint64_t omp0 = k::openmp_notes();
      try {
        arena_.execute(*fn);
      } catch (...) {
        err = std::current_exception();
      }
      lock.lock();
      if (k::openmp_notes() != omp0) used_omp_ = true;
      error_ = err;
      job_ = nullptr;
      cv_.notify_all();
    }
  }

  int threads_;
  const bool inline_wanted_;
  // Under run_mu_: jobs may run on owner_'s thread (see the class comment).
  bool inline_ok_ = false;
  bool inline_never_ = false;  // a job used OpenMP: never again on the caller's thread
  std::thread::id owner_;
  bool used_omp_ = false;  // under mu_: a job on the session's thread used OpenMP
  tbb::task_arena arena_;
  std::mutex run_mu_;  // one execute() at a time
  std::mutex mu_;      // guards job_, error_, stop_
  std::condition_variable cv_;
  const std::function<void()>* job_ = nullptr;
  std::exception_ptr error_;
  bool stop_ = false;
  std::thread worker_;
  static thread_local const CpuExecutor* running_on_;  // the executor whose thread this is
};

thread_local const CpuExecutor* CpuExecutor::running_on_ = nullptr;

std::string cpu_model_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      const size_t c = line.find(':');
      if (c != std::string::npos) return line.substr(c + 2);
    }
  return "unknown CPU";
}

class CpuBackend : public Backend {
 public:
  const char* name() const override { return "cpu"; }
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
  std::string variant() const override { return k::isa_name(k::active_isa()); }
  std::unique_ptr<Executor> make_executor(int threads) const override {
    return std::make_unique<CpuExecutor>(threads);
  }
  std::string describe() const override {
    std::string s = std::string("cpu: ") + k::isa_name(k::active_isa());
    if (k::active_isa() != k::detected_isa())
      s += std::string(" (capped; the CPU runs ") + k::isa_name(k::detected_isa()) + ")";
    if (k::cpu_has_amx_int8()) s += ", amx-int8";
    return s + ", " + cpu_model_name();
  }

 private:
  EmbeddingCpu embedding_;
  LinearCpu linear_;
  AttentionCpu attention_;
  LayerNormCpu layernorm_;
  PoolCpu pool_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace spinel
