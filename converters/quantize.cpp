#include "converters/quantize.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "kernels/cpu/qgemm.h"
#include "runtime/error.h"

namespace spinel {

void record_f32_block_sparsity(SpnlWriter& w) {
  for (Op& op : w.graph.ops) {
    if (op.kind != OpKind::Linear || op.precision != Precision::F32) continue;
    const int32_t wid = op.w[slot::kWeight];
    const TensorInfo& t = w.tensors().at(static_cast<size_t>(wid));
    if (t.dtype != DType::F32 || t.shape.size() != 2 || t.shape[0] <= 0 || t.shape[1] <= 0) continue;
    op.block_sparsity = static_cast<float>(kernels::block_sparsity_4x1_f32(
        static_cast<const float*>(w.tensor_data(wid)), t.shape[0], t.shape[1]));
  }
}

std::vector<LinearQuantReport> quantize_linears_int8(SpnlWriter& w, const QuantOptions& opts) {
  if (!(opts.sparse_threshold >= 0.0 && opts.sparse_threshold <= 1.0))
    fail("sparse threshold ", opts.sparse_threshold, " is outside [0, 1]");
  std::vector<LinearQuantReport> reports;
  std::set<int32_t> done;
  for (Op& op : w.graph.ops) {
    if (op.kind != OpKind::Linear || op.precision != Precision::F32) continue;
    const int32_t wid = op.w[slot::kWeight];
    if (!done.insert(wid).second)
      fail("Linear '", op.name, "' shares its weight with another Linear; not supported with --quant");
    const TensorInfo t = w.tensors().at(static_cast<size_t>(wid));
    if (t.dtype != DType::F32 || t.shape.size() != 2)
      fail("Linear '", op.name, "': weight '", t.name, "' is not a 2-D f32 tensor");
    const int64_t K = t.shape[0], N = t.shape[1];
    const float* W = static_cast<const float*>(w.tensor_data(wid));

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
    op.precision = r.precision;
    op.block_sparsity = blockable ? static_cast<float>(r.block_sparsity) : -1.f;
    reports.push_back(r);
  }
  return reports;
}

}  // namespace spinel
