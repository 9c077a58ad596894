// Dynamic per-token u8 quantization of f32 activations (contract in qgemm.h).
//
// The AVX-512 row function is compiled through a function-level target
// attribute (it is the only code here that needs it, and it uses nothing but
// intrinsics and scalar arithmetic, so no inline library code gets built
// for AVX-512); it runs only when active_isa() allows AVX-512.
// GCC 12 flags _mm512_undefined_*() inside its own intrinsics as
// uninitialized when they are inlined into a target("avx512f") function
// (GCC bug 105593); the values are fully defined.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include "kernels/cpu/parallel_util.h"
#include "kernels/cpu/qgemm.h"

namespace spinel::kernels {
namespace {

// Scale and zero point from the row's range (shared by both row functions so
// they agree bit for bit). Returns false for an all-zero row, and for a row
// holding NaN or Inf (`finite` false), whose scale becomes NaN: its outputs
// are NaN, as they would be in f32, instead of an undefined float-to-int cast.
bool row_params(float lo, float hi, bool finite, float* scale, int32_t* zp, float* inv) {
  if (!finite || !std::isfinite(lo) || !std::isfinite(hi)) {
    *scale = std::numeric_limits<float>::quiet_NaN();
    *zp = 0;
    return false;
  }
  if (!(hi > lo)) {
    *scale = 1.f;
    *zp = 0;
    return false;
  }
  const float s = (hi - lo) / 255.f;
  *inv = 1.f / s;
  *scale = s;
  *zp = std::min(std::max(static_cast<int32_t>(std::nearbyint(-lo * *inv)), 0), 255);
  return true;
}

// mul (nullable): per-channel multipliers; the row quantized is r[k] * mul[k]
// (the Linear's input scale, "smoothing").
template <bool MUL>
void quantize_row_scalar(const float* r, int64_t K, uint8_t* q, float* scale, int32_t* zp,
                         const float* mul) {
  auto at = [&](int64_t k) { return MUL ? r[k] * mul[k] : r[k]; };
  float lo = 0.f, hi = 0.f;
  bool nan = false;  // std::min/max skip NaN: look for it separately
  for (int64_t k = 0; k < K; ++k) {
    const float v = at(k);
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    nan |= v != v;
  }
  float inv = 0.f;
  if (!row_params(lo, hi, !nan, scale, zp, &inv)) {
    std::fill(q, q + K, uint8_t{0});
    return;
  }
  for (int64_t k = 0; k < K; ++k) {
    const int32_t v = static_cast<int32_t>(std::nearbyint(at(k) * inv)) + *zp;
    q[k] = static_cast<uint8_t>(std::min(std::max(v, 0), 255));
  }
}

#define SPINEL_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
// 16 values of a row as f32: f32 as they are, f16 converted (exactly); the
// masked forms load 0 past the mask.
SPINEL_AVX512_TARGET inline __m512 row_load(const float* r) { return _mm512_loadu_ps(r); }
SPINEL_AVX512_TARGET inline __m512 row_load(const uint16_t* r) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r)));
}
SPINEL_AVX512_TARGET inline __m512 row_load(__mmask16 m, const float* r) { return _mm512_maskz_loadu_ps(m, r); }
SPINEL_AVX512_TARGET inline __m512 row_load(__mmask16 m, const uint16_t* r) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, r));
}

// T: float, or uint16_t holding f16 (then no MUL).
template <bool MUL, typename T>
SPINEL_AVX512_TARGET void quantize_row_avx512(const T* r, int64_t K, uint8_t* q, float* scale, int32_t* zp,
                                              const float* mul) {
  static_assert(!MUL || std::is_same_v<T, float>, "mul applies to f32 rows only");
  // r[k] * mul[k] with MUL (one vmulps per load: the same float products as
  // the scalar row). (Macros: a lambda would not inherit the target.)
#define SPINEL_QLOAD(k) (MUL ? _mm512_mul_ps(row_load(r + (k)), _mm512_loadu_ps(mul + (k))) : row_load(r + (k)))
#define SPINEL_QLOAD_TAIL(m, k) \
  (MUL ? _mm512_mul_ps(row_load((m), r + (k)), _mm512_maskz_loadu_ps((m), mul + (k))) : row_load((m), r + (k)))
  // Four independent min/max chains: one chain is bound by vminps latency
  // (4 cycles per 16 floats), four keep up with the loads.
  // vminps/vmaxps do not keep a NaN reliably (they return the second
  // operand when either is NaN). Non-finite values are collected instead in
  // fin = fma(v, 0, fin): 0 for finite v, NaN for NaN or Inf, and a NaN
  // stays (one instruction; a compare into a mask and its OR took two, one
  // of them through a general register). Inf also makes lo or hi infinite,
  // which row_params treats the same way.
  __m512 lo4[4], hi4[4], fin4[4];
  const __m512 zero = _mm512_setzero_ps();
  for (int i = 0; i < 4; ++i) lo4[i] = hi4[i] = fin4[i] = zero;
  int64_t k = 0;
  for (; k + 64 <= K; k += 64)
    for (int i = 0; i < 4; ++i) {
      const __m512 v = SPINEL_QLOAD(k + 16 * i);
      lo4[i] = _mm512_min_ps(lo4[i], v);
      hi4[i] = _mm512_max_ps(hi4[i], v);
      fin4[i] = _mm512_fmadd_ps(v, zero, fin4[i]);
    }
  __m512 vlo = _mm512_min_ps(_mm512_min_ps(lo4[0], lo4[1]), _mm512_min_ps(lo4[2], lo4[3]));
  __m512 vhi = _mm512_max_ps(_mm512_max_ps(hi4[0], hi4[1]), _mm512_max_ps(hi4[2], hi4[3]));
  __m512 fin = _mm512_add_ps(_mm512_add_ps(fin4[0], fin4[1]), _mm512_add_ps(fin4[2], fin4[3]));
  for (; k + 16 <= K; k += 16) {
    const __m512 v = SPINEL_QLOAD(k);
    vlo = _mm512_min_ps(vlo, v);
    vhi = _mm512_max_ps(vhi, v);
    fin = _mm512_fmadd_ps(v, zero, fin);
  }
  const __mmask16 tail = static_cast<__mmask16>((1u << (K - k)) - 1);
  if (k < K) {  // masked-off lanes load 0, which the range includes anyway
    const __m512 v = SPINEL_QLOAD_TAIL(tail, k);
    vlo = _mm512_min_ps(vlo, v);
    vhi = _mm512_max_ps(vhi, v);
    fin = _mm512_fmadd_ps(v, zero, fin);
  }
  const float lo = _mm512_reduce_min_ps(vlo), hi = _mm512_reduce_max_ps(vhi);
  const bool finite = _mm512_cmp_ps_mask(fin, fin, _CMP_UNORD_Q) == 0;
  float inv = 0.f;
  if (!row_params(lo, hi, finite, scale, zp, &inv)) {
    for (int64_t i = 0; i < K; ++i) q[i] = 0;
    return;
  }
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512i vzp = _mm512_set1_epi32(*zp), z0 = _mm512_setzero_si512(),
                z255 = _mm512_set1_epi32(255);
  // 64 values at a time: the saturating packs (int32 -> int16 -> u8) clamp to
  // [0, 255] as the min/max below do, in 3 instructions for 4 vectors where
  // 4 vpmovdb took 8; they interleave 4-value groups of the 4 vectors per
  // 128-bit lane, which one dword permutation puts back in order.
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  for (k = 0; k + 64 <= K; k += 64) {
    __m512i a[4];
    for (int i = 0; i < 4; ++i)
      a[i] = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(SPINEL_QLOAD(k + 16 * i), vinv)), vzp);
    const __m512i b = _mm512_packus_epi16(_mm512_packs_epi32(a[0], a[1]), _mm512_packs_epi32(a[2], a[3]));
    _mm512_storeu_si512(q + k, _mm512_permutexvar_epi32(order, b));
  }
  for (; k + 16 <= K; k += 16) {
    __m512i v = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(SPINEL_QLOAD(k), vinv)), vzp);
    v = _mm512_min_epi32(_mm512_max_epi32(v, z0), z255);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + k), _mm512_cvtepi32_epi8(v));
  }
  if (k < K) {
    __m512i v = _mm512_add_epi32(
        _mm512_cvtps_epi32(_mm512_mul_ps(SPINEL_QLOAD_TAIL(tail, k), vinv)), vzp);
    v = _mm512_min_epi32(_mm512_max_epi32(v, z0), z255);
    _mm512_mask_cvtepi32_storeu_epi8(q + k, tail, v);
  }
}

#undef SPINEL_QLOAD
#undef SPINEL_QLOAD_TAIL
#undef SPINEL_AVX512_TARGET

}  // namespace

bool qgemm_detail::token_quant_params(float lo, float hi, bool finite, float* scale, int32_t* zp,
                                      float* inv) {
  return row_params(lo, hi, finite, scale, zp, inv);
}

namespace qgemm_detail {
void quantize_rows_u8_here(const float* x, int64_t M, int64_t K, int64_t ldx, uint8_t* xq, float* scale,
                           int32_t* zp, const float* mul) {
  if (M <= 0 || K <= 0) return;
  const bool wide = active_isa() >= Isa::Avx512Vnni;
  auto row = mul ? (wide ? quantize_row_avx512<true, float> : quantize_row_scalar<true>)
                 : (wide ? quantize_row_avx512<false, float> : quantize_row_scalar<false>);
  for (int64_t m = 0; m < M; ++m) row(x + m * ldx, K, xq + m * K, scale + m, zp + m, mul);
}

void quantize_rows_u8_f16_here(const uint16_t* h, int64_t M, int64_t K, int64_t ldh, uint8_t* xq, float* scale,
                               int32_t* zp) {
  for (int64_t m = 0; m < M; ++m) quantize_row_avx512<false, uint16_t>(h + m * ldh, K, xq + m * K, scale + m, zp + m, nullptr);
}
}  // namespace qgemm_detail

void quantize_rows_u8(const float* x, int64_t M, int64_t K, uint8_t* xq, float* scale,
                      int32_t* zp, int64_t ldx, int64_t ldq, const float* mul) {
  if (M <= 0 || K <= 0) return;
  if (ldx < 0) ldx = K;
  if (ldq < 0) ldq = K;
  const bool wide = active_isa() >= Isa::Avx512Vnni;
  auto row = mul ? (wide ? quantize_row_avx512<true, float> : quantize_row_scalar<true>)
                 : (wide ? quantize_row_avx512<false, float> : quantize_row_scalar<false>);
  if (hot_pool() == Pool::OpenMP) {
    omp_rows(M, rows_per_task(K), [&](int64_t b, int64_t e) {
      for (int64_t m = b; m < e; ++m) row(x + m * ldx, K, xq + m * ldq, scale + m, zp + m, mul);
    });
    return;
  }
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, M, rows_per_task(K)),
                    [&](const tbb::blocked_range<int64_t>& rg) {
                      for (int64_t m = rg.begin(); m < rg.end(); ++m)
                        row(x + m * ldx, K, xq + m * ldq, scale + m, zp + m, mul);
                    });
}

}  // namespace spinel::kernels

namespace spinel::kernels {

namespace {
// Out-of-range values saturate (the calibrated range is a choice); a NaN
// becomes 0 and makes the row's scale NaN, so its outputs are NaN as in f32.
inline uint8_t quantize_static(float v, float inv, int32_t zp, bool* nan) {
  const float q = std::nearbyint(v * inv) + static_cast<float>(zp);
  if (q != q) {
    *nan = true;
    return 0;
  }
  return static_cast<uint8_t>(std::min(std::max(q, 0.f), 255.f));
}

void quantize_row_static(const float* row, int64_t K, float scale, int32_t zp, uint8_t* out,
                         float* row_scale, int32_t* row_zp, const float* mul) {
  const float inv = 1.f / scale;
  bool nan = false;
  if (mul)
    for (int64_t k = 0; k < K; ++k) out[k] = quantize_static(row[k] * mul[k], inv, zp, &nan);
  else
    for (int64_t k = 0; k < K; ++k) out[k] = quantize_static(row[k], inv, zp, &nan);
  *row_scale = nan ? std::numeric_limits<float>::quiet_NaN() : scale;
  *row_zp = zp;
}
}  // namespace

void quantize_rows_u8_static(const float* x, int64_t M, int64_t K, float scale, int32_t zp,
                             uint8_t* xq, float* x_scale, int32_t* x_zp, const float* mul) {
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, M), [&](const tbb::blocked_range<int64_t>& r) {
    for (int64_t m = r.begin(); m < r.end(); ++m)
      quantize_row_static(x + m * K, K, scale, zp, xq + m * K, x_scale + m, x_zp + m, mul);
  });
}

namespace ref {
void quantize_rows_u8_static(const float* x, int64_t M, int64_t K, float scale, int32_t zp,
                             uint8_t* xq, float* x_scale, int32_t* x_zp, const float* mul) {
  for (int64_t m = 0; m < M; ++m)
    quantize_row_static(x + m * K, K, scale, zp, xq + m * K, x_scale + m, x_zp + m, mul);
}
}  // namespace ref

}  // namespace spinel::kernels
