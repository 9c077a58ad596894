// Scalar block-sparse u8 x s8 kernel: plain loops over the packed format,
// token-major input. The fallback on CPUs without AVX2, and the packed
// format's executable definition.
#include <cstdint>

#include "kernels/cpu/qgemm.h"

namespace spinel::kernels::qgemm_detail {

void spmm_u8s8_4x1_1x4_scalar(const SpmmTile& t) {
  const PackedS8Sparse& w = *t.w;
  const int32_t* gp = w.group_ptr.data();
  const int32_t* kidx = w.kidx.data();
  const int8_t* wv = w.w.data();
  for (int64_t br = t.br0; br < t.br1; ++br) {
    for (int64_t i = 0; i < t.mc; ++i) {
      const uint8_t* xr = t.x + i * t.ldx;
      int32_t acc[4] = {0, 0, 0, 0};
      for (int32_t g = gp[br]; g < gp[br + 1]; ++g) {
        const int32_t* kg = kidx + 4 * g;
        const int8_t* wg = wv + 16 * g;
        const int32_t x0 = xr[kg[0]], x1 = xr[kg[1]], x2 = xr[kg[2]], x3 = xr[kg[3]];
        for (int c = 0; c < 4; ++c)
          acc[c] += x0 * wg[4 * c] + x1 * wg[4 * c + 1] + x2 * wg[4 * c + 2] + x3 * wg[4 * c + 3];
      }
      const int64_t m = t.m0 + i;
      for (int c = 0; c < 4; ++c) {
        const int64_t n = 4 * br + c;
        if (t.out == OutKind::S32Raw) {
          static_cast<int32_t*>(t.y)[m * t.ldy + n] = acc[c];
          continue;
        }
        const float v = epilogue_value(acc[c], m, n, &w, w.bias, w.scale_w.data(), w.wsum.data(),
                                       t.x_scale, t.x_zp, *t.ep);
        if (t.out == OutKind::U8)
          static_cast<uint8_t*>(t.y)[m * t.ldy + n] = requantize_value(v, *t.ep);
        else
          static_cast<float*>(t.y)[m * t.ldy + n] = v;
      }
    }
  }
}

}  // namespace spinel::kernels::qgemm_detail
