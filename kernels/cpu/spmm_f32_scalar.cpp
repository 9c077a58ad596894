// Scalar block-sparse FP32 kernel: plain loops over the packed format and the
// K-major activation block (lanes 1: ldb = mc). The path of CPUs without
// AVX2 (and of SPINEL_ISA=scalar), and the packed format's executable
// definition.
#include <cstdint>
#include <cstring>

#include "kernels/cpu/spmm_f32.h"

namespace spinel::kernels::spmm_f32_detail {
namespace {

constexpr int kTokens = 16;

void pack_scalar(const float* x, int64_t ldx, int64_t mc, int64_t K, float* xb, int64_t ldb) {
  for (int64_t q = 0; q < ldb; ++q)
    for (int64_t k = 0; k < K; ++k) xb[k * ldb + q] = q < mc ? x[q * ldx + k] : 0.f;
}

void tile_scalar(const Tile& t) {
  const PackedF32Sparse& w = *t.w;
  for (int64_t br = t.br0; br < t.br1; ++br) {
    float acc[4][kTokens] = {};
    for (int32_t b = w.row_ptr[br]; b < w.row_ptr[br + 1]; ++b) {
      const float* xr = t.xb + static_cast<int64_t>(w.kidx[b]) * t.ldb;
      const float* wb = w.w.data() + 4 * static_cast<int64_t>(b);
      for (int c = 0; c < 4; ++c)
        for (int64_t q = 0; q < t.mc; ++q) acc[c][q] += wb[c] * xr[q];
    }
    const int64_t n0 = 4 * br;
    const int nc = w.N - n0 < 4 ? static_cast<int>(w.N - n0) : 4;
    float rows[kTokens][4];
    for (int64_t q = 0; q < t.mc; ++q)
      for (int c = 0; c < 4; ++c) rows[q][c] = acc[c][q] + w.bias[n0 + c];
    if (t.act_fn) t.act_fn(&rows[0][0], 4 * t.mc);
    for (int64_t q = 0; q < t.mc; ++q) {
      const int64_t m = t.m0 + q;
      for (int c = 0; c < nc; ++c)
        t.y[m * t.ldy + n0 + c] =
            rows[q][c] + (t.residual ? t.residual[m * t.ld_residual + n0 + c] : 0.f);
    }
  }
}

}  // namespace

const Kernel& kernel_scalar() {
  static const Kernel k{"spmm_f32_4x1_16x4_scalar", 1, kTokens, pack_scalar, tile_scalar};
  return k;
}

}  // namespace spinel::kernels::spmm_f32_detail
