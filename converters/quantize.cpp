#include "converters/quantize.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "kernels/cpu/qgemm.h"
#include "runtime/error.h"

namespace spinel {

void record_f32_block_sparsity(SpnlWriter& w) {
  for (size_t oi = 0; oi < w.graph.ops.size(); ++oi) {
    Op& op = w.graph.ops[oi];
    if (op.kind != OpKind::Linear || op.precision != Precision::F32) continue;
    const int32_t wid = op.w[slot::kWeight];
    const TensorInfo& t = w.tensors().at(static_cast<size_t>(wid));
    if (t.dtype != DType::F32 || t.shape.size() != 2 || t.shape[0] <= 0 || t.shape[1] <= 0) continue;
    op.block_sparsity = static_cast<float>(kernels::block_sparsity_4x1_f32(
        static_cast<const float*>(w.tensor_data(wid)), t.shape[0], t.shape[1]));
  }
}

std::vector<LinearQuantReport> quantize_linears_int8(SpnlWriter& w, const QuantOptions& opts,
                                                     const std::vector<ActRange>* ranges) {
  if (!(opts.sparse_threshold >= 0.0 && opts.sparse_threshold <= 1.0))
    fail("sparse threshold ", opts.sparse_threshold, " is outside [0, 1]");
  if (!(opts.smooth_alpha >= 0.0 && opts.smooth_alpha <= 1.0))
    fail("smoothing alpha ", opts.smooth_alpha, " is outside [0, 1]");
  if (ranges && ranges->size() != w.graph.ops.size())
    fail("calibration ranges cover ", ranges->size(), " ops, the graph has ", w.graph.ops.size());
  std::vector<LinearQuantReport> reports;
  std::set<int32_t> done;
  for (size_t oi = 0; oi < w.graph.ops.size(); ++oi) {
    Op& op = w.graph.ops[oi];
    if (op.kind != OpKind::Linear || op.precision != Precision::F32) continue;
    const int32_t wid = op.w[slot::kWeight];
    if (!done.insert(wid).second)
      fail("Linear '", op.name, "' shares its weight with another Linear; not supported with --quant");
    const TensorInfo t = w.tensors().at(static_cast<size_t>(wid));
    if (t.dtype != DType::F32 || t.shape.size() != 2)
      fail("Linear '", op.name, "': weight '", t.name, "' is not a 2-D f32 tensor");
    const int64_t K = t.shape[0], N = t.shape[1];
    const float* W = static_cast<const float*>(w.tensor_data(wid));

    // Smoothing (quantize.h): f[k] from the input's and the weight row's
    // largest magnitudes; rows and channels with nothing measured keep 1.
    std::vector<float> Ws;  // the smoothed weights, when smoothing
    std::vector<float> in_scale;
    float max_f = 1.f;
    const ActRange* rg = ranges ? &(*ranges)[oi] : nullptr;
    if (opts.smooth && rg && rg->seen && rg->ch_lo.size() == static_cast<size_t>(K)) {
      Ws.assign(W, W + K * N);
      in_scale.assign(static_cast<size_t>(K), 1.f);
      for (int64_t k = 0; k < K; ++k) {
        const double a = std::max(std::fabs(double(rg->ch_lo[k])), std::fabs(double(rg->ch_hi[k])));
        double wmax_k = 0;
        for (int64_t n = 0; n < N; ++n) wmax_k = std::max(wmax_k, std::fabs(double(W[k * N + n])));
        if (!(a > 0) || !(wmax_k > 0) || !std::isfinite(a) || !std::isfinite(wmax_k)) continue;
        const double f = std::clamp(std::pow(a, opts.smooth_alpha) / std::pow(wmax_k, 1.0 - opts.smooth_alpha),
                                    1e-6, 1e6);
        const float ff = static_cast<float>(f);
        for (int64_t n = 0; n < N; ++n) Ws[k * N + n] = W[k * N + n] * ff;
        in_scale[static_cast<size_t>(k)] = 1.f / ff;
        max_f = std::max(max_f, ff);
      }
      W = Ws.data();
    }

    // Symmetric per output channel: the largest |w| of column n maps to 127.
    std::vector<float> scale(static_cast<size_t>(N), 0.f);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t n = 0; n < N; ++n) scale[n] = std::max(scale[n], std::fabs(W[k * N + n]));
    float wmax = 0.f;
    for (float& s : scale) {
      wmax = std::max(wmax, s);
      s = s > 0.f ? s / 127.f : 1.f;  // an all-zero channel stays zero with any scale
    }
    std::vector<int8_t> q(static_cast<size_t>(K * N));
    double max_err = 0;
    for (int64_t k = 0; k < K; ++k)
      for (int64_t n = 0; n < N; ++n) {
        const float v = std::nearbyint(W[k * N + n] / scale[n]);
        q[k * N + n] = static_cast<int8_t>(std::clamp(v, -127.f, 127.f));
        max_err = std::max(max_err, double(std::fabs(W[k * N + n] - scale[n] * q[k * N + n])));
      }

    LinearQuantReport r;
    r.name = op.name;
    r.K = K;
    r.N = N;
    r.max_rel_error = wmax > 0 ? max_err / wmax : 0;
    const bool blockable = K % 4 == 0 && N % 4 == 0;
    r.block_sparsity = blockable ? kernels::block_sparsity_4x1(q.data(), K, N) : 0.0;
    r.precision = opts.sparse_auto && blockable && r.block_sparsity >= opts.sparse_threshold
                      ? Precision::S8Sparse
                      : Precision::S8Dense;

    w.set_tensor(wid, DType::I8, {K, N}, q.data(), q.size());
    op.w[slot::kWeightScale] =
        w.add_tensor(t.name + ".scale", DType::F32, {N}, scale.data(), scale.size() * sizeof(float));
    if (!in_scale.empty()) {
      op.w[slot::kInScale] = w.add_tensor(t.name + ".in_scale", DType::F32, {K}, in_scale.data(),
                                          in_scale.size() * sizeof(float));
      r.smoothed = true;
      r.max_smooth = max_f;
    }
    op.precision = r.precision;
    op.block_sparsity = blockable ? static_cast<float>(r.block_sparsity) : -1.f;
    reports.push_back(r);
  }
  return reports;
}

}  // namespace spinel
