// Plain-loop references of the INT8 Linear contract (see qgemm.h): what every
// optimized path is tested against. Written for clarity, not speed.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/reference/reference.h"

namespace spinel::kernels::ref {

void quantize_rows_u8(const float* x, int64_t M, int64_t K, uint8_t* xq, float* scale,
                      int32_t* zp, const float* mul) {
  std::vector<float> row(static_cast<size_t>(K));
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t k = 0; k < K; ++k) row[k] = mul ? x[m * K + k] * mul[k] : x[m * K + k];
    const float* r = row.data();
    float lo = 0.f, hi = 0.f;
    bool finite = true;
    for (int64_t k = 0; k < K; ++k) {
      lo = std::min(lo, r[k]);
      hi = std::max(hi, r[k]);
      finite &= std::isfinite(r[k]);
    }
    if (!finite) {  // NaN or Inf: the row's outputs become NaN, as in f32
      scale[m] = std::numeric_limits<float>::quiet_NaN();
      zp[m] = 0;
      for (int64_t k = 0; k < K; ++k) xq[m * K + k] = 0;
      continue;
    }
    if (!(hi > lo)) {
      scale[m] = 1.f;
      zp[m] = 0;
      for (int64_t k = 0; k < K; ++k) xq[m * K + k] = 0;
      continue;
    }
    const float s = (hi - lo) / 255.f;
    const float inv = 1.f / s;
    const int32_t z = std::min(std::max(static_cast<int32_t>(std::nearbyint(-lo * inv)), 0), 255);
    scale[m] = s;
    zp[m] = z;
    for (int64_t k = 0; k < K; ++k) {
      const int32_t q = static_cast<int32_t>(std::nearbyint(r[k] * inv)) + z;
      xq[m * K + k] = static_cast<uint8_t>(std::min(std::max(q, 0), 255));
    }
  }
}

void gemm_u8s8_acc(const uint8_t* x, int64_t M, int64_t K, int64_t ldx, const int8_t* W,
                   int64_t N, int32_t* acc) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      int32_t a = 0;
      for (int64_t k = 0; k < K; ++k) a += int32_t{x[m * ldx + k]} * int32_t{W[k * N + n]};
      acc[m * N + n] = a;
    }
}

void linear_u8s8(const uint8_t* x, int64_t M, int64_t K, int64_t ldx, const float* x_scale,
                 const int32_t* x_zp, const int8_t* W, int64_t N, const float* scale_w,
                 const float* bias, const QEpilogue& ep, void* y, int64_t ldy) {
  std::vector<int32_t> acc(static_cast<size_t>(M * N));
  gemm_u8s8_acc(x, M, K, ldx, W, N, acc.data());
  std::vector<int32_t> wsum(N, 0);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) wsum[n] += W[k * N + n];
  QEpilogue e = ep;
  if (e.residual && e.ld_residual == 0) e.ld_residual = N;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      const int32_t corr = acc[m * N + n] - x_zp[m] * wsum[n];
      float v = std::fma(static_cast<float>(corr), x_scale[m] * scale_w[n], bias ? bias[n] : 0.f);
      if (e.gelu) v = gelu_erf(v);
      if (e.residual) v += e.residual[m * e.ld_residual + n];
      if (e.requantize) {
        float t = v * (1.f / e.out_scale);
        t = std::min(std::max(t, -512.f), 512.f);
        // NaN quantizes to 0 (as every kernel does).
        const int32_t q = t != t ? 0 : static_cast<int32_t>(std::nearbyint(t)) + e.out_zp;
        static_cast<uint8_t*>(y)[m * ldy + n] = static_cast<uint8_t>(std::min(std::max(q, 0), 255));
      } else {
        static_cast<float*>(y)[m * ldy + n] = v;
      }
    }
}

}  // namespace spinel::kernels::ref
