// AVX-512 VNNI block-sparse u8 x s8 kernel: 64 tokens x 4 output channels
// per register tile (4 zmm of 16 tokens per channel, 16 accumulators).
//
// Per group of 4 blocks (input channels k0..k3) of a block-row: 4 loads of
// 64 interleaved tokens (one per k), 8 in-lane unpacks giving 4 zmm in the
// VNNI layout (16 tokens x 4 bytes), then 16 vpdpbusd (4 channels x 4 zmm),
// each channel's 4 weights a 32-bit broadcast. Token tails (M not a multiple
// of 64) run the same loop with fewer zmm; stores of a partial 16 are masked
// through a stack tile.
//
// Also holds the EVEX-encoded build of the ymm kernel (spmm_s8_ymm.inc), the
// Avx2Vnni level on AVX-512 VNNI CPUs that lack AVX-VNNI.
//
// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni
// -mavx2 -mfma (per-file flags); only called after active_isa() says so.
// The ISA files instantiate no library templates (no std::min, containers
// are only read through .data()): an out-of-line copy built with these flags
// could be picked by the linker for baseline code (e.g. in a Debug build).
// GCC 12 reports _mm512_undefined_*() inside its own intrinsics (extract,
// convert) as uninitialized (GCC bug 105593); the values are fully defined.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/f32_isa.h"
#include "kernels/cpu/qgemm.h"

#if !defined(__AVX512VNNI__) || !defined(__AVX512BW__) || !defined(__AVX512VL__) || \
    !defined(__AVX512DQ__) || !defined(__FMA__)
#error "spmm_s8_avx512vnni.cpp needs -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx2 -mfma"
#endif

namespace spinel::kernels::qgemm_detail {
namespace {

inline int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// f[c] holds 16 tokens of channel c; afterwards o[j] lane l holds the 4
// channels of token 4 l + j.
inline void transpose_4x4_lanes(const __m512 f[4], __m512 o[4]) {
  const __m512 t0 = _mm512_unpacklo_ps(f[0], f[1]);
  const __m512 t1 = _mm512_unpackhi_ps(f[0], f[1]);
  const __m512 t2 = _mm512_unpacklo_ps(f[2], f[3]);
  const __m512 t3 = _mm512_unpackhi_ps(f[2], f[3]);
  o[0] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t2)));
  o[1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t2)));
  o[2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t1), _mm512_castps_pd(t3)));
  o[3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t1), _mm512_castps_pd(t3)));
}

// Stores the 4 channels of the 16 tokens in o[] (layout of
// transpose_4x4_lanes) to rows row0 .. row0+15 of a [.., ld] 32-bit matrix at
// column n0.
template <typename T>
inline void store_16x4(const __m512 o[4], T* base, int64_t ld) {
  for (int j = 0; j < 4; ++j) {
    _mm_storeu_ps(reinterpret_cast<float*>(base + (0 + j) * ld), _mm512_extractf32x4_ps(o[j], 0));
    _mm_storeu_ps(reinterpret_cast<float*>(base + (4 + j) * ld), _mm512_extractf32x4_ps(o[j], 1));
    _mm_storeu_ps(reinterpret_cast<float*>(base + (8 + j) * ld), _mm512_extractf32x4_ps(o[j], 2));
    _mm_storeu_ps(reinterpret_cast<float*>(base + (12 + j) * ld), _mm512_extractf32x4_ps(o[j], 3));
  }
}

// Residual of the 4 channels of token 4 l + j in lane l of r[j].
inline void load_residual_16x4(const float* base, int64_t ld, int nvalid, __m512 r[4]) {
  if (nvalid == 16) {
    for (int j = 0; j < 4; ++j) {
      __m512 v = _mm512_castps128_ps512(_mm_loadu_ps(base + j * ld));
      v = _mm512_insertf32x4(v, _mm_loadu_ps(base + (4 + j) * ld), 1);
      v = _mm512_insertf32x4(v, _mm_loadu_ps(base + (8 + j) * ld), 2);
      v = _mm512_insertf32x4(v, _mm_loadu_ps(base + (12 + j) * ld), 3);
      r[j] = v;
    }
    return;
  }
  alignas(64) float tmp[4][16] = {};
  for (int q = 0; q < nvalid; ++q) std::memcpy(&tmp[q % 4][4 * (q / 4)], base + q * ld, 16);
  for (int j = 0; j < 4; ++j) r[j] = _mm512_load_ps(tmp[j]);
}

// Epilogue of channels 4br..4br+3 for the 16 tokens tok0 .. tok0+nvalid-1;
// zp16 / xs16: their zero points and scales (16 each, zero-padded, aligned).
// Results go to dst (row of token tok0, column of channel 4br; rows ld
// elements apart): the run_tile staging tile, not y itself.
__attribute__((always_inline)) inline void epilogue_16x4(const SpmmTile& t, int64_t br,
                                                         int64_t tok0, int nvalid,
                                                         const __m512i acc[4],
                                                         const int32_t* zp16,
                                                         const float* xs16, void* dst,
                                                         int64_t ld) {
  const PackedS8Sparse& w = *t.w;
  const int64_t n0 = 4 * br;
  __m512 o[4];
  if (t.out == OutKind::S32Raw) {
    __m512 f[4];
    for (int c = 0; c < 4; ++c) f[c] = _mm512_castsi512_ps(acc[c]);
    transpose_4x4_lanes(f, o);
  } else {
    const QEpilogue& ep = *t.ep;
    const __m512i zp = _mm512_load_si512(zp16);
    const __m512 xs = _mm512_load_ps(xs16);
    __m512 f[4];
    for (int c = 0; c < 4; ++c) {
      const int64_t n = n0 + c;
      const __m512i corr =
          _mm512_sub_epi32(acc[c], _mm512_mullo_epi32(zp, _mm512_set1_epi32(w.wsum[n])));
      const __m512 s = _mm512_mul_ps(xs, _mm512_set1_ps(w.scale_w[n]));
      f[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(corr), s,
                             _mm512_set1_ps(w.bias ? w.bias[n] : 0.f));
    }
    if (ep.gelu) {
      alignas(64) float buf[64];
      for (int c = 0; c < 4; ++c) _mm512_store_ps(buf + 16 * c, f[c]);
      f32::kernel_table_avx512().gelu_erf(buf, 64);
      for (int c = 0; c < 4; ++c) f[c] = _mm512_load_ps(buf + 16 * c);
    }
    transpose_4x4_lanes(f, o);
    if (ep.residual) {
      __m512 r[4];
      load_residual_16x4(ep.residual + tok0 * ep.ld_residual + n0, ep.ld_residual, nvalid, r);
      for (int j = 0; j < 4; ++j) o[j] = _mm512_add_ps(o[j], r[j]);
    }
    if (t.out == OutKind::U8) {
      const __m512 inv = _mm512_set1_ps(1.f / ep.out_scale);
      const __m512 lo = _mm512_set1_ps(-512.f), hi = _mm512_set1_ps(512.f);
      const __m512i zpo = _mm512_set1_epi32(ep.out_zp);
      const __m512i z0 = _mm512_setzero_si512(), z255 = _mm512_set1_epi32(255);
      alignas(16) uint32_t words[4][4];
      for (int j = 0; j < 4; ++j) {
        __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(o[j], inv), lo), hi);
        __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), zpo);
        q = _mm512_min_epi32(_mm512_max_epi32(q, z0), z255);
        _mm_store_si128(reinterpret_cast<__m128i*>(words[j]), _mm512_cvtepi32_epi8(q));
      }
      uint8_t* y = static_cast<uint8_t*>(dst);
      for (int q = 0; q < nvalid; ++q) std::memcpy(y + q * ld, &words[q % 4][q / 4], 4);
      return;
    }
  }
  // F32 or S32Raw: 32-bit outputs.
  uint32_t* y = static_cast<uint32_t*>(dst);
  if (nvalid == 16) {
    store_16x4(o, y, ld);
  } else {
    alignas(64) uint32_t tmp[4][16];
    for (int j = 0; j < 4; ++j) _mm512_store_ps(reinterpret_cast<float*>(tmp[j]), o[j]);
    for (int q = 0; q < nvalid; ++q) std::memcpy(y + q * ld, &tmp[q % 4][4 * (q / 4)], 16);
  }
}

template <int NT>
void run_tile(const SpmmTile& t) {
  const PackedS8Sparse& w = *t.w;
  const int32_t* gp = w.group_ptr.data();
  const int32_t* kidx = w.kidx.data();
  const int8_t* wv = w.w.data();
  const uint8_t* xb = t.x;  // [K][64]
  // Per-token epilogue inputs of this tile, loaded once for all block-rows.
  alignas(64) int32_t zp[64] = {};
  alignas(64) float xs[64] = {};
  if (t.out != OutKind::S32Raw) {
    std::memcpy(zp, t.x_zp + t.m0, sizeof(int32_t) * t.mc);
    std::memcpy(xs, t.x_scale + t.m0, sizeof(float) * t.mc);
  }
  // Results of 4 block-rows (16 channels) are staged here and written to y
  // as whole 64-byte rows (16 bytes for u8): writing y directly in 16-byte
  // pieces walks 64 rows whose stride (3 KB, 12 KB for N = 768, 3072) maps
  // them to the same few L1 sets, and measured up to 2.5x slower.
  alignas(64) uint32_t stage[64 * 16];
  const bool u8 = t.out == OutKind::U8;
  const size_t esz = u8 ? 1 : 4;
  auto flush = [&](int64_t brg, int64_t nbr_in_group) {
    const size_t bytes = esz * 4 * static_cast<size_t>(nbr_in_group);
    uint8_t* y = static_cast<uint8_t*>(t.y);
    const uint8_t* src = reinterpret_cast<const uint8_t*>(stage);
    const int64_t row_bytes = static_cast<int64_t>(esz) * t.ldy;
    const int64_t col = static_cast<int64_t>(esz) * 4 * brg;
    if (!u8 && nbr_in_group == 4) {
      for (int64_t q = 0; q < t.mc; ++q)
        _mm512_storeu_si512(y + (t.m0 + q) * row_bytes + col, _mm512_load_si512(src + q * 64));
    } else {
      for (int64_t q = 0; q < t.mc; ++q)
        std::memcpy(y + (t.m0 + q) * row_bytes + col, src + q * 16 * esz, bytes);
    }
  };
  int64_t brg = t.br0;
  for (int64_t br = t.br0; br < t.br1; ++br) {
    if (br - brg == 4) {
      flush(brg, 4);
      brg = br;
    }
    __m512i acc[4][NT];
    for (int c = 0; c < 4; ++c)
      for (int r = 0; r < NT; ++r) acc[c][r] = _mm512_setzero_si512();
    const int32_t g1 = gp[br + 1];
    for (int32_t g = gp[br]; g < g1; ++g) {
      const int32_t* kg = kidx + 4 * g;
      const __m512i x0 = _mm512_load_si512(xb + static_cast<int64_t>(kg[0]) * 64);
      const __m512i x1 = _mm512_load_si512(xb + static_cast<int64_t>(kg[1]) * 64);
      const __m512i x2 = _mm512_load_si512(xb + static_cast<int64_t>(kg[2]) * 64);
      const __m512i x3 = _mm512_load_si512(xb + static_cast<int64_t>(kg[3]) * 64);
      __m512i z[4];
      const __m512i a = _mm512_unpacklo_epi8(x0, x1), c2 = _mm512_unpacklo_epi8(x2, x3);
      z[0] = _mm512_unpacklo_epi16(a, c2);
      if (NT > 1) z[1] = _mm512_unpackhi_epi16(a, c2);
      if (NT > 2) {
        const __m512i b = _mm512_unpackhi_epi8(x0, x1), d = _mm512_unpackhi_epi8(x2, x3);
        z[2] = _mm512_unpacklo_epi16(b, d);
        if (NT > 3) z[3] = _mm512_unpackhi_epi16(b, d);
      }
      const int8_t* wg = wv + 16 * g;
      for (int c = 0; c < 4; ++c) {
        const __m512i wb = _mm512_set1_epi32(load_i32(wg + 4 * c));
        for (int r = 0; r < NT; ++r) acc[c][r] = _mm512_dpbusd_epi32(acc[c][r], z[r], wb);
      }
    }
    for (int r = 0; r < NT; ++r) {
      const int nvalid = static_cast<int>(t.mc - 16 * r < 16 ? t.mc - 16 * r : 16);
      const __m512i a4[4] = {acc[0][r], acc[1][r], acc[2][r], acc[3][r]};
      uint8_t* dst = reinterpret_cast<uint8_t*>(stage) + esz * (16 * r * 16 + 4 * (br - brg));
      epilogue_16x4(t, br, t.m0 + 16 * r, nvalid, a4, zp + 16 * r, xs + 16 * r, dst, 16);
    }
  }
  if (t.br1 > brg) flush(brg, t.br1 - brg);
}

}  // namespace

void spmm_u8s8_4x1_64x4_avx512vnni(const SpmmTile& t) {
  switch ((t.mc + 15) / 16) {
    case 1: run_tile<1>(t); break;
    case 2: run_tile<2>(t); break;
    case 3: run_tile<3>(t); break;
    default: run_tile<4>(t); break;
  }
}

}  // namespace spinel::kernels::qgemm_detail

namespace spinel::kernels::qgemm_detail {

// Epilogue on a row-major int32 block (the dense oneDNN path); see
// dense_s8_dnnl.cpp. row_tmp holds N + 16 floats (u8 output only).
void epilogue_rows_s32_avx512(const int32_t* acc, int64_t ldacc, int64_t m0, int64_t rows,
                              int64_t N, const float* bias, const float* scale_w,
                              const int32_t* wsum, const float* x_scale, const int32_t* x_zp,
                              const QEpilogue& ep, void* y, int64_t ldy, float* row_tmp) {
  const __m512 lo = _mm512_set1_ps(-512.f), hi = _mm512_set1_ps(512.f);
  const __m512 inv = _mm512_set1_ps(1.f / ep.out_scale);
  const __m512i zpo = _mm512_set1_epi32(ep.out_zp);
  const __m512i z0 = _mm512_setzero_si512(), z255 = _mm512_set1_epi32(255);
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t m = m0 + i;
    const int32_t* a = acc + i * ldacc;
    const __m512i zp = _mm512_set1_epi32(x_zp[m]);
    const __m512 xs = _mm512_set1_ps(x_scale[m]);
    // Through row_tmp when a second pass follows: the residual may alias y.
    const bool two_pass = ep.requantize || ep.residual;
    float* dst = two_pass ? row_tmp : static_cast<float*>(y) + m * ldy;
    for (int64_t n = 0; n < N; n += 16) {
      const __mmask16 k = N - n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (N - n)) - 1);
      const __m512i corr = _mm512_sub_epi32(
          _mm512_maskz_loadu_epi32(k, a + n), _mm512_mullo_epi32(zp, _mm512_maskz_loadu_epi32(k, wsum + n)));
      const __m512 s = _mm512_mul_ps(xs, _mm512_maskz_loadu_ps(k, scale_w + n));
      const __m512 b = bias ? _mm512_maskz_loadu_ps(k, bias + n) : _mm512_setzero_ps();
      _mm512_mask_storeu_ps(dst + n, k, _mm512_fmadd_ps(_mm512_cvtepi32_ps(corr), s, b));
    }
    if (ep.gelu) f32::kernel_table_avx512().gelu_erf(dst, N);
    if (!ep.residual && !ep.requantize) continue;
    const float* res = ep.residual ? ep.residual + m * ep.ld_residual : nullptr;
    for (int64_t n = 0; n < N; n += 16) {
      const __mmask16 k = N - n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (N - n)) - 1);
      __m512 v = _mm512_maskz_loadu_ps(k, dst + n);
      if (res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, res + n));
      if (ep.requantize) {
        v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v, inv), lo), hi);
        __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), zpo);
        q = _mm512_min_epi32(_mm512_max_epi32(q, z0), z255);
        _mm512_mask_cvtepi32_storeu_epi8(static_cast<uint8_t*>(y) + m * ldy + n, k, q);
      } else {
        _mm512_mask_storeu_ps(static_cast<float*>(y) + m * ldy + n, k, v);
      }
    }
  }
}

}  // namespace spinel::kernels::qgemm_detail

// --- EVEX build of the ymm kernel ------------------------------------------
namespace spinel::kernels::qgemm_detail {
namespace {
struct DotEvexYmm {
  using Z = __m256i;
  static Z prep(__m256i z) { return z; }
  static __m256i dot(__m256i acc, const Z& z, const int8_t* w4, const int16_t*) {
    return _mm256_dpbusd_epi32(acc, z, _mm256_set1_epi32(load_i32(w4)));
  }
};
}  // namespace
}  // namespace spinel::kernels::qgemm_detail

#define SPMM_YMM_DOT DotEvexYmm
#define SPMM_YMM_NAME spmm_u8s8_4x1_16x4_avx512vl_vnni
#include "kernels/cpu/spmm_s8_ymm.inc"
