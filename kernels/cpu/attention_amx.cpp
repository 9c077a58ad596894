// Attention block on AMX-BF16 tiles: Q·K^T and P·V as BF16 products with FP32
// accumulation (TDPBF16PS), the softmax in FP32, the same work item and
// output contract as the FP32 attention_block of f32_body.inc.
//
// Why: on the AVX-512 machines we run on, FP32 attention took a quarter of
// BERT-base's time at seq 128, and AVX512_BF16's vdpbf16ps is no way out
// there: measured at half the instruction rate of vfmadd (32 products per
// instruction against 2 x 16), it multiplies no faster than FP32 FMA. One AMX
// tile product does 16 x 16 x 32 in the time of a few FMAs (measured 1.2
// TFLOPS on one core for a 128 x 128 x 64 Q·K^T against ~0.2 for FMA).
//
// Layouts, per work item (one head of one sequence, query rows
// [q_begin, q_end)); L = sequence length, D = head_dim, all zero padded:
//   K2 [Dp/2][Lp] 32-bit words: word (p, j) = bf16 pair (k[j][2p], k[j][2p+1]),
//        the B operand of Q·K^T (rows = pairs of the contracted dimension)
//   V2 [Lp/2][Dv] words: word (p, d) = (v[2p][d], v[2p+1][d]), B of P·V
//   Qb [Lp][Dp] bf16: the item's query rows from q_begin (zero past q_end,
//        up to a multiple of 16), A of Q·K^T
//   S  [16][Lp] f32 scores, then P [16][Lp] bf16 (A of P·V) written over
//        the start of each score row (row by row, after the row was read)
//   O  [4][16][16] f32: up to four output tiles before scaling by 1 / row sum
// with Lp = L rounded up to 32, Dp = D rounded up to 32, Dv = D rounded up to
// 16. Padding keys get zero K and V and zero probability; padding query rows
// are computed and never written.
//
// Accuracy: BF16 keeps 8 significant bits, so Q, K, P and V are each rounded
// with a relative error up to 2^-9; products accumulate in FP32. The test
// (test_kernels.cpp) states the tolerance and why.
//
// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16
// -mamx-tile -mamx-bf16 (per-file flags); called only when
// cpu_has_amx_bf16() says the CPU has them and the OS granted the tile state.
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#pragma GCC diagnostic ignored "-Wunused-function"
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/cpu/f32_isa.h"

// (GCC spells the AMX macros __AMX_TILE__, clang __AMXTILE__.)
#if !(defined(__AMX_TILE__) || defined(__AMXTILE__)) || !(defined(__AMX_BF16__) || defined(__AMXBF16__)) || \
    !defined(__AVX512BF16__) || !defined(__AVX512BW__)
#error "attention_amx.cpp needs -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mamx-tile -mamx-bf16"
#endif

// The FP32 helpers (softmax, exp) in this file's own build.
#define SPINEL_F32_NS amx_bf16_body
#define SPINEL_F32_LANES 16
#define SPINEL_F32_ROWS 8
#include "kernels/cpu/f32_body.inc"

namespace spinel::kernels::f32 {
namespace {

constexpr int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

using AmxLayout = AmxAttentionLayout;

// Palette 1, tiles 0..7 all 16 rows x 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

const TileConfig& tile_config() {
  static const TileConfig cfg = [] {
    TileConfig c;
    for (int t = 0; t < 8; ++t) {
      c.colsb[t] = 64;
      c.rows[t] = 16;
    }
    return c;
  }();
  return cfg;
}

// The first n of 16 lanes (none for n <= 0, all for n >= 16).
inline __mmask16 first_n(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// 32 floats (x[0..n), zeros past n) as 16 words of bf16 pairs (x[2i], x[2i+1]),
// rounded to nearest even.
inline __m512i pairs32(const float* x, int64_t n) {
  const __mmask16 m0 = first_n(n), m1 = first_n(n - 16);
  const __m512 lo = _mm512_maskz_loadu_ps(m0, x);
  const __m512 hi = m1 ? _mm512_maskz_loadu_ps(m1, x + 16) : _mm512_setzero_ps();
  return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

// One pass over the sequence's rows, 16 at a time, converting the head's K,
// V and (for the item's query rows) Q to the BF16 operand layouts:
//   K2: for each 16 keys x 32 dims, 16 rows of pairs transposed to pair-major;
//   V2: rows 2p and 2p + 1 interleaved element by element;
//   Qb: row i - q_begin = pairs of q[i], zero rows up to a multiple of 16.
void build_operands(const AttentionBlock& b, const AmxLayout& a, uint32_t* k2, uint32_t* v2,
                    uint16_t* qb) {
  alignas(64) static const uint16_t kIdx[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,
                                                21, 6, 22, 7, 23, 8,  24, 9,  25, 10, 26,
                                                11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i idx = _mm512_load_si512(kIdx);
  const float* k0 = b.qkv + b.k_col;
  const float* v0 = b.qkv + b.v_col;
  const int64_t q_rows = round_up(b.q_end - b.q_begin, 16);
  for (int64_t j0 = 0; j0 < a.lp; j0 += 16) {
    for (int64_t d0 = 0; d0 < a.dp; d0 += 32) {
      // 16 rows of 16 pair words, transposed as floats (the bits move unchanged).
      amx_bf16_body::vf r[16];
      if (j0 + 16 <= b.seq_len && d0 + 32 <= b.head_dim) {
        // Whole rows of 32 dims (the common case): unrolled, so the 16 rows
        // stay in registers and their loads overlap.
        const float* k = k0 + j0 * b.qkv_stride + d0;
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i)
          r[i] = (amx_bf16_body::vf)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(k + i * b.qkv_stride + 16),
                                                        _mm512_loadu_ps(k + i * b.qkv_stride));
      } else {
        for (int i = 0; i < 16; ++i) {
          const int64_t j = j0 + i;
          r[i] = (amx_bf16_body::vf)(j < b.seq_len ? pairs32(k0 + j * b.qkv_stride + d0, b.head_dim - d0)
                                                   : _mm512_setzero_si512());
        }
      }
      amx_bf16_body::transpose_square(r);
      for (int l = 0; l < 16; ++l)
        _mm512_store_si512(k2 + (d0 / 2 + l) * a.lp + j0, (__m512i)r[l]);
    }
    if (j0 + 16 <= b.seq_len && b.head_dim % 16 == 0) {
      const float* v = v0 + j0 * b.qkv_stride;
      for (int64_t d0 = 0; d0 < b.head_dim; d0 += 16)
#pragma GCC unroll 8
        for (int64_t p = 0; p < 8; ++p) {
          const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(
              _mm512_loadu_ps(v + (2 * p + 1) * b.qkv_stride + d0), _mm512_loadu_ps(v + 2 * p * b.qkv_stride + d0));
          _mm512_store_si512(v2 + (j0 / 2 + p) * a.dv + d0, _mm512_permutexvar_epi16(idx, both));
        }
    } else
    for (int64_t p = j0 / 2; p < j0 / 2 + 8; ++p) {
      const int64_t j = 2 * p;
      for (int64_t d0 = 0; d0 < a.dv; d0 += 16) {
        const __mmask16 m = first_n(b.head_dim - d0);
        const __m512 e = j < b.seq_len ? _mm512_maskz_loadu_ps(m, v0 + j * b.qkv_stride + d0)
                                       : _mm512_setzero_ps();
        const __m512 o = j + 1 < b.seq_len
                             ? _mm512_maskz_loadu_ps(m, v0 + (j + 1) * b.qkv_stride + d0)
                             : _mm512_setzero_ps();
        const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(o, e);  // e | o
        _mm512_store_si512(v2 + p * a.dv + d0, _mm512_permutexvar_epi16(idx, both));
      }
    }
    for (int64_t j = j0 < b.q_begin ? b.q_begin : j0; j < j0 + 16 && j < b.q_end; ++j)
      for (int64_t d0 = 0; d0 < a.dp; d0 += 32)
        _mm512_store_si512(qb + (j - b.q_begin) * a.dp + d0,
                           pairs32(b.qkv + j * b.qkv_stride + b.q_col + d0, b.head_dim - d0));
  }
  for (int64_t r = b.q_end - b.q_begin; r < q_rows; ++r)
    std::memset(qb + r * a.dp, 0, static_cast<size_t>(a.dp) * 2);
}

// 2^t for the softmax, where t <= 0 (a score minus the row's max, times
// log2 e, which the caller folds into its scale): t clamped below at -126 (a
// NaN stays NaN), n = round(t), f = t - n in [-1/2, 1/2], 2^f by a degree-4
// polynomial fitted for minimax relative error on [-1/2, 1/2] by
// tools/fit_exp2.py (2.7e-6 with these float coefficients, far below the
// 2^-9 of the BF16 P it becomes), times 2^n by vscalefps. 8 instructions
// where e^x by range reduction and a degree-5 Taylor polynomial took 12, and
// the float-exact exp_v 18: the softmax was a third of this kernel's time.
inline __m512 exp2_softmax(__m512 t) {
  t = _mm512_max_ps(_mm512_set1_ps(-126.0f), t);  // second operand on NaN: t
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, n);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(0.009570101276040077f), f, _mm512_set1_ps(0.05591786280274391f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.240247443318367f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.6931217908859253f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.9999992847442627f));
  return _mm512_scalef_ps(p, n);
}

// The softmax of R score rows (query positions qi .. qi + R - 1, rows lp
// floats apart), in two passes, the second also writing P. R rows at once
// (interleaved by the compiler): one row's max, exp, sum and 1 / sum are a
// chain of ~160 cycles of latency for ~70 of work, and the core did not
// overlap consecutive rows on its own. Pass 1 takes each row's max: of the
// raw scores when the scale is positive and there is no ALiBi (max(scale
// s) = scale max(s), nothing stored), else of the scaled scores plus ALiBi's
// -slope |j - qi|, stored back in place. Pass 2 computes exp(scale s - scale
// max) (one FMA, or a subtraction of the stored values), sums it, and stores
// it as BF16 (zero past len) over the row's first lp * 2 bytes, each 32
// scores read before the 64 bytes they become are written (at byte 2 j,
// below 4 j). inv[i] = 1 / row i's sum (of the FP32 exponentials).
template <int R>
inline void softmax_to_bf16(float* s, int64_t len, int64_t lp, float scale, float slope, int64_t qi,
                            float* inv) {
  __m512 vmax[R];
  for (int i = 0; i < R; ++i) vmax[i] = _mm512_set1_ps(-__builtin_huge_valf());
  __m512 mul = _mm512_set1_ps(1.0f);
  if (slope == 0.0f && scale > 0.0f) {
    for (int64_t j0 = 0; j0 < len; j0 += 16) {
      const __mmask16 m = first_n(len - j0);
      for (int i = 0; i < R; ++i)
        vmax[i] = _mm512_mask_max_ps(vmax[i], m, vmax[i], _mm512_maskz_loadu_ps(m, s + i * lp + j0));
    }
    mul = _mm512_set1_ps(scale);
  } else {
    const __m512 vscale = _mm512_set1_ps(scale), vslope = _mm512_set1_ps(-slope);
    const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
    for (int64_t j0 = 0; j0 < len; j0 += 16) {
      const __mmask16 m = first_n(len - j0);
      for (int i = 0; i < R; ++i) {
        float* row = s + i * lp;
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, row + j0), vscale);
        if (slope != 0.0f) {
          const __m512 d = _mm512_add_ps(iota, _mm512_set1_ps(static_cast<float>(j0 - qi - i)));
          v = _mm512_add_ps(v, _mm512_mul_ps(_mm512_and_ps(d, absmask), vslope));
        }
        _mm512_storeu_ps(row + j0, v);
        vmax[i] = _mm512_mask_max_ps(vmax[i], m, vmax[i], v);
      }
    }
  }
  // exp(v - max) = 2^(v log2 e - max log2 e): one FMA per vector into exp2.
  mul = _mm512_mul_ps(mul, _mm512_set1_ps(1.44269504088896341f));
  __m512 mx[R], sum[R];
  for (int i = 0; i < R; ++i) {
    mx[i] = _mm512_mul_ps(_mm512_set1_ps(_mm512_reduce_max_ps(vmax[i])), mul);
    sum[i] = _mm512_setzero_ps();
  }
  const int64_t full = len / 32 * 32;  // chunks of 32 scores with no key past len
  int64_t j0 = 0;
  for (; j0 < full; j0 += 32)
    for (int i = 0; i < R; ++i) {
      float* row = s + i * lp;
      const __m512 e0 = exp2_softmax(_mm512_fmsub_ps(_mm512_loadu_ps(row + j0), mul, mx[i]));
      const __m512 e1 = exp2_softmax(_mm512_fmsub_ps(_mm512_loadu_ps(row + j0 + 16), mul, mx[i]));
      sum[i] = _mm512_add_ps(sum[i], _mm512_add_ps(e0, e1));
      _mm512_storeu_si512(reinterpret_cast<uint16_t*>(row) + j0, (__m512i)_mm512_cvtne2ps_pbh(e1, e0));
    }
  for (; j0 < lp; j0 += 32) {
    const __mmask16 m0 = first_n(len - j0), m1 = first_n(len - j0 - 16);
    for (int i = 0; i < R; ++i) {
      float* row = s + i * lp;
      const __m512 x0 = _mm512_maskz_loadu_ps(m0, row + j0);
      const __m512 x1 = _mm512_maskz_loadu_ps(m1, row + j0 + 16);
      const __m512 e0 = _mm512_maskz_mov_ps(m0, exp2_softmax(_mm512_fmsub_ps(x0, mul, mx[i])));
      const __m512 e1 = _mm512_maskz_mov_ps(m1, exp2_softmax(_mm512_fmsub_ps(x1, mul, mx[i])));
      sum[i] = _mm512_add_ps(sum[i], _mm512_add_ps(e0, e1));
      _mm512_storeu_si512(reinterpret_cast<uint16_t*>(row) + j0, (__m512i)_mm512_cvtne2ps_pbh(e1, e0));
    }
  }
  for (int i = 0; i < R; ++i) inv[i] = 1.0f / _mm512_reduce_add_ps(sum[i]);
}

// C tiles 0..nt-1 (nt <= 4) += A x B_t: A (tile 4) loaded from `a` with row
// stride a_stride bytes, B_t (tiles 5, 6, 7, then 5 again) from b + 16 t words
// with row stride b_stride bytes. Tile numbers are immediates, hence the
// unrolled form.
inline void dp_up_to_4(const void* a, int64_t a_stride, const uint32_t* b, int64_t b_stride, int nt) {
  _tile_loadd(4, a, a_stride);
  _tile_loadd(5, b, b_stride);
  _tile_dpbf16ps(0, 4, 5);
  if (nt > 1) {
    _tile_loadd(6, b + 16, b_stride);
    _tile_dpbf16ps(1, 4, 6);
  }
  if (nt > 2) {
    _tile_loadd(7, b + 32, b_stride);
    _tile_dpbf16ps(2, 4, 7);
  }
  if (nt > 3) {
    _tile_loadd(5, b + 48, b_stride);
    _tile_dpbf16ps(3, 4, 5);
  }
}

inline void zero_c_tiles() {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
}

// One block of up to 16 query rows [i0, i0 + nq); qb: its 16 BF16 Q rows.
void query_block(const AttentionBlock& b, const AmxLayout& a, const uint32_t* k2,
                 const uint32_t* v2, const uint16_t* qb, float* s, float* o, int64_t i0, int nq) {
  // S = Q K^T, four 16-key tiles at a time sharing each A load.
  const int64_t key_tiles = round_up(b.seq_len, 16) / 16;
  for (int64_t t0 = 0; t0 < key_tiles; t0 += 4) {
    const int nt = static_cast<int>(key_tiles - t0 < 4 ? key_tiles - t0 : 4);
    zero_c_tiles();
    for (int64_t d0 = 0; d0 < a.dp; d0 += 32)
      dp_up_to_4(qb + d0, a.dp * 2, k2 + (d0 / 2) * a.lp + t0 * 16, a.lp * 4, nt);
    float* st = s + t0 * 16;
    const int64_t sst = a.lp * 4;
    _tile_stored(0, st, sst);
    if (nt > 1) _tile_stored(1, st + 16, sst);
    if (nt > 2) _tile_stored(2, st + 32, sst);
    if (nt > 3) _tile_stored(3, st + 48, sst);
  }

  // Softmax per row in FP32, then P (bf16, zero past len) over the row's
  // start; rows two at a time.
  float inv[16];
  int r = 0;
  for (; r + 4 <= nq; r += 4)
    softmax_to_bf16<4>(s + r * a.lp, b.seq_len, a.lp, b.scale, b.alibi_slope, i0 + r, inv + r);
  for (; r + 2 <= nq; r += 2)
    softmax_to_bf16<2>(s + r * a.lp, b.seq_len, a.lp, b.scale, b.alibi_slope, i0 + r, inv + r);
  if (r < nq) softmax_to_bf16<1>(s + r * a.lp, b.seq_len, a.lp, b.scale, b.alibi_slope, i0 + r, inv + r);
  for (r = nq; r < 16; ++r) std::memset(s + r * a.lp, 0, static_cast<size_t>(a.lp) * 2);

  // O = P V, up to four 16-column output tiles at a time sharing each A load.
  const int64_t d_tiles = a.dv / 16;
  for (int64_t c0 = 0; c0 < d_tiles; c0 += 4) {
    const int nt = static_cast<int>(d_tiles - c0 < 4 ? d_tiles - c0 : 4);
    zero_c_tiles();
    // P rows are lp floats apart (BF16 P over the start of each score row).
    for (int64_t j0 = 0; j0 < round_up(b.seq_len, 32); j0 += 32)
      dp_up_to_4(reinterpret_cast<const uint16_t*>(s) + j0, a.lp * 4, v2 + (j0 / 2) * a.dv + c0 * 16,
                 a.dv * 4, nt);
    // All tiles stored before any is read back: a vector load right behind
    // the tile store it reads waits for that store to complete.
    _tile_stored(0, o, 64);
    if (nt > 1) _tile_stored(1, o + 256, 64);
    if (nt > 2) _tile_stored(2, o + 512, 64);
    if (nt > 3) _tile_stored(3, o + 768, 64);
    for (int r = 0; r < nq; ++r) {
      const __m512 sc = _mm512_set1_ps(inv[r]);
      float* out = b.out + (i0 + r) * b.out_stride + c0 * 16;
      for (int t = 0; t < nt; ++t)
        _mm512_mask_storeu_ps(out + 16 * t, first_n(b.head_dim - (c0 + t) * 16),
                              _mm512_mul_ps(_mm512_load_ps(o + 256 * t + 16 * r), sc));
    }
  }
}

}  // namespace

void attention_block_amx_bf16(const AttentionBlock& b, float* scratch) {
  if (b.q_end <= b.q_begin || b.seq_len <= 0) return;
  const AmxLayout a = amx_attention_layout(b.seq_len, b.head_dim);
  uint32_t* w = reinterpret_cast<uint32_t*>(scratch);
  uint32_t* k2 = w + a.k2;
  uint32_t* v2 = w + a.v2;
  auto* qb = reinterpret_cast<uint16_t*>(w + a.qb);
  float* s = reinterpret_cast<float*>(w + a.s);
  float* o = reinterpret_cast<float*>(w + a.o);
  build_operands(b, a, k2, v2, qb);
  // The tile configuration is per thread and other code (oneDNN) sets its
  // own: load ours for every item, release the tiles after it.
  _tile_loadconfig(&tile_config());
  for (int64_t i0 = b.q_begin; i0 < b.q_end; i0 += 16) {
    const int nq = static_cast<int>(b.q_end - i0 < 16 ? b.q_end - i0 : 16);
    query_block(b, a, k2, v2, qb + (i0 - b.q_begin) * a.dp, s, o, i0, nq);
  }
  _tile_release();
}

}  // namespace spinel::kernels::f32
