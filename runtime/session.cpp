#include "runtime/session.h"

#include <omp.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cmath>
#include <thread>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/qgemm.h"
#include "runtime/error.h"

namespace spinel {

namespace {

// Assigns every graph value to a buffer so that values whose lifetimes do not
// overlap share memory. Widths are in floats per token; the arena holds
// sum(buffer widths) * tokens floats.
struct MemoryPlan {
  std::vector<int> buffer_of_value;
  std::vector<int64_t> buffer_width;
  std::vector<int64_t> buffer_offset;  // floats per token before this buffer
  int64_t floats_per_token = 0;

  explicit MemoryPlan(const Graph& g) {
    const size_t nv = g.values.size();
    std::vector<size_t> last_use(nv, 0);
    for (size_t i = 0; i < g.ops.size(); ++i) {
      const Op& op = g.ops[i];
      for (int32_t v : {op.in0, op.in1})
        if (v >= 0) last_use[v] = std::max(last_use[v], i);
      last_use[op.out] = std::max(last_use[op.out], i);
    }
    if (g.output >= 0) last_use[g.output] = g.ops.size();  // the result outlives the graph
    buffer_of_value.assign(nv, -1);
    std::vector<bool> busy;
    for (size_t i = 0; i < g.ops.size(); ++i) {
      const Op& op = g.ops[i];
      // The output never shares a buffer with this op's inputs: kernels may
      // not support aliasing, and inputs are freed only after the op.
      int best = -1;
      const int64_t w = g.values[op.out].width;
      for (size_t b = 0; b < busy.size(); ++b) {
        if (busy[b] || buffer_width[b] < w) continue;
        if (best < 0 || buffer_width[b] < buffer_width[best]) best = static_cast<int>(b);
      }
      if (best < 0) {
        best = static_cast<int>(buffer_width.size());
        buffer_width.push_back(w);
        busy.push_back(false);
      }
      busy[best] = true;
      buffer_of_value[op.out] = best;
      for (int32_t v : {op.in0, op.in1, op.out})
        if (v >= 0 && last_use[v] == i) busy[buffer_of_value[v]] = false;
    }
    for (int64_t w : buffer_width) {
      buffer_offset.push_back(floats_per_token);
      floats_per_token += w;
    }
  }
};

int64_t max_sequence_length(const std::vector<Sequence>& batch) {
  int64_t m = 0;
  for (const auto& s : batch) m = std::max<int64_t>(m, static_cast<int64_t>(s.ids.size()));
  return m;
}

// Residual add and tanh GELU are not in the INT8 epilogue's repertoire in
// every combination: finish those here.
void add_rows(float* y, const float* r, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += r[i];
}

}  // namespace

void check_batch(const Model& model, const std::vector<Sequence>& batch) {
  const ModelConfig& c = model.config();
  if (batch.empty()) fail("the batch is empty");
  for (size_t i = 0; i < batch.size(); ++i) {
    const Sequence& s = batch[i];
    if (s.ids.empty()) fail("sequence ", i, " has no tokens");
    if (static_cast<int64_t>(s.ids.size()) > c.max_position)
      fail("sequence ", i, " has ", s.ids.size(), " tokens; the model accepts at most ",
           c.max_position);
    if (!s.type_ids.empty() && s.type_ids.size() != s.ids.size())
      fail("sequence ", i, " has ", s.ids.size(), " token ids but ", s.type_ids.size(),
           " token type ids");
    for (size_t t = 0; t < s.ids.size(); ++t) {
      if (s.ids[t] < 0 || s.ids[t] >= c.vocab_size)
        fail("sequence ", i, ", token ", t, ": id ", s.ids[t], " is outside the vocabulary [0, ",
             c.vocab_size, ")");
    }
    for (size_t t = 0; t < s.type_ids.size(); ++t) {
      if (s.type_ids[t] < 0 || s.type_ids[t] >= std::max<int64_t>(c.type_vocab_size, 1))
        fail("sequence ", i, ", token ", t, ": token type ", s.type_ids[t], " is outside [0, ",
             std::max<int64_t>(c.type_vocab_size, 1), ")");
    }
  }
}

// The kernel state of one Linear op, by precision.
struct LinearKernel {
  std::unique_ptr<kernels::DenseLinearF32> f32;
  std::unique_ptr<kernels::DenseLinearU8S8> s8_dense;
  std::unique_ptr<kernels::PackedS8Sparse> s8_sparse;
};

// Defined below; y = act(x W + b) + residual for any precision.
static void run_linear(Session::Impl& s, const Op& op, const LinearKernel& lk, int64_t K, int64_t N,
                       const float* x, int64_t T, const float* residual, float* y);

struct Session::Impl {
  tbb::task_arena arena;
  MemoryPlan plan;
  std::vector<LinearKernel> linear_of_op;
  std::vector<float> arena_mem;
  std::vector<float> scratch;
  // Per-token quantized activations of the S8 Linear being run.
  std::vector<uint8_t> xq;
  std::vector<float> x_scale;
  std::vector<int32_t> x_zp;
  Session::LinearObserver observer;
  std::vector<int32_t> ids, type_ids, positions;
  std::vector<int64_t> offsets;

  Impl(const Model& m, int threads) : arena(threads), plan(m.graph()) {}
};

Session::Session(std::shared_ptr<const Model> model, int threads) : model_(std::move(model)) {
  if (!model_) fail("no model given to the session");
  if (threads < 0 || threads > kMaxThreads)
    fail("thread count ", threads, " is outside [0, ", kMaxThreads, "] (0 = all cores)");
  threads_ = threads > 0 ? threads : std::max(1u, std::thread::hardware_concurrency());
  impl_ = std::make_unique<Impl>(*model_, threads_);
  const Graph& g = model_->graph();
  impl_->linear_of_op.resize(g.ops.size());
  for (size_t i = 0; i < g.ops.size(); ++i) {
    const Op& op = g.ops[i];
    if (op.kind != OpKind::Linear) continue;
    const int64_t K = g.values[op.in0].width, N = g.values[op.out].width;
    LinearKernel& lk = impl_->linear_of_op[i];
    const float* bias = model_->data<float>(op.w[slot::kBias]);
    switch (op.precision) {
      case Precision::F32:
        lk.f32 = std::make_unique<kernels::DenseLinearF32>(model_->data<float>(op.w[slot::kWeight]),
                                                           bias, K, N, op.act);
        break;
      case Precision::S8Sparse:
        // The file says sparse pays off; on a CPU whose dense u8s8 runs on AMX
        // it pays off only from a higher sparsity (the weights are the same).
        if (!kernels::prefer_dense_u8s8(model_->data<int8_t>(op.w[slot::kWeight]), K, N)) {
          lk.s8_sparse = std::make_unique<kernels::PackedS8Sparse>(kernels::pack_s8_sparse(
              model_->data<int8_t>(op.w[slot::kWeight]), K, N,
              model_->data<float>(op.w[slot::kWeightScale]), bias));
          break;
        }
        [[fallthrough]];
      case Precision::S8Dense:
        lk.s8_dense = std::make_unique<kernels::DenseLinearU8S8>(
            model_->data<int8_t>(op.w[slot::kWeight]), K, N,
            model_->data<float>(op.w[slot::kWeightScale]), bias);
        break;
    }
  }
}

Session::~Session() = default;

void Session::set_linear_observer(LinearObserver f) { impl_->observer = std::move(f); }

size_t Session::arena_bytes() const {
  return (impl_->arena_mem.capacity() + impl_->scratch.capacity()) * sizeof(float);
}

HiddenStates Session::run(const std::vector<Sequence>& batch) {
  check_batch(*model_, batch);
  Impl& s = *impl_;
  const Model& m = *model_;
  const Graph& g = m.graph();

  // Pack the batch: token ids, types and positions back to back.
  s.ids.clear();
  s.type_ids.clear();
  s.positions.clear();
  s.offsets.assign(1, 0);
  for (const Sequence& q : batch) {
    s.ids.insert(s.ids.end(), q.ids.begin(), q.ids.end());
    if (q.type_ids.empty())
      s.type_ids.insert(s.type_ids.end(), q.ids.size(), 0);
    else
      s.type_ids.insert(s.type_ids.end(), q.type_ids.begin(), q.type_ids.end());
    for (size_t t = 0; t < q.ids.size(); ++t) s.positions.push_back(static_cast<int32_t>(t));
    s.offsets.push_back(static_cast<int64_t>(s.ids.size()));
  }
  const int64_t T = static_cast<int64_t>(s.ids.size());
  const int64_t num_seqs = static_cast<int64_t>(batch.size());
  const int64_t max_len = max_sequence_length(batch);

  // Grow, never shrink: the arena is sized by the largest batch seen.
  const size_t need = static_cast<size_t>(T * s.plan.floats_per_token);
  if (s.arena_mem.size() < need) s.arena_mem.resize(need);
  size_t scratch_need = 0;
  for (const Op& op : g.ops) {
    if (op.kind == OpKind::Attention) {
      const int64_t hd = g.values[op.out].width / op.num_heads;
      s.arena.execute([&] {
        scratch_need = std::max(scratch_need,
                                kernels::attention_scratch_floats(max_len, op.num_heads, hd));
      });
    }
  }
  if (s.scratch.size() < scratch_need) s.scratch.resize(scratch_need);

  auto value_ptr = [&](int32_t v) -> float* {
    if (v < 0) return nullptr;
    return s.arena_mem.data() + s.plan.buffer_offset[s.plan.buffer_of_value[v]] * T;
  };

  omp_set_num_threads(threads_);
  s.arena.execute([&] {
    for (size_t i = 0; i < g.ops.size(); ++i) {
      const Op& op = g.ops[i];
      float* out = value_ptr(op.out);
      switch (op.kind) {
        case OpKind::Embedding: {
          const int64_t H = g.values[op.out].width;
          kernels::embedding_f32(s.ids.data(), s.type_ids.data(), s.positions.data(), T, H,
                                 m.data<float>(op.w[slot::kWord]), m.data<float>(op.w[slot::kPosition]),
                                 m.data<float>(op.w[slot::kTokenType]),
                                 m.data<float>(op.w[slot::kEmbGamma]),
                                 m.data<float>(op.w[slot::kEmbBeta]), op.eps, out);
          break;
        }
        case OpKind::Linear:
          if (s.observer) s.observer(i, value_ptr(op.in0), T, g.values[op.in0].width);
          run_linear(s, op, s.linear_of_op[i], g.values[op.in0].width, g.values[op.out].width,
                     value_ptr(op.in0), T, value_ptr(op.in1), out);
          break;
        case OpKind::Attention: {
          const int64_t hd = g.values[op.out].width / op.num_heads;
          kernels::attention_f32(value_ptr(op.in0), s.offsets.data(), num_seqs, op.num_heads, hd,
                                 op.scale, out, s.scratch.data());
          break;
        }
        case OpKind::LayerNorm:
          kernels::layernorm_f32(value_ptr(op.in0), value_ptr(op.in1), m.data<float>(op.w[slot::kGamma]),
                                 m.data<float>(op.w[slot::kBeta]), op.eps, T,
                                 g.values[op.out].width, out);
          break;
      }
    }
  });

  HiddenStates h;
  h.offsets = s.offsets;
  h.width = g.values[g.output].width;
  h.data = value_ptr(g.output);
  return h;
}

static void run_linear(Session::Impl& s, const Op& op, const LinearKernel& lk, int64_t K, int64_t N,
                       const float* x, int64_t T, const float* residual, float* y) {
  if (lk.f32) {
    lk.f32->run(x, T, residual, y);
    return;
  }
  if (s.xq.size() < static_cast<size_t>(T * K)) s.xq.resize(static_cast<size_t>(T * K));
  if (s.x_scale.size() < static_cast<size_t>(T)) {
    s.x_scale.resize(static_cast<size_t>(T));
    s.x_zp.resize(static_cast<size_t>(T));
  }
  if (op.act_scale > 0.f)
    kernels::quantize_rows_u8_static(x, T, K, op.act_scale, op.act_zp, s.xq.data(), s.x_scale.data(),
                                     s.x_zp.data());
  else
    kernels::quantize_rows_u8(x, T, K, s.xq.data(), s.x_scale.data(), s.x_zp.data());
  kernels::QEpilogue ep;
  const bool tanh_gelu = op.act == Activation::GeluTanh;
  ep.gelu = op.act == Activation::GeluErf;
  ep.residual = tanh_gelu ? nullptr : residual;
  if (lk.s8_sparse)
    kernels::spmm_u8s8(*lk.s8_sparse, s.xq.data(), T, K, s.x_scale.data(), s.x_zp.data(), ep, y, N);
  else
    lk.s8_dense->run(s.xq.data(), T, K, s.x_scale.data(), s.x_zp.data(), ep, y, N);
  if (tanh_gelu) {
    kernels::gelu_tanh_f32(y, T * N);
    if (residual) add_rows(y, residual, T * N);
  }
}

std::vector<float> run_reference(const Model& m, const std::vector<Sequence>& batch) {
  check_batch(m, batch);
  const Graph& g = m.graph();
  std::vector<int32_t> ids, types, positions;
  std::vector<int64_t> offsets{0};
  for (const Sequence& q : batch) {
    ids.insert(ids.end(), q.ids.begin(), q.ids.end());
    for (size_t t = 0; t < q.ids.size(); ++t) {
      types.push_back(q.type_ids.empty() ? 0 : q.type_ids[t]);
      positions.push_back(static_cast<int32_t>(t));
    }
    offsets.push_back(static_cast<int64_t>(ids.size()));
  }
  const int64_t T = static_cast<int64_t>(ids.size());
  std::vector<std::vector<float>> vals(g.values.size());
  auto ptr = [&](int32_t v) -> const float* { return v < 0 ? nullptr : vals[v].data(); };
  for (const Op& op : g.ops) {
    const int64_t W = g.values[op.out].width;
    std::vector<float> out(static_cast<size_t>(T * W));
    switch (op.kind) {
      case OpKind::Embedding:
        kernels::ref::embedding_f32(ids.data(), types.data(), positions.data(), T, W,
                                    m.data<float>(op.w[slot::kWord]), m.data<float>(op.w[slot::kPosition]),
                                    m.data<float>(op.w[slot::kTokenType]),
                                    m.data<float>(op.w[slot::kEmbGamma]),
                                    m.data<float>(op.w[slot::kEmbBeta]), op.eps, out.data());
        break;
      case OpKind::Linear: {
        const int64_t K = g.values[op.in0].width;
        if (op.precision == Precision::F32) {
          kernels::ref::linear_f32(ptr(op.in0), m.data<float>(op.w[slot::kWeight]),
                                   m.data<float>(op.w[slot::kBias]), T, K, W, op.act, ptr(op.in1),
                                   out.data());
          break;
        }
        // Both S8 precisions compute the same function; only the kernel differs.
        std::vector<uint8_t> xq(static_cast<size_t>(T * K));
        std::vector<float> xs(static_cast<size_t>(T));
        std::vector<int32_t> xz(static_cast<size_t>(T));
        if (op.act_scale > 0.f)
          kernels::ref::quantize_rows_u8_static(ptr(op.in0), T, K, op.act_scale, op.act_zp, xq.data(),
                                                xs.data(), xz.data());
        else
          kernels::ref::quantize_rows_u8(ptr(op.in0), T, K, xq.data(), xs.data(), xz.data());
        kernels::QEpilogue ep;
        ep.gelu = op.act == Activation::GeluErf;
        ep.residual = op.act == Activation::GeluTanh ? nullptr : ptr(op.in1);
        kernels::ref::linear_u8s8(xq.data(), T, K, K, xs.data(), xz.data(),
                                  m.data<int8_t>(op.w[slot::kWeight]), W,
                                  m.data<float>(op.w[slot::kWeightScale]),
                                  m.data<float>(op.w[slot::kBias]), ep, out.data(), W);
        if (op.act == Activation::GeluTanh) {
          for (auto& v : out) v = kernels::ref::gelu_tanh(v);
          if (op.in1 >= 0) add_rows(out.data(), ptr(op.in1), T * W);
        }
        break;
      }
      case OpKind::Attention:
        kernels::ref::attention_f32(ptr(op.in0), offsets.data(),
                                    static_cast<int64_t>(batch.size()), op.num_heads,
                                    W / op.num_heads, op.scale, out.data());
        break;
      case OpKind::LayerNorm:
        kernels::ref::layernorm_f32(ptr(op.in0), ptr(op.in1), m.data<float>(op.w[slot::kGamma]),
                                    m.data<float>(op.w[slot::kBeta]), op.eps, T, W, out.data());
        break;
    }
    vals[op.out] = std::move(out);
  }
  return vals[g.output];
}

std::vector<std::vector<float>> pool(const HiddenStates& h, Pooling how) {
  std::vector<std::vector<float>> out;
  const size_t n = h.offsets.empty() ? 0 : h.offsets.size() - 1;
  for (size_t i = 0; i < n; ++i) {
    const int64_t b = h.offsets[i], e = h.offsets[i + 1];
    std::vector<float> v(static_cast<size_t>(h.width), 0.f);
    if (how == Pooling::Cls) {
      std::copy(h.row(b), h.row(b) + h.width, v.begin());
    } else {
      // Accumulate in double: sequences can be hundreds of tokens long.
      std::vector<double> acc(static_cast<size_t>(h.width), 0.0);
      for (int64_t t = b; t < e; ++t)
        for (int64_t j = 0; j < h.width; ++j) acc[j] += h.row(t)[j];
      for (int64_t j = 0; j < h.width; ++j) v[j] = static_cast<float>(acc[j] / double(e - b));
    }
    out.push_back(std::move(v));
  }
  return out;
}

void l2_normalize(std::vector<float>& v) {
  double ss = 0;
  for (float x : v) ss += double(x) * x;
  const double n = std::max(std::sqrt(ss), 1e-12);
  for (float& x : v) x = static_cast<float>(x / n);
}

}  // namespace spinel
