// Every op kind on every registered backend against the "reference" backend,
// without a model file (the idea of ggml's tests/test-backend-ops.cpp): each
// case builds one Op, its weights, TensorInfos and a packed batch in memory,
// prepares it through the backend's OpImpl and runs it inside the backend's
// Executor, at 1 and 2 threads, and on the cpu backend once per ISA level
// this CPU runs (set_max_isa; the level is the backend's variant(), so each
// level gets its own prepare()).
//
// Outputs are pre-filled with NaN (an element a backend forgets to write
// fails the comparison) and followed by guard floats (a write past the end
// fails the case). Inputs are sized exactly, so the ASan build catches reads
// past them. Under SPINEL_SANITIZED only the small shapes and one BERT-sized
// layer per op run; under TSan every executor has one thread (TBB's and
// OpenMP's hand-offs are invisible to it, see test_threads.cpp).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iomanip>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/isa.h"

using namespace spinel;
namespace sk = spinel::kernels;

#if defined(__SANITIZE_THREAD__)
#define SPINEL_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SPINEL_TEST_TSAN 1
#endif
#endif

namespace {

#ifdef SPINEL_SANITIZED
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

// ---------------------------------------------------------------------------
// Tolerances, per op and dtype. An element passes when
//   |got - want| <= abs + rel * row_scale,  row_scale = max_j |want[row][j]|,
// i.e. errors are measured against the size of the output row, which is what
// accumulated float rounding scales with (a near-zero element of a row gets
// the same absolute slack as the row's largest one).
//
// The cuda backend (when a device is present) is held to the same rows: its
// embedding/LayerNorm statistics are double (as the reference), attention
// uses float dot products, expf and float sums (as cpu), the FP32 Linear is
// cuBLASLt (or cuBLAS SGEMM) with FP32 math (no TF32; float accumulation as
// oneDNN) and a double epilogue, and its INT8 paths (cuBLASLt s8 x s8 with the
// u8 shift folded back, the dense loop, the 4x1 sparse kernel) implement the
// contract of kernels/int8.h exactly (int32 accumulation, __fmul_rn/fmaf
// dequantization, GELU/tanh in double as the reference), so "linear_s8" stays
// bit-exact. S8Dense shapes with K or N not a multiple of 4 take the loop.
struct Tolerance {
  const char* key;
  double rel, abs;
  const char* why;
};
constexpr Tolerance kTolerances[] = {
    {"embedding", 1e-5, 1e-6,
     "the sum of the tables is float in the reference's order; the LayerNorm statistics are "
     "float (vector lanes) on cpu, double in the reference"},
    {"layernorm", 1e-5, 1e-6, "float statistics in vector lanes vs double"},
    {"attention", 1e-5, 1e-6,
     "float dot products, a vectorized exp and float softmax sums vs double throughout"},
    {"pool_cls", 0, 0, "a copy of the first row"},
    {"pool_mean", 0, 0, "both sum in double in token order and round once"},
    {"linear_f32", 1e-5, 1e-6,
     "oneDNN's float accumulation (K up to 768, blocked order, FMA) vs a double-accumulating "
     "reference; eltwise GELU/tanh post-ops within a few ulps"},
    {"linear_f32_sparse", 1e-5, 1e-6,
     "the block-sparse f32 kernel (FMA, float accumulation over the nonzero blocks in input "
     "order) vs a double-accumulating reference; the row kernels' vectorized GELU; as linear_f32"},
    {"linear_s8", 0, 0,
     "the INT8 contract (kernels/int8.h) fixes quantization, the exact int32 accumulation and "
     "one fma for the dequantization, then the residual: bit-identical on every path"},
    {"linear_s8_gelu_erf", 1e-6, 1e-7,
     "as linear_s8, then the cpu's vectorized GELU: <= 2.4e-7 max(1, |y|) (int8.h)"},
    {"linear_s8_gelu_tanh", 2e-6, 1e-7,
     "as linear_s8, then the cpu's vectorized tanh-GELU vs double tanh in the reference"},
    {"linear_s8_tanh", 1e-6, 1e-7,
     "as linear_s8, then float std::tanh vs double tanh rounded once: <= 1 ulp"},
    {"linear_f32_geglu", 1e-5, 1e-6,
     "as linear_f32 for both halves, then the vectorized erf GELU of one times the other "
     "(errors of both products multiply through)"},
    {"linear_s8_geglu", 2e-6, 1e-7,
     "as linear_s8 for both halves (bit-identical), then the cpu's vectorized erf GELU times "
     "the gate half in float vs double"},
};

const Tolerance& tolerance(const std::string& key) {
  for (const Tolerance& t : kTolerances)
    if (key == t.key) return t;
  FAIL("no tolerance for '" << key << "'");
  return kTolerances[0];
}

// Per tolerance key, the largest share of the tolerance an element used
// (|err| / allowed; for exact keys the largest |err|, which must be 0), printed
// at the end of each test case: how much slack each tolerance really has.
std::map<std::string, double>& worst_seen() {
  static std::map<std::string, double> m;
  return m;
}

void print_worst_seen() {
  std::ostringstream s;
  s << "share of the tolerance used (exact ones: largest |err|):";
  for (const auto& [k, v] : worst_seen()) s << "  " << k << " " << v;
  MESSAGE(s.str());
  worst_seen().clear();
}

// ---------------------------------------------------------------------------
// A case: one op with everything prepare() and run() read.
struct OpCase {
  std::string desc;  // op and shape, for messages
  std::string tol;   // key into kTolerances
  Op op;
  Graph graph;
  ModelConfig config;
  std::vector<TensorInfo> tensors;  // op.w[slot] indexes these
  std::vector<std::vector<float>> f32_store;
  std::vector<std::vector<int8_t>> s8_store;
  OpWeights weights;
  // batch
  std::vector<int32_t> ids, type_ids, positions;
  std::vector<int64_t> offsets;
  BatchView batch;
  // buffers
  std::vector<float> in0, in1;
  int64_t in_rows = 0, out_rows = 0, in_width = 0, out_width = 0;

  OpCase() = default;
  OpCase(const OpCase&) = delete;  // weights point into the stores
  OpCase& operator=(const OpCase&) = delete;

  void set_f32(int s, std::string name, std::vector<int64_t> shape, std::vector<float> v) {
    f32_store.push_back(std::move(v));
    set_info(s, std::move(name), DType::F32, std::move(shape), f32_store.back().data(),
             f32_store.back().size() * sizeof(float));
  }
  void set_s8(int s, std::string name, std::vector<int64_t> shape, std::vector<int8_t> v) {
    s8_store.push_back(std::move(v));
    set_info(s, std::move(name), DType::I8, std::move(shape), s8_store.back().data(),
             s8_store.back().size());
  }

  // The batch: sequences of the given lengths packed back to back.
  void set_batch(const std::vector<int64_t>& lens, std::mt19937& rng, int32_t vocab,
                 int32_t type_vocab) {
    offsets.assign(1, 0);
    for (int64_t l : lens) offsets.push_back(offsets.back() + l);
    const int64_t T = offsets.back();
    std::uniform_int_distribution<int32_t> id(0, std::max(vocab - 1, 0));
    std::uniform_int_distribution<int32_t> ty(0, std::max(type_vocab - 1, 0));
    ids.resize(static_cast<size_t>(T));
    type_ids.resize(static_cast<size_t>(T));
    positions.clear();
    for (auto& v : ids) v = id(rng);
    for (auto& v : type_ids) v = ty(rng);
    for (int64_t l : lens)
      for (int64_t t = 0; t < l; ++t) positions.push_back(static_cast<int32_t>(t));
    batch.ids = ids.data();
    batch.type_ids = type_ids.data();
    batch.positions = positions.data();
    batch.tokens = T;
    batch.seq_offsets = offsets.data();
    batch.num_seqs = static_cast<int64_t>(lens.size());
    batch.max_len = lens.empty() ? 0 : *std::max_element(lens.begin(), lens.end());
  }

  // Values in0 (0), in1 (1) and out (2) of a one-op graph.
  void finish(Rows in_kind, Rows out_kind) {
    graph.values = {{"in0", in_width, in_kind}, {"in1", out_width, in_kind},
                    {"out", out_width, out_kind}};
    op.out = 2;
    graph.output = 2;
    graph.ops = {op};
    REQUIRE(static_cast<int64_t>(in0.size()) == in_rows * in_width);
    if (op.in1 >= 0) REQUIRE(static_cast<int64_t>(in1.size()) == in_rows * out_width);
  }

 private:
  void set_info(int s, std::string name, DType dt, std::vector<int64_t> shape, const void* data,
                size_t nbytes) {
    TensorInfo ti;
    ti.name = std::move(name);
    ti.dtype = dt;
    ti.shape = std::move(shape);
    ti.nbytes = nbytes;
    tensors.push_back(ti);
    op.w[static_cast<size_t>(s)] = static_cast<int32_t>(tensors.size() - 1);
    weights.data[static_cast<size_t>(s)] = data;
  }

 public:
  // TensorInfo pointers are taken once all tensors exist (the vector moves).
  void bind_infos() {
    for (int s = 0; s < slot::kCount; ++s)
      if (op.w[static_cast<size_t>(s)] >= 0)
        weights.info[static_cast<size_t>(s)] = &tensors[static_cast<size_t>(op.w[static_cast<size_t>(s)])];
    graph.ops = {op};
  }
};

std::vector<float> uniform(size_t n, float lo, float hi, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

std::string seq_lens_str(const std::vector<int64_t>& lens) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < lens.size(); ++i) s << (i ? "," : "") << lens[i];
  s << "]";
  return s.str();
}

// ---------------------------------------------------------------------------
// Case builders.

std::unique_ptr<OpCase> embedding_case(int64_t H, bool with_pos, bool with_type, bool null_arrays,
                                       const std::vector<int64_t>& lens, uint32_t seed) {
  std::mt19937 rng(seed);
  auto c = std::make_unique<OpCase>();
  const int32_t V = 50, P = 130, TV = 3;  // P: the longest sequence below is 128
  c->op.kind = OpKind::Embedding;
  c->op.eps = 1e-12f;
  c->config.vocab_size = V;
  c->config.hidden_size = H;
  c->config.max_position = P;
  c->config.type_vocab_size = with_type ? TV : 0;
  c->set_f32(slot::kWord, "word", {V, H}, uniform(static_cast<size_t>(V * H), -1, 1, rng));
  if (with_pos) c->set_f32(slot::kPosition, "pos", {P, H}, uniform(static_cast<size_t>(P * H), -0.5f, 0.5f, rng));
  if (with_type) c->set_f32(slot::kTokenType, "type", {TV, H}, uniform(static_cast<size_t>(TV * H), -0.5f, 0.5f, rng));
  c->set_f32(slot::kEmbGamma, "gamma", {H}, uniform(static_cast<size_t>(H), 0.5f, 1.5f, rng));
  c->set_f32(slot::kEmbBeta, "beta", {H}, uniform(static_cast<size_t>(H), -0.2f, 0.2f, rng));
  c->bind_infos();
  c->set_batch(lens, rng, V, with_type ? TV : 1);
  REQUIRE(c->batch.max_len <= P);
  if (null_arrays) {  // the kernels' fallbacks: position = index in the batch, type 0
    REQUIRE(c->batch.tokens <= P);
    c->batch.positions = nullptr;
    c->batch.type_ids = nullptr;
  }
  c->in_rows = 0;
  c->out_rows = c->batch.tokens;
  c->out_width = H;
  c->finish(Rows::Tokens, Rows::Tokens);
  std::ostringstream d;
  d << "Embedding H=" << H << " pos=" << with_pos << " type=" << with_type
    << (null_arrays ? " (null positions/type_ids)" : "") << " seqs=" << seq_lens_str(lens);
  c->desc = d.str();
  c->tol = "embedding";
  return c;
}

std::unique_ptr<OpCase> layernorm_case(int64_t rows, int64_t H, bool residual, float eps,
                                       uint32_t seed) {
  std::mt19937 rng(seed);
  auto c = std::make_unique<OpCase>();
  c->op.kind = OpKind::LayerNorm;
  c->op.eps = eps;
  c->op.in0 = 0;
  c->op.in1 = residual ? 1 : -1;
  c->set_f32(slot::kGamma, "gamma", {H}, uniform(static_cast<size_t>(H), 0.5f, 1.5f, rng));
  c->set_f32(slot::kBeta, "beta", {H}, uniform(static_cast<size_t>(H), -0.2f, 0.2f, rng));
  c->bind_infos();
  c->set_batch({rows}, rng, 1, 1);
  c->in_rows = c->out_rows = rows;
  c->in_width = c->out_width = H;
  // An offset mean (BERT hidden states are not centred) and a constant row.
  c->in0 = uniform(static_cast<size_t>(rows * H), -2, 3, rng);
  if (rows >= 3)
    std::fill(c->in0.begin() + H, c->in0.begin() + 2 * H, 0.75f);
  if (residual) c->in1 = uniform(static_cast<size_t>(rows * H), -1, 1, rng);
  c->finish(Rows::Tokens, Rows::Tokens);
  std::ostringstream d;
  d << "LayerNorm rows=" << rows << " H=" << H << " residual=" << residual << " eps=" << eps;
  c->desc = d.str();
  c->tol = "layernorm";
  return c;
}

std::unique_ptr<OpCase> attention_case(int heads, int64_t hd, const std::vector<int64_t>& lens,
                                       float scale, uint32_t seed, bool alibi = false) {
  std::mt19937 rng(seed);
  auto c = std::make_unique<OpCase>();
  c->op.kind = OpKind::Attention;
  c->op.alibi = alibi;
  c->op.num_heads = heads;
  c->op.scale = scale;
  c->op.in0 = 0;
  c->bind_infos();
  c->set_batch(lens, rng, 1, 1);
  const int64_t H = heads * hd;
  c->in_rows = c->out_rows = c->batch.tokens;
  c->in_width = 3 * H;
  c->out_width = H;
  c->in0 = uniform(static_cast<size_t>(c->in_rows * 3 * H), -1.5f, 1.5f, rng);
  c->finish(Rows::Tokens, Rows::Tokens);
  std::ostringstream d;
  d << "Attention heads=" << heads << " head_dim=" << hd << " scale=" << scale
    << (alibi ? " alibi" : "") << " seqs=" << seq_lens_str(lens);
  c->desc = d.str();
  c->tol = "attention";
  return c;
}

std::unique_ptr<OpCase> pool_case(PoolKind kind, int64_t W, const std::vector<int64_t>& lens,
                                  uint32_t seed) {
  std::mt19937 rng(seed);
  auto c = std::make_unique<OpCase>();
  c->op.kind = OpKind::Pool;
  c->op.pool = kind;
  c->op.in0 = 0;
  c->bind_infos();
  c->set_batch(lens, rng, 1, 1);
  c->in_rows = c->batch.tokens;
  c->out_rows = c->batch.num_seqs;
  c->in_width = c->out_width = W;
  c->in0 = uniform(static_cast<size_t>(c->in_rows * W), -3, 3, rng);
  c->finish(Rows::Tokens, Rows::Sequences);
  std::ostringstream d;
  d << "Pool " << pool_kind_name(kind) << " W=" << W << " seqs=" << seq_lens_str(lens);
  c->desc = d.str();
  c->tol = kind == PoolKind::Cls ? "pool_cls" : "pool_mean";
  return c;
}

// s8 W [K, N] whose 4x1 blocks (4 consecutive output channels x 1 input
// channel) are all zero with probability `sparsity` (every block at 1.0, none
// at 0.0); a trailing N % 4 group of channels counts as a short block. Inside a
// nonzero block single elements may be 0 and some are +-127.
std::vector<int8_t> block_sparse_s8(int64_t K, int64_t N, double sparsity, std::mt19937& rng) {
  std::uniform_real_distribution<double> u(0, 1);
  std::uniform_int_distribution<int> val(-127, 127);
  std::vector<int8_t> W(static_cast<size_t>(K * N), 0);
  for (int64_t n0 = 0; n0 < N; n0 += 4)
    for (int64_t k = 0; k < K; ++k) {
      if (sparsity >= 1.0 || (sparsity > 0.0 && u(rng) < sparsity)) continue;
      const int64_t n1 = std::min(N, n0 + 4);
      for (int64_t n = n0; n < n1; ++n) {
        int v = val(rng);
        if (u(rng) < 0.1) v = 0;
        if (u(rng) < 0.05) v = u(rng) < 0.5 ? 127 : -127;
        W[static_cast<size_t>(k * N + n)] = static_cast<int8_t>(v);
      }
      if (W[static_cast<size_t>(k * N + n0)] == 0) W[static_cast<size_t>(k * N + n0)] = 3;
    }
  return W;
}

double measured_block_sparsity(const std::vector<int8_t>& W, int64_t K, int64_t N) {
  int64_t zero = 0, all = 0;
  for (int64_t n0 = 0; n0 < N; n0 += 4)
    for (int64_t k = 0; k < K; ++k, ++all) {
      bool z = true;
      for (int64_t n = n0; n < std::min(N, n0 + 4); ++n) z &= W[static_cast<size_t>(k * N + n)] == 0;
      zero += z;
    }
  return all ? static_cast<double>(zero) / static_cast<double>(all) : 0.0;
}

// f32 W [K, N] with the zero-block pattern of block_sparse_s8 and values in
// [-wr, wr] in the nonzero blocks.
std::vector<float> block_sparse_f32(int64_t K, int64_t N, double sparsity, float wr, std::mt19937& rng) {
  const std::vector<int8_t> pattern = block_sparse_s8(K, N, sparsity, rng);
  std::vector<float> W(pattern.size());
  for (size_t i = 0; i < W.size(); ++i) W[i] = wr * static_cast<float>(pattern[i]) / 127.f;
  return W;
}

double measured_block_sparsity_f32(const std::vector<float>& W, int64_t K, int64_t N) {
  std::vector<int8_t> nz(W.size());
  for (size_t i = 0; i < W.size(); ++i) nz[i] = W[i] != 0.f;
  return measured_block_sparsity(nz, K, N);
}

struct LinearSpec {
  int64_t M, K, N;
  Precision precision = Precision::F32;
  Activation act = Activation::None;
  bool bias = false, residual = false;
  bool static_q = false;   // S8: calibrated act_scale/act_zp
  bool in_scale = false;   // S8: an input scale (slot::kInScale, smoothing), log-uniform in [1/8, 8]
  double sparsity = 0.0;   // S8, or F32 block-sparse: fraction of zero 4x1 blocks
  bool record_sparsity = true;  // S8Sparse, sparse F32: op.block_sparsity stored, else -1
  bool seq_rows = false;   // rows are sequences (after a Pool)
  Gate gate = Gate::None;  // gated: weight, bias and scale are [.., 2N]
};

std::unique_ptr<OpCase> linear_case(const LinearSpec& s, uint32_t seed) {
  std::mt19937 rng(seed);
  auto c = std::make_unique<OpCase>();
  const int64_t M = s.M, K = s.K, N = s.N;
  const bool s8 = s.precision != Precision::F32;
  c->op.gate = s.gate;
  const int64_t NW = linear_weight_cols(c->op, N);  // weight columns
  c->op.kind = OpKind::Linear;
  c->op.precision = s.precision;
  c->op.act = s.act;
  c->op.in0 = 0;
  c->op.in1 = s.residual ? 1 : -1;
  const float wr = 1.5f / std::sqrt(static_cast<float>(K));  // outputs O(1)
  if (s8) {
    std::vector<int8_t> W = block_sparse_s8(K, NW, s.sparsity, rng);
    if (s.precision == Precision::S8Sparse)
      c->op.block_sparsity = s.record_sparsity ? static_cast<float>(measured_block_sparsity(W, K, NW)) : -1.f;
    c->set_s8(slot::kWeight, "w", {K, NW}, std::move(W));
    c->set_f32(slot::kWeightScale, "w_scale", {NW}, uniform(static_cast<size_t>(NW), 0.5f * wr / 127, 1.5f * wr / 127, rng));
    if (s.in_scale) {
      std::vector<float> in = uniform(static_cast<size_t>(K), -3.f, 3.f, rng);
      for (float& v : in) v = std::exp2(v);
      c->set_f32(slot::kInScale, "in_scale", {K}, std::move(in));
    }
  } else if (s.sparsity > 0.0) {
    // Block-sparse f32: the cpu backend runs it on spmm_f32 above the crossover.
    std::vector<float> W = block_sparse_f32(K, NW, s.sparsity, wr, rng);
    c->op.block_sparsity = s.record_sparsity ? static_cast<float>(measured_block_sparsity_f32(W, K, NW)) : -1.f;
    c->set_f32(slot::kWeight, "w", {K, NW}, std::move(W));
  } else {
    c->set_f32(slot::kWeight, "w", {K, NW}, uniform(static_cast<size_t>(K * NW), -wr, wr, rng));
  }
  if (s.bias) c->set_f32(slot::kBias, "b", {NW}, uniform(static_cast<size_t>(NW), -0.5f, 0.5f, rng));
  if (s.static_q) {
    // x is in [-1, 1.2]: this range clips its ends (q saturates at 0 and 255).
    c->op.act_scale = 1.9f / 255.f;
    c->op.act_zp = 121;
  }
  c->bind_infos();
  // Sequence rows: M sequences of mixed lengths, the Linear reads one row each.
  std::vector<int64_t> lens(static_cast<size_t>(M));
  for (int64_t i = 0; i < M; ++i) lens[static_cast<size_t>(i)] = s.seq_rows ? 1 + (i * 7) % 5 : 1;
  if (s.seq_rows) c->set_batch(lens, rng, 1, 1);
  else c->set_batch({M}, rng, 1, 1);
  c->in_rows = c->out_rows = M;
  c->in_width = K;
  c->out_width = N;
  c->in0 = uniform(static_cast<size_t>(M * K), -1.f, 1.2f, rng);
  // A zero row (dynamic quantization's hi == lo case) and a row of one sign.
  if (M >= 3) std::fill(c->in0.begin() + K, c->in0.begin() + 2 * K, 0.f);
  if (M >= 4)
    for (int64_t k = 0; k < K; ++k) c->in0[static_cast<size_t>(2 * K + k)] = std::fabs(c->in0[static_cast<size_t>(2 * K + k)]);
  if (s.residual) c->in1 = uniform(static_cast<size_t>(M * N), -1, 1, rng);
  const Rows rows = s.seq_rows ? Rows::Sequences : Rows::Tokens;
  c->finish(rows, rows);
  std::ostringstream d;
  d << "Linear " << precision_name(s.precision) << " M=" << M << " K=" << K << " N=" << N
    << " act=" << activation_name(s.act) << " bias=" << s.bias << " residual=" << s.residual;
  if (s8) d << (s.static_q ? " static-q" : " dynamic-q") << " block_sparsity=" << s.sparsity
             << (s.in_scale ? " in_scale" : "");
  if (!s8 && s.sparsity > 0) d << " block_sparsity=" << s.sparsity << (s.record_sparsity ? "" : " (not stored)");
  if (s.seq_rows) d << " rows=sequences";
  if (s.gate != Gate::None) d << " gate=" << gate_name(s.gate);
  c->desc = d.str();
  if (s.gate != Gate::None) {
    c->tol = s8 ? "linear_s8_geglu" : "linear_f32_geglu";
  } else if (!s8) {
    c->tol = s.sparsity > 0 ? "linear_f32_sparse" : "linear_f32";
  } else {
    switch (s.act) {
      case Activation::None: c->tol = "linear_s8"; break;
      case Activation::GeluErf: c->tol = "linear_s8_gelu_erf"; break;
      case Activation::GeluTanh: c->tol = "linear_s8_gelu_tanh"; break;
      case Activation::Tanh: c->tol = "linear_s8_tanh"; break;
    }
  }
  return c;
}

// ---------------------------------------------------------------------------
// Running and comparing.

constexpr int64_t kGuardFloats = 16;
constexpr float kGuardValue = -12345.678f;

const OpImpl& impl_of(const Backend& be, const OpCase& c) {
  const OpImpl* impl = be.op(c.op.kind);
  REQUIRE_MESSAGE(impl != nullptr, "backend " << be.name() << " lacks " << op_kind_name(c.op.kind));
  return *impl;
}

std::unique_ptr<PreparedOp> prepare(const Backend& be, const OpCase& c) {
  PrepareArgs a{c.op, c.graph, c.config, c.weights, c.in_width, c.out_width, {}};
  return impl_of(be, c).prepare(a);
}

// Runs a prepared case on `ex` with workspace `ws`; returns out (without the
// guard) or sets *guard_ok = false when a guard float changed.
std::vector<float> run_prepared(const Backend& be, const OpCase& c, const PreparedOp& st,
                                Executor& ex, Workspace& ws, int threads, bool* guard_ok) {
  const size_t n = static_cast<size_t>(c.out_rows * c.out_width);
  std::vector<float> out(n + kGuardFloats, std::numeric_limits<float>::quiet_NaN());
  std::fill(out.begin() + static_cast<std::ptrdiff_t>(n), out.end(), kGuardValue);
  OpIO io;
  io.in0 = c.in0.empty() ? nullptr : c.in0.data();
  io.in1 = c.in1.empty() ? nullptr : c.in1.data();
  io.in_rows = c.in_rows;
  io.out = out.data();
  io.out_rows = c.out_rows;
  io.in_width = c.in_width;
  io.out_width = c.out_width;
  const OpImpl& impl = impl_of(be, c);
  if (ex.host_memory()) {
    RunContext ctx{c.batch, ws, threads, &ex};
    ex.execute([&] { impl.run(c.op, st, io, ctx); });
  } else {
    // A device backend: inputs, the pre-filled output (NaN and guard) and the
    // batch go to the executor's memory, the output and guard come back.
    const size_t n0 = c.in0.size(), n1 = c.in1.size(), no = out.size();
    auto up = [](size_t f) { return (f * sizeof(float) + 255) / 256 * 256; };
    uint8_t* base = static_cast<uint8_t*>(ex.arena(up(n0) + up(n1) + up(no)));
    float* d0 = reinterpret_cast<float*>(base);
    float* d1 = reinterpret_cast<float*>(base + up(n0));
    float* dout = reinterpret_cast<float*>(base + up(n0) + up(n1));
    ex.copy_from_host(d0, c.in0.data(), n0 * sizeof(float));
    ex.copy_from_host(d1, c.in1.data(), n1 * sizeof(float));
    ex.copy_from_host(dout, out.data(), no * sizeof(float));
    if (n0) io.in0 = d0;
    if (n1) io.in1 = d1;
    io.out = dout;
    const BatchView staged = ex.stage(c.batch);
    RunContext ctx{staged, ex.workspace(), threads, &ex};
    ex.execute([&] { impl.run(c.op, st, io, ctx); });
    ex.copy_to_host(out.data(), dout, no * sizeof(float));
  }
  *guard_ok = std::all_of(out.begin() + static_cast<std::ptrdiff_t>(n), out.end(),
                          [](float v) { return v == kGuardValue; });
  out.resize(n);
  return out;
}

std::vector<float> run_once(const Backend& be, const OpCase& c, int threads) {
  auto st = prepare(be, c);
  auto ex = be.make_executor(threads);
  Workspace ws;
  bool guard_ok = true;
  auto out = run_prepared(be, c, *st, *ex, ws, threads, &guard_ok);
  REQUIRE_MESSAGE(guard_ok, c.desc << " on " << be.name() << ": wrote past the output");
  return out;
}

// Compares got with want under the case's tolerance; one CHECK per call, its
// message naming the op, backend, shape and the worst element.
void compare(const OpCase& c, const std::string& who, const std::vector<float>& got,
             const std::vector<float>& want) {
  const Tolerance& t = tolerance(c.tol);
  REQUIRE(got.size() == want.size());
  const int64_t W = c.out_width;
  double worst_excess = -1, used = 0;  // excess: err - allowed; used: max err / allowed
  int64_t wr = -1, wc = -1;
  double w_err = 0, w_allowed = 0, w_scale = 0;
  int64_t bad = 0;
  for (int64_t r = 0; r < c.out_rows; ++r) {
    double scale = 0;
    for (int64_t j = 0; j < W; ++j) scale = std::max(scale, std::fabs(double(want[static_cast<size_t>(r * W + j)])));
    const double allowed = t.abs + t.rel * scale;
    for (int64_t j = 0; j < W; ++j) {
      const size_t i = static_cast<size_t>(r * W + j);
      const double g = got[i], w = want[i];
      double err = std::fabs(g - w);
      if (std::isnan(err)) err = std::numeric_limits<double>::infinity();
      if (err == 0) continue;
      const double excess = err - allowed;
      if (excess > 0) ++bad;
      used = std::max(used, allowed > 0 ? err / allowed : err);
      if (excess > worst_excess || wr < 0) {
        worst_excess = excess;
        wr = r;
        wc = j;
        w_err = err;
        w_allowed = allowed;
        w_scale = scale;
      }
    }
  }
  double& seen = worst_seen()[c.tol];
  seen = std::max(seen, used);
  std::ostringstream m;
  if (bad > 0) {
    const size_t i = static_cast<size_t>(wr * W + wc);
    m << std::setprecision(9) << c.desc << " on " << who << ": " << bad << " of " << got.size()
      << " elements outside tolerance '" << t.key << "' (rel " << t.rel << " of row scale, abs "
      << t.abs << "); worst at [" << wr << "][" << wc << "]: got " << got[i] << ", want " << want[i]
      << ", |err| " << w_err << " > " << w_allowed << " (row scale " << w_scale << ")";
  }
  CHECK_MESSAGE(bad == 0, m.str());
}

struct RestoreIsa {
  sk::Isa prev;
  explicit RestoreIsa(sk::Isa cap) : prev(sk::set_max_isa(cap)) {}
  ~RestoreIsa() { sk::set_max_isa(prev); }
  RestoreIsa(const RestoreIsa&) = delete;
  RestoreIsa& operator=(const RestoreIsa&) = delete;
};

// Every ISA level up to the detected one, lowest first.
std::vector<sk::Isa> isa_levels() {
  std::vector<sk::Isa> v;
  for (sk::Isa i : {sk::Isa::Scalar, sk::Isa::Avx2, sk::Isa::Avx2Vnni, sk::Isa::Avx512Vnni})
    if (static_cast<int>(i) <= static_cast<int>(sk::detected_isa()) && sk::cpu_supports(i)) v.push_back(i);
  return v;
}

std::vector<int> thread_counts() {
#ifdef SPINEL_TEST_TSAN
  return {1};
#else
  return {1, 2};
#endif
}

// Whether a registered backend can run here; when it cannot (the cuda backend
// without a device) says so once, on one line, and the tests skip it.
bool runnable(const Backend& be) {
  const std::string why = be.unavailable();
  if (why.empty()) return true;
  static std::vector<std::string> said;
  if (std::find(said.begin(), said.end(), be.name()) == said.end()) {
    said.emplace_back(be.name());
    std::printf("%s backend: skipped: %s\n", be.name(), why.c_str());
    std::fflush(stdout);
  }
  return false;
}

// The case on every backend but the reference, at every ISA level (each new
// variant of a backend prepares again) and thread count, against the
// reference backend.
void check_case(const OpCase& c) {
  const Backend* ref = find_backend("reference");
  REQUIRE(ref != nullptr);
  const std::vector<float> want = run_once(*ref, c, 1);
  for (const std::string& name : backend_names()) {
    if (name == "reference") continue;
    const Backend* be = find_backend(name);
    REQUIRE(be != nullptr);
    if (!runnable(*be)) continue;
    std::vector<std::string> variants_done;
    for (sk::Isa isa : isa_levels()) {
      RestoreIsa cap(isa);
      const std::string variant = be->variant();
      if (std::find(variants_done.begin(), variants_done.end(), variant) != variants_done.end())
        continue;
      variants_done.push_back(variant);
      auto st = prepare(*be, c);
      for (int threads : thread_counts()) {
        auto ex = be->make_executor(threads);
        Workspace ws;
        bool guard_ok = true;
        const std::vector<float> got = run_prepared(*be, c, *st, *ex, ws, threads, &guard_ok);
        const std::string who = name + (variant.empty() ? "" : "/" + variant) + " [" + st->kernel() +
                                "] threads=" + std::to_string(threads);
        CHECK_MESSAGE(guard_ok, c.desc << " on " << who << ": wrote past the end of the output");
        compare(c, who, got, want);
      }
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------

TEST_CASE("backend ops: registry") {
  const auto names = backend_names();
  REQUIRE(std::find(names.begin(), names.end(), "reference") != names.end());
  REQUIRE(std::find(names.begin(), names.end(), "cpu") != names.end());
  for (const std::string& n : names) {
    const Backend* be = find_backend(n);
    REQUIRE(be != nullptr);
    CHECK(be->name() == n);
    for (uint32_t k = 1; k < kNumOpKinds; ++k)
      CHECK_MESSAGE(be->op(static_cast<OpKind>(k)) != nullptr,
                    n << " lacks " << op_kind_name(static_cast<OpKind>(k)));
    MESSAGE(n << ": " << be->describe());
  }
  std::ostringstream s;
  for (sk::Isa i : isa_levels()) s << sk::isa_name(i) << " ";
  MESSAGE("ISA levels tested: " << s.str());
}

TEST_CASE("backend ops: Embedding") {
  uint32_t seed = 100;
  const std::vector<std::vector<int64_t>> batches = {{1}, {5, 1, 17}, {64, 3}};
  for (int64_t H : {3, 17, 384})
    for (int combo = 0; combo < 4; ++combo) {
      const bool pos = combo & 1, type = combo & 2;
      const auto& lens = batches[static_cast<size_t>((H + combo) % 3)];
      check_case(*embedding_case(H, pos, type, false, lens, seed++));
    }
  check_case(*embedding_case(17, true, true, true, {4, 9}, seed++));
  if (!kSanitized) check_case(*embedding_case(768, true, true, false, {128, 1, 31}, seed++));
  print_worst_seen();
}

TEST_CASE("backend ops: LayerNorm") {
  uint32_t seed = 200;
  int i = 0;
  for (int64_t H : {1, 3, 17, 384, 768})
    for (int64_t rows : {1, 3, 17, 131})
      for (bool res : {false, true}) {
        if (kSanitized && H * rows > 384 * 17) continue;
        check_case(*layernorm_case(rows, H, res, (i++ % 2) ? 1e-12f : 1e-5f, seed++));
      }
  print_worst_seen();
}

TEST_CASE("backend ops: Attention") {
  uint32_t seed = 300;
  const std::vector<std::vector<int64_t>> batches = {
      {1}, {1, 5, 1, 17}, {3, 64, 1}, {33, 1, 2, 9}, {128, 7}};
  int i = 0;
  for (int heads : {1, 2, 3, 12})
    for (int64_t hd : {7, 16, 32, 64}) {
      const auto& lens = batches[static_cast<size_t>(i % 5)];
      if (kSanitized && heads * hd * lens[0] > 12 * 64 * 33) {
        ++i;
        continue;
      }
      // 1/sqrt(head_dim) as in BERT, and larger/smaller multipliers
      const float scales[] = {1.f / std::sqrt(static_cast<float>(hd)), 1.f, 0.05f};
      check_case(*attention_case(heads, hd, lens, scales[i % 3], seed++));
      ++i;
    }
  // Every scale on one shape with 1-token sequences among longer ones.
  for (float scale : {0.125f, 1.f, 3.f, 0.01f})
    check_case(*attention_case(2, 16, {1, 9, 1, 1, 20}, scale, seed++));
  print_worst_seen();
}

// ALiBi: every head count DNABERT-2 configurations use (12), powers of two
// and not (3, 6), 1 and 16; lengths from 1 to past 128 (slopes times
// distances reach several units: the bias decides the softmax).
TEST_CASE("backend ops: Attention with ALiBi") {
  uint32_t seed = 350;
  const std::vector<std::vector<int64_t>> batches = {
      {1}, {1, 5, 1, 17}, {3, 64, 1}, {33, 1, 2, 9}, {150, 7}};
  int i = 0;
  for (int heads : {1, 2, 3, 6, 12, 16})
    for (int64_t hd : {7, 16, 64}) {
      const auto& lens = batches[static_cast<size_t>(i % 5)];
      if (kSanitized && heads * hd * lens[0] > 12 * 64 * 33) {
        ++i;
        continue;
      }
      const float scales[] = {1.f / std::sqrt(static_cast<float>(hd)), 1.f, 0.05f};
      check_case(*attention_case(heads, hd, lens, scales[i % 3], seed++, true));
      ++i;
    }
  if (!kSanitized) check_case(*attention_case(12, 64, {200, 1, 77}, 0.125f, seed++, true));
  print_worst_seen();
}

// The slopes against the ALiBi reference code (ofirpress/attention_with_linear_biases,
// DNABERT-2's bert_layers.py), written here independently in double.
TEST_CASE("ir: alibi_slopes for 1-16 heads") {
  std::function<std::vector<double>(int)> slopes = [&](int n) {
    auto pow2 = [](int m) {
      const double start = std::pow(2.0, -std::pow(2.0, -(std::log2(m) - 3)));
      std::vector<double> s;
      for (int i = 0; i < m; ++i) s.push_back(start * std::pow(start, i));
      return s;
    };
    if (std::floor(std::log2(n)) == std::log2(n)) return pow2(n);
    const int c = 1 << static_cast<int>(std::floor(std::log2(n)));
    std::vector<double> a = pow2(c);
    const std::vector<double> b = slopes(2 * c);
    for (int i = 0; i < n - c; ++i) a.push_back(b[static_cast<size_t>(2 * i)]);
    return a;
  };
  for (int n = 1; n <= 16; ++n) {
    const std::vector<float> got = alibi_slopes(n);
    const std::vector<double> want = slopes(n);
    REQUIRE(got.size() == want.size());
    for (size_t h = 0; h < got.size(); ++h)
      CHECK_MESSAGE(got[h] == static_cast<float>(want[h]), n << " heads, head " << h << ": " << got[h]
                                                             << " vs " << want[h]);
  }
  // DESIGN.md's 12-head example: 2^-1 .. 2^-8, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5.
  const std::vector<float> s12 = alibi_slopes(12);
  for (int h = 0; h < 8; ++h) CHECK(s12[static_cast<size_t>(h)] == std::ldexp(1.f, -(h + 1)));
  for (int h = 0; h < 4; ++h)
    CHECK(s12[static_cast<size_t>(8 + h)] == doctest::Approx(std::pow(2.0, -0.5 - h)).epsilon(1e-7));
  CHECK(alibi_slopes(1) == std::vector<float>{std::ldexp(1.f, -8)});
  CHECK_THROWS(alibi_slopes(0));
}

TEST_CASE("backend ops: Pool") {
  uint32_t seed = 400;
  for (PoolKind k : {PoolKind::Cls, PoolKind::Mean})
    for (int64_t W : {1, 17, 768})
      for (const auto& lens : std::vector<std::vector<int64_t>>{{1}, {1, 7, 1}, {128, 3, 64}})
        check_case(*pool_case(k, W, lens, seed++));
  print_worst_seen();
}

TEST_CASE("backend ops: Linear F32") {
  uint32_t seed = 500;
  const Activation acts[] = {Activation::None, Activation::GeluErf, Activation::GeluTanh,
                             Activation::Tanh};
  const int64_t Ms[] = {1, 3, 17, 64, 131};
  const int64_t small[] = {1, 3, 17, 33};
  int i = 0;
  // Every activation x bias x residual at small odd shapes.
  for (Activation act : acts)
    for (bool bias : {false, true})
      for (bool res : {false, true}) {
        LinearSpec s{Ms[i % 5], small[i % 4], small[(i / 4 + i) % 4]};
        s.act = act;
        s.bias = bias;
        s.residual = res;
        check_case(*linear_case(s, seed++));
        ++i;
      }
  // Every K x N from odd to BERT-sized, the other parameters cycling.
  const int64_t dims[] = {1, 3, 17, 33, 384, 768};
  for (int64_t K : dims)
    for (int64_t N : dims) {
      const bool big = K >= 384 && N >= 384;
      if (kSanitized && big && !(K == 768 && N == 384)) continue;
      LinearSpec s{Ms[i % 5], K, N};
      if (big) s.M = (i % 2) ? 17 : 131;  // few large reference runs
      s.act = acts[(i / 2) % 4];
      s.bias = i % 2;
      s.residual = (i / 3) % 2;
      check_case(*linear_case(s, seed++));
      ++i;
    }
  print_worst_seen();
}

// Both INT8 precisions over block sparsity x activation x quantization x
// residual, the shape and bias cycling.
void s8_sweep(Precision p) {
  uint32_t seed = p == Precision::S8Sparse ? 700 : 600;
  struct Shape {
    int64_t M, K, N;
  };
  std::vector<Shape> shapes = {{1, 4, 4}, {3, 12, 8}, {17, 36, 20}, {64, 384, 384}, {131, 768, 384},
                               {17, 768, 768}, {3, 384, 1536}};
  if (p == Precision::S8Dense) {  // oneDNN's u8s8 has no multiple-of-4 rule
    shapes.push_back({17, 33, 17});
    shapes.push_back({3, 1, 3});
    shapes.push_back({131, 17, 33});
  }
  if (kSanitized) shapes = {{1, 4, 4}, {3, 12, 8}, {17, 36, 20}, {17, 384, 384}};
  // (Dense layers on the sparse kernel take it from 64 tokens: select.h kDenseOnSparseMinTokens.)
  if (kSanitized && p == Precision::S8Dense) shapes.push_back({64, 36, 20});
  const Activation acts[] = {Activation::None, Activation::GeluErf, Activation::GeluTanh,
                             Activation::Tanh};
  int i = 0;
  for (double sp : {0.0, 0.5, 0.9, 1.0})
    for (Activation act : acts)
      for (bool static_q : {false, true})
        for (bool res : {false, true}) {
          const Shape& sh = shapes[static_cast<size_t>(i % static_cast<int>(shapes.size()))];
          LinearSpec s{sh.M, sh.K, sh.N, p};
          s.act = act;
          s.static_q = static_q;
          s.residual = res;
          s.bias = (i / 3) % 2;
          s.sparsity = sp;
          s.record_sparsity = (i % 5) != 0;
          s.in_scale = i % 3 == 1;
          check_case(*linear_case(s, seed++));
          ++i;
        }
}

TEST_CASE("backend ops: Linear S8Dense") {
  // On oneDNN (or our AMX kernel) and on the block-sparse kernel, every
  // block kept (select.h dense_s8_mode; shapes it cannot pack stay on oneDNN).
  for (const char* mode : {"dnnl", "sparse"}) {
    CAPTURE(mode);
    setenv("SPINEL_DENSE_S8", mode, 1);
    s8_sweep(Precision::S8Dense);
  }
  unsetenv("SPINEL_DENSE_S8");
  print_worst_seen();
}

TEST_CASE("backend ops: Linear S8Sparse") {
  s8_sweep(Precision::S8Sparse);
  print_worst_seen();
}

// GEGLU (DNABERT-2's gated_layers): F32 and both INT8 precisions, with and
// without bias and residual, odd output widths where the precision allows
// them (block-sparse weights need 2 * I to be a multiple of 4: I even).
// Block-sparse F32 (spmm_f32 on the cpu backend, chosen from the stored or
// measured block sparsity): sparsity x activation x residual, the shape (odd
// N: a short last block-row), bias and stored-or-not cycling; every case
// checks that the cpu backend did choose the sparse kernel.
TEST_CASE("backend ops: Linear F32 block-sparse") {
  uint32_t seed = 1400;
  struct Shape {
    int64_t M, K, N;
  };
  std::vector<Shape> shapes = {{1, 4, 4},     {3, 12, 9},      {17, 36, 21},   {64, 384, 384},
                               {131, 768, 385}, {300, 768, 768}, {2, 384, 1536}};
  if (kSanitized) shapes = {{1, 4, 4}, {3, 12, 9}, {17, 36, 21}, {17, 384, 384}};
  const Activation acts[] = {Activation::None, Activation::GeluErf, Activation::GeluTanh,
                             Activation::Tanh};
  const Backend* cpu = find_backend("cpu");
  REQUIRE(cpu != nullptr);
  int i = 0;
  for (double sp : {0.9, 0.95, 1.0})
    for (Activation act : acts)
      for (bool res : {false, true}) {
        const Shape& sh = shapes[static_cast<size_t>(i % static_cast<int>(shapes.size()))];
        LinearSpec s{sh.M, sh.K, sh.N, Precision::F32};
        s.act = act;
        s.residual = res;
        s.bias = (i / 3) % 2;
        s.sparsity = sp;
        s.record_sparsity = (i % 5) != 0;
        auto c = linear_case(s, seed++);
        const auto st = prepare(*cpu, *c);
        CHECK_MESSAGE(st->kernel().rfind("spmm_f32", 0) == 0,
                      c->desc << ": cpu runs " << st->kernel() << " (" << st->why() << ")");
        check_case(*c);
        ++i;
      }
  print_worst_seen();
}

TEST_CASE("backend ops: gated Linear (GEGLU)") {
  uint32_t seed = 900;
  struct Shape {
    int64_t M, K, I;
  };
  std::vector<Shape> odd = {{1, 3, 1}, {3, 17, 5}, {17, 33, 17}, {131, 36, 33}, {64, 384, 192}};
  std::vector<Shape> even = {{1, 4, 2}, {3, 12, 6}, {17, 36, 10}, {131, 64, 48}, {64, 384, 192}};
  if (!kSanitized) {
    odd.push_back({131, 768, 3072 / 4 + 1});
    even.push_back({33, 768, 3072});
  }
  int i = 0;
  for (Precision p : {Precision::F32, Precision::S8Dense, Precision::S8Sparse}) {
    const auto& shapes = p == Precision::S8Sparse ? even : odd;
    // F32 also block-sparse (spmm_f32 for the product of both halves).
    if (p == Precision::F32)
      for (size_t j = 0; j < shapes.size(); j += 2) {
        LinearSpec s{shapes[j].M, shapes[j].K, shapes[j].I, p};
        s.gate = Gate::Geglu;
        s.bias = j % 4 == 0;
        s.residual = j % 4 != 0;
        s.sparsity = 0.9;
        check_case(*linear_case(s, seed++));
      }
    for (const Shape& sh : shapes)
      for (bool bias : {false, true})
        for (bool res : {false, true}) {
          LinearSpec s{sh.M, sh.K, sh.I, p};
          s.gate = Gate::Geglu;
          s.bias = bias;
          s.residual = res;
          s.static_q = p != Precision::F32 && (i % 3) == 1;
          s.sparsity = p == Precision::S8Sparse ? (i % 2 ? 0.9 : 0.5) : 0.0;
          check_case(*linear_case(s, seed++));
          ++i;
        }
  }
  print_worst_seen();
}

TEST_CASE("ir: gated Linear and ALiBi attributes are checked") {
  Op op;
  op.kind = OpKind::Linear;
  op.out = 1;
  op.gate = Gate::Geglu;
  op.w[slot::kWeight] = 0;
  ModelConfig cfg;
  cfg.vocab_size = 4;
  cfg.hidden_size = 6;
  cfg.num_heads = 1;
  cfg.max_position = 8;
  TensorInfo w;
  w.name = "w";
  w.shape = {8, 12};
  // Embedding -> gated Linear.
  Graph full;
  full.values = {{"x", 8}, {"y", 6}};
  Op emb;
  emb.kind = OpKind::Embedding;
  emb.out = 0;
  emb.eps = 1e-5f;
  emb.w[slot::kWord] = 1;
  emb.w[slot::kEmbGamma] = 2;
  emb.w[slot::kEmbBeta] = 3;
  op.in0 = 0;
  full.ops = {emb, op};
  full.output = 1;
  TensorInfo word{"word", DType::F32, {4, 8}}, gamma{"g", DType::F32, {8}}, beta{"b", DType::F32, {8}};
  std::vector<TensorInfo> ts = {w, word, gamma, beta};
  CHECK_NOTHROW(validate_graph(full, ts, cfg));
  ts[0].shape = {8, 6};  // not 2 x the output width
  CHECK_THROWS_WITH(validate_graph(full, ts, cfg), doctest::Contains("expected 2 x the output width 6"));
  ts[0].shape = {8, 12};
  full.ops[1].act = Activation::GeluErf;
  CHECK_THROWS_WITH(validate_graph(full, ts, cfg), doctest::Contains("no separate activation"));
  full.ops[1].act = Activation::None;
  full.ops[1].alibi = true;
  CHECK_THROWS_WITH(validate_graph(full, ts, cfg), doctest::Contains("only an Attention has an ALiBi"));
  full.ops[1].alibi = false;
  full.ops[0].gate = Gate::Geglu;
  CHECK_THROWS_WITH(validate_graph(full, ts, cfg), doctest::Contains("only a Linear is gated"));
}

TEST_CASE("backend ops: Linear on sequence rows (after a Pool)") {
  uint32_t seed = 800;
  for (Precision p : {Precision::F32, Precision::S8Dense, Precision::S8Sparse})
    for (int64_t M : {1, 3, 17}) {
      LinearSpec s{M, kSanitized ? 36 : 768, kSanitized ? 36 : 768, p};
      s.act = Activation::Tanh;  // BERT's pooler
      s.bias = true;
      s.sparsity = 0.5;
      s.seq_rows = true;
      check_case(*linear_case(s, seed++));
    }
  print_worst_seen();
}

// The BERT pooler head as a chain: Pool(Cls) then Linear(tanh) on its
// sequence rows, each backend feeding its own Pool output to its Linear.
TEST_CASE("backend ops: Pool then Linear chain") {
  const int64_t W = kSanitized ? 36 : 384;
  const std::vector<int64_t> lens = {5, 1, 12, 1};
  for (PoolKind kind : {PoolKind::Cls, PoolKind::Mean})
    for (Precision p : {Precision::F32, Precision::S8Sparse}) {
      auto pool = pool_case(kind, W, lens, 900);
      LinearSpec s{static_cast<int64_t>(lens.size()), W, W, p};
      s.act = Activation::Tanh;
      s.bias = true;
      s.sparsity = 0.5;
      s.seq_rows = true;
      auto lin = linear_case(s, 901);
      lin->batch = pool->batch;  // the same batch; the Linear reads the Pool's rows
      auto chain = [&](const Backend& be, int threads) {
        lin->in0 = run_once(be, *pool, threads);
        return run_once(be, *lin, threads);
      };
      const std::vector<float> want = chain(*find_backend("reference"), 1);
      lin->desc = std::string("Pool ") + pool_kind_name(kind) + " -> " + lin->desc;
      for (const std::string& name : backend_names()) {
        if (name == "reference" || !runnable(*find_backend(name))) continue;
        for (int threads : thread_counts()) {
          const std::vector<float> got = chain(*find_backend(name), threads);
          compare(*lin, name + " threads=" + std::to_string(threads), got, want);
        }
      }
    }
  print_worst_seen();
}

// The cpu backend's INT8 Linear (block-sparse, dense) running the LayerNorm
// after it (select.h linear_runs_layernorm), prepared from a two-op graph
// with weights_of:
// the LayerNorm's output must be the LayerNorm of the Linear's one-op
// output, bit for bit, whether its buffer is separate (the Linear then
// writes there and normalizes in place) or the Linear's own f32 input (the
// planner may hand it over: the Linear is its last reader; the Linear then
// writes its own output first). Token counts of one block split between
// threads, whole blocks per thread, and both.
TEST_CASE("backend ops: an INT8 Linear runs the LayerNorm after it (cpu)") {
  const Backend* cpu = find_backend("cpu");
  REQUIRE(cpu != nullptr);
  const int64_t N = 64;
  uint32_t seed = 1300;
  // (1024 x 256: the LayerNorm's rows of 64 floats written over the input
  // would land on input rows of blocks the other thread has yet to read.)
  for (const auto& mk : {std::pair<int64_t, int64_t>{40, 96}, {128, 96}, {200, 96}, {1024, 256}})
    for (int threads : {1, 2})
      for (Precision prec : {Precision::S8Sparse, Precision::S8Dense}) {
        // (Not a structured binding: clang 14 cannot capture one in CAPTURE's lambda.)
        const int64_t M = mk.first, K = mk.second;
        LinearSpec s{M, K, N, prec};
        s.bias = true;
        s.residual = true;
        s.sparsity = prec == Precision::S8Sparse ? 0.9 : 0.0;
        auto lin = linear_case(s, seed++);
        auto ln = layernorm_case(M, N, false, 1e-5f, seed++);
        // Unfused: the Linear alone, then the LayerNorm on its output.
        ln->in0 = run_once(*cpu, *lin, threads);
        const std::vector<float> want = run_once(*cpu, *ln, threads);
        // values: 0 x, 1 residual, 2 the Linear's output, 3 the LayerNorm's.
        Graph g;
        g.values = {{"x", K, Rows::Tokens}, {"res", N, Rows::Tokens}, {"y", N, Rows::Tokens}, {"ln", N, Rows::Tokens}};
        g.ops = {lin->op, ln->op};
        g.ops[0].out = 2;
        g.ops[1].in0 = 2;
        g.ops[1].out = 3;
        g.output = 3;
        auto weights_of = [&](size_t i) { return i == 0 ? lin->weights : ln->weights; };
        const OpImpl& li = *cpu->op(OpKind::Linear);
        const OpImpl& ni = *cpu->op(OpKind::LayerNorm);
        auto sl = li.prepare(PrepareArgs{g.ops[0], g, lin->config, lin->weights, K, N, weights_of});
        auto sn = ni.prepare(PrepareArgs{g.ops[1], g, ln->config, ln->weights, N, N, weights_of});
        CHECK(sl->why().find("the LayerNorm after it runs on the kernel's threads") != std::string::npos);
        CHECK(sn->why().find("run by the Linear before it") != std::string::npos);
        for (bool over_input : {false, true}) {
          std::vector<float> x = lin->in0, y(static_cast<size_t>(M * N), std::nanf("")),
                             sep(static_cast<size_t>(M * N), std::nanf(""));
          float* ln_out = over_input ? x.data() : sep.data();  // x holds M x K >= M x N floats
          OpIO a;
          a.in0 = x.data();
          a.in1 = lin->in1.data();
          a.in_rows = a.out_rows = M;
          a.in_width = K;
          a.out_width = N;
          a.out = y.data();
          a.next_out = ln_out;
          OpIO b;
          b.in0 = y.data();
          b.in_rows = b.out_rows = M;
          b.in_width = b.out_width = N;
          b.out = ln_out;
          auto ex = cpu->make_executor(threads);
          Workspace ws;
          RunContext ctx{lin->batch, ws, threads, ex.get()};
          ex->execute([&] {
            li.run(g.ops[0], *sl, a, ctx);
            ni.run(g.ops[1], *sn, b, ctx);
          });
          CAPTURE(M);
          CAPTURE(threads);
          CAPTURE(over_input);
          CAPTURE(lin->desc);
          CHECK(std::memcmp(ln_out, want.data(), want.size() * sizeof(float)) == 0);
        }
        // Without the Linear's run the LayerNorm reports an internal error
        // rather than leaving its output unwritten.
        auto ex = cpu->make_executor(threads);
        Workspace ws;
        RunContext ctx{ln->batch, ws, threads, ex.get()};
        std::vector<float> out(static_cast<size_t>(M * N));
        OpIO b;
        b.in0 = ln->in0.data();
        b.in_rows = b.out_rows = M;
        b.in_width = b.out_width = N;
        b.out = out.data();
        CHECK_THROWS_AS(ex->execute([&] { ni.run(g.ops[1], *sn, b, ctx); }), std::logic_error);
      }
}

// One PreparedOp, two threads, each with its own Executor and Workspace, run
// at once: the prepared state is read-only, so every run equals the run made
// alone (bit for bit: same kernel, same thread count). The baselines come
// from a separate preparation so the shared one starts cold (oneDNN's
// per-M primitive cache is filled concurrently).
TEST_CASE("backend ops: one PreparedOp run from two threads at once") {
  const int reps = kSanitized ? 3 : 10;
  std::vector<std::unique_ptr<OpCase>> cases;
  const int64_t big = kSanitized ? 64 : 384;
  for (int64_t M : {1, 17, 64}) {
    // BERT's two f32 forms: GELU (FFN in), residual without activation (out).
    LinearSpec f{M, big, big, Precision::F32};
    f.act = Activation::GeluErf;
    f.bias = true;
    cases.push_back(linear_case(f, 1000 + static_cast<uint32_t>(M)));
    f.act = Activation::None;
    f.residual = true;
    cases.push_back(linear_case(f, 1050 + static_cast<uint32_t>(M)));
    LinearSpec fs{M, big, big, Precision::F32};  // block-sparse f32 (spmm_f32)
    fs.act = Activation::GeluErf;
    fs.bias = true;
    fs.residual = M == 17;
    fs.sparsity = 0.9;
    cases.push_back(linear_case(fs, 1150 + static_cast<uint32_t>(M)));
    LinearSpec sp{M, big, big, Precision::S8Sparse};
    sp.act = Activation::GeluErf;
    sp.sparsity = 0.5;
    cases.push_back(linear_case(sp, 1100 + static_cast<uint32_t>(M)));
    LinearSpec dn{M, big, big, Precision::S8Dense};
    dn.static_q = true;
    dn.act = Activation::GeluTanh;
    cases.push_back(linear_case(dn, 1200 + static_cast<uint32_t>(M)));
  }
  cases.push_back(attention_case(3, 16, {1, 40, 7}, 0.25f, 1300));
  cases.push_back(layernorm_case(33, 96, true, 1e-12f, 1301));
  cases.push_back(embedding_case(96, true, true, false, {17, 1, 30}, 1302));
  // One thread per executor: two executors of two threads each on a 2-core
  // machine would oversubscribe it (OpenMP's spinning barriers crawl then).
  const int threads = 1;
  for (const std::string& name : backend_names()) {
    const Backend* be = find_backend(name);
    if (!runnable(*be)) continue;
    {
      for (const auto& cp : cases) {
        const OpCase& c = *cp;
        const std::vector<float> alone = run_once(*be, c, threads);
        auto shared = prepare(*be, c);
        std::atomic<int> mismatches{0}, guard_bad{0};
        auto worker = [&] {
          auto ex = be->make_executor(threads);
          Workspace ws;
          for (int r = 0; r < reps; ++r) {
            bool guard_ok = true;
            const auto got = run_prepared(*be, c, *shared, *ex, ws, threads, &guard_ok);
            if (!guard_ok) ++guard_bad;
            if (std::memcmp(got.data(), alone.data(), got.size() * sizeof(float)) != 0) ++mismatches;
          }
        };
        std::thread t1(worker), t2(worker);
        t1.join();
        t2.join();
        CHECK_MESSAGE(mismatches.load() == 0, c.desc << " on " << name << " threads=" << threads
                                                     << " [" << shared->kernel() << "]: "
                                                     << mismatches.load() << " of " << 2 * reps
                                                     << " concurrent runs differ from the run alone");
        CHECK_MESSAGE(guard_bad.load() == 0, c.desc << " on " << name << ": wrote past the output");
      }
    }
  }
}
