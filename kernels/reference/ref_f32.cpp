// Plain-loop definitions of every FP32 op: the meaning the optimised kernels
// are tested against. Sums are accumulated in double so the reference itself
// contributes no visible rounding error.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#include <Eigen/Dense>

#include "kernels/reference/reference.h"

namespace spinel::kernels::ref {
namespace {

double apply_act(double v, Activation act) {
  switch (act) {
    case Activation::GeluErf: return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
    case Activation::GeluTanh:
      return 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
    case Activation::Tanh: return std::tanh(v);
    case Activation::None: break;
  }
  return v;
}

}  // namespace

float tanh_f32(float x) { return static_cast<float>(apply_act(x, Activation::Tanh)); }

void pool_f32(const float* x, const int64_t* seq_offsets, int64_t num_seqs, int64_t width,
              PoolKind kind, float* out) {
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int64_t b = seq_offsets[s], e = seq_offsets[s + 1];
    for (int64_t j = 0; j < width; ++j) {
      if (kind == PoolKind::Cls) {
        out[s * width + j] = x[b * width + j];
        continue;
      }
      double acc = 0.0;
      for (int64_t t = b; t < e; ++t) acc += x[t * width + j];
      out[s * width + j] = static_cast<float>(acc / static_cast<double>(e - b));
    }
  }
}

float gelu_erf(float x) { return static_cast<float>(apply_act(x, Activation::GeluErf)); }
float gelu_tanh(float x) { return static_cast<float>(apply_act(x, Activation::GeluTanh)); }

void layernorm_f32(const float* x, const float* residual, const float* gamma, const float* beta,
                   float eps, int64_t rows, int64_t cols, float* y) {
  std::vector<double> v(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0.0;
    for (int64_t c = 0; c < cols; ++c) {
      v[c] = static_cast<double>(x[r * cols + c]) + (residual ? residual[r * cols + c] : 0.0f);
      mean += v[c];
    }
    mean /= static_cast<double>(cols);
    double var = 0.0;
    for (int64_t c = 0; c < cols; ++c) var += (v[c] - mean) * (v[c] - mean);
    var /= static_cast<double>(cols);
    const double rstd = 1.0 / std::sqrt(var + static_cast<double>(eps));
    for (int64_t c = 0; c < cols; ++c)
      y[r * cols + c] = static_cast<float>((v[c] - mean) * rstd * gamma[c] + beta[c]);
  }
}

void embedding_f32(const int32_t* ids, const int32_t* type_ids, const int32_t* positions,
                   int64_t tokens, int64_t hidden, const float* word, const float* pos,
                   const float* type, const float* gamma, const float* beta, float eps,
                   float* out) {
  std::vector<float> sum(static_cast<size_t>(hidden));
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t c = 0; c < hidden; ++c) {
      // Summed in float, in the same order as the op, so the reference sees
      // the same LayerNorm input.
      float v = word[static_cast<int64_t>(ids[t]) * hidden + c];
      if (pos) v += pos[static_cast<int64_t>(positions ? positions[t] : t) * hidden + c];
      if (type) v += type[static_cast<int64_t>(type_ids ? type_ids[t] : 0) * hidden + c];
      sum[c] = v;
    }
    layernorm_f32(sum.data(), nullptr, gamma, beta, eps, 1, hidden, out + t * hidden);
  }
}

void attention_f32(const float* qkv, const int64_t* seq_offsets, int64_t num_seqs,
                   int64_t num_heads, int64_t head_dim, float scale, float* out,
                   const float* alibi_slopes) {
  const int64_t hidden = num_heads * head_dim, stride = 3 * hidden;
  std::vector<double> p;
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int64_t first = seq_offsets[s], len = seq_offsets[s + 1] - first;
    p.resize(static_cast<size_t>(len));
    for (int64_t h = 0; h < num_heads; ++h) {
      for (int64_t i = 0; i < len; ++i) {
        const float* q = qkv + (first + i) * stride + h * head_dim;
        double mx = -HUGE_VAL;
        for (int64_t j = 0; j < len; ++j) {
          const float* k = qkv + (first + j) * stride + hidden + h * head_dim;
          double dot = 0.0;
          for (int64_t d = 0; d < head_dim; ++d) dot += static_cast<double>(q[d]) * k[d];
          p[j] = dot * scale;
          if (alibi_slopes)
            p[j] -= static_cast<double>(alibi_slopes[h]) * static_cast<double>(std::llabs(j - i));
          mx = std::max(mx, p[j]);
        }
        double sum = 0.0;
        for (int64_t j = 0; j < len; ++j) {
          p[j] = std::exp(p[j] - mx);
          sum += p[j];
        }
        float* o = out + (first + i) * hidden + h * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) {
          double acc = 0.0;
          for (int64_t j = 0; j < len; ++j)
            acc += p[j] * qkv[(first + j) * stride + 2 * hidden + h * head_dim + d];
          o[d] = static_cast<float>(acc / sum);
        }
      }
    }
  }
}

void gate_f32(const float* x, int64_t rows, int64_t n, Gate gate, const float* residual, float* y) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < n; ++c) {
      const double a = x[r * 2 * n + c], g = x[r * 2 * n + n + c];
      double v = 0.0;
      switch (gate) {
        case Gate::Geglu: v = apply_act(a, Activation::GeluErf) * g; break;
        case Gate::None: v = a; break;
      }
      y[r * n + c] = static_cast<float>(v + (residual ? residual[r * n + c] : 0.0f));
    }
}

void linear_f32(const float* x, const float* weight, const float* bias, int64_t M, int64_t K,
                int64_t N, Activation act, const float* residual, float* y) {
  // The product in double through Eigen (blocked, vectorized: whole models
  // stay practical on this backend), exact enough that the reference adds no
  // visible rounding of its own.
  using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Map<const MatF> X(x, M, K), W(weight, K, N);
  const MatD acc = X.cast<double>() * W.cast<double>();
  // residual is read before y[m, n] is written, so y may alias it.
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n)
      y[m * N + n] = static_cast<float>(apply_act(acc(m, n) + (bias ? bias[n] : 0.0), act) +
                                        (residual ? residual[m * N + n] : 0.0f));
}

}  // namespace spinel::kernels::ref
