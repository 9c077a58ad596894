// AVX-512 VNNI block-sparse u8 x s8 kernel: 64 tokens x 4 output channels
// per register tile (4 zmm of 16 tokens per channel, 16 accumulators).
//
// Per group of 4 blocks (input channels k0..k3) of a block-row: 4 loads of
// 64 interleaved tokens (one per k), 8 in-lane unpacks giving 4 zmm in the
// VNNI layout (16 tokens x 4 bytes), then 16 vpdpbusd (4 channels x 4 zmm),
// each channel's 4 weights a 32-bit broadcast. Token tails (M not a multiple
// of 64) run the same loop with fewer zmm. The epilogue stages 16 channels x
// 64 tokens channel-major, then writes token rows after a 16x16 transpose
// (flush_stage), or copies the stage rows out as they are (the f32 blocked
// output of qgemm.h's Linear chain). This file also holds the AVX-512
// activation interleave and the chain's quantization passes.
//
// Also holds the EVEX-encoded build of the ymm kernel (spmm_s8_ymm.inc), the
// Avx2Vnni level on AVX-512 VNNI CPUs that lack AVX-VNNI.
//
// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni
// -mavx512bf16 -mavx2 -mfma (per-file flags); only called after active_isa()
// says so. The one BF16 instruction (the Bf16 output's rounding) runs only
// where run_spmm checked cpu_has_avx512_bf16().
// The ISA files instantiate no library templates (no std::min, containers
// are only read through .data()): an out-of-line copy built with these flags
// could be picked by the linker for baseline code (e.g. in a Debug build).
// GCC 12 reports _mm512_undefined_*() inside its own intrinsics (extract,
// convert) as uninitialized (GCC bug 105593); the values are fully defined.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wunused-function"  // f32_body.inc's kernels this file does not call
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/f32_isa.h"
#include "kernels/cpu/qgemm.h"

// The FP32 row kernels' GELU, inline in this file's build (the same code as
// the AVX-512 table's, so the same bits): the chain's flush applies it to
// each value between its load and its store.
#define SPINEL_F32_NS avx512_spmm_body
#define SPINEL_F32_LANES 16
#define SPINEL_F32_ROWS 8
#include "kernels/cpu/f32_body.inc"

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

// A u8 output (QEpilogue::requantize): v / out_scale rounded to nearest
// even, plus out_zp, clamped to [0, 255] (v clamped to +-512 steps first, so
// the conversion never overflows), the contract of requantize_value. The
// constants are made once per call, outside the loops.
struct Requant {
  __m512 inv;
  __m512i zp;
  explicit Requant(const QEpilogue& ep) : inv(_mm512_set1_ps(1.f / ep.out_scale)), zp(_mm512_set1_epi32(ep.out_zp)) {}
  __m512i operator()(__m512 v) const {
    v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v, inv), _mm512_set1_ps(-512.f)), _mm512_set1_ps(512.f));
    const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), zp);
    return _mm512_min_epi32(_mm512_max_epi32(q, _mm512_setzero_si512()), _mm512_set1_epi32(255));
  }
};

// In-register transpose of a 16 x 16 block of 32-bit values: r[i][j] ->
// r[j][i]. 64 shuffles: 32-bit and 64-bit unpacks within 128-bit lanes, then
// two rounds of 128-bit lane shuffles.
inline void transpose_16x16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // u[4g + j], lane L: rows 4g..4g+3 of column 4L + j.
  __m512 u[16];
  for (int g = 0; g < 4; ++g) {
    const __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * g + 2]), d = _mm512_castps_pd(t[4 * g + 3]);
    u[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int j = 0; j < 4; ++j) {
    const __m512 a = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x44);
    const __m512 b = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xEE);
    const __m512 c = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x44);
    const __m512 d = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xEE);
    r[0 + j] = _mm512_shuffle_f32x4(a, c, 0x88);
    r[4 + j] = _mm512_shuffle_f32x4(a, c, 0xDD);
    r[8 + j] = _mm512_shuffle_f32x4(b, d, 0x88);
    r[12 + j] = _mm512_shuffle_f32x4(b, d, 0xDD);
  }
}

// The stage's copy into the f32 blocked output (OutKind::F32Blocked, the
// Linear chain): the stage rows are the blocked layout's rows already
// (256-byte copies, no transposes; residuals are not allowed here), and each
// token's range is folded into the item's as the values pass. GELU (Gelu: 0
// none, 1 erf, 2 the coarse polynomial; on the token columns this tile
// computed) and the next Linear's input scale (out_mul, when Mul) are applied
// as each value passes, so the values and ranges are those its quantization
// reads: one load and one store per vector. Channels outside, the tile's
// token vectors inside: NT independent range chains, one out_mul broadcast per
// channel, and the flags and out_mul fixed for the whole loop (read through
// the epilogue, they were loaded again after every store). Out of
// flush_stage, this loop also left the token-row path below better compiled:
// BERT-base 90% at 128 tokens, its attention-output Linear ~0.48 -> 0.42 ms.
// NanCheck false: the tile's values cannot be NaN (blocked_nan_free), so the
// NaN accumulators are left out (one FMA of ~20 vector instructions per
// value with the coarse GELU); an infinity still shows in lo or hi, which
// the quantization treats as not finite too.
template <int NT, int Gelu, bool Mul, bool NanCheck>
void flush_blocked(const SpmmTile& t, int64_t n0, int nch, const float (*stage)[64], const float* out_mul) {
  namespace body = f32::avx512_spmm_body;
  float* y = static_cast<float*>(t.y) + ((t.m0 / t.step) * t.ldy + n0) * 64;
  BlockedRange& rg = *t.range;
  // A token's NaN (or infinity: its quantization treats both alike, as not
  // finite) is caught by one FMA per vector, v * 0 + z staying NaN from then
  // on, and tested once per call.
  const __m512 zero = _mm512_setzero_ps();
  __m512 lo[NT], hi[NT], z[NT];
  for (int r = 0; r < NT; ++r) {
    lo[r] = _mm512_load_ps(rg.lo + 16 * r);
    hi[r] = _mm512_load_ps(rg.hi + 16 * r);
    z[r] = zero;
  }
  for (int c = 0; c < nch; ++c) {
    const __m512 m = Mul ? _mm512_set1_ps(out_mul[n0 + c]) : zero;
    for (int r = 0; r < NT; ++r) {
      __m512 v = _mm512_load_ps(&stage[c][16 * r]);
      if (Gelu == 1) v = (__m512)body::gelu_erf_v((body::vf)v);
      // (stage: v / 2; finite where NanCheck is false, blocked_nan_free)
      if (Gelu == 2) v = (__m512)body::gelu_erf_q_half_v<NanCheck>((body::vf)v);
      if (Mul) v = _mm512_mul_ps(v, m);
      _mm512_storeu_ps(y + 64 * c + 16 * r, v);
      lo[r] = _mm512_min_ps(lo[r], v);
      hi[r] = _mm512_max_ps(hi[r], v);
      if (NanCheck) z[r] = _mm512_fmadd_ps(v, zero, z[r]);
    }
    // Tokens past the tile's (the stage's zeros): written as 0, no range to
    // fold (the quantization reads lanes below the tile's count only).
    for (int r = NT; r < 4; ++r) _mm512_storeu_ps(y + 64 * c + 16 * r, zero);
  }
  for (int r = 0; r < NT; ++r) {
    _mm512_store_ps(rg.lo + 16 * r, lo[r]);
    _mm512_store_ps(rg.hi + 16 * r, hi[r]);
    if (NanCheck) rg.nan |= static_cast<uint64_t>(_mm512_cmp_ps_mask(z[r], z[r], _CMP_UNORD_Q)) << (16 * r);
  }
}

// The token-row half of flush_stage: per 16 tokens a 16 x 16 transpose of
// the stage to token-major rows of up to 16 channels (from n0, chmask), the
// residual added with one load per token (Res), then one (masked) store per
// token into y, f32 or quantized to u8 (U8, ep.out_scale and out_zp). The
// stores are unrolled with fixed register indices: a loop over the valid
// rows by a run-time count had kept the transposed rows in memory (16 more
// stores and loads per 16 tokens).
// Bf16: no residual; each token's 16 channels rounded to BF16 (nearest
// even) into uint16_t y (OutKind::Bf16).
template <int NT, bool U8, bool Res, bool Bf16, bool Full>
void flush_rows(const SpmmTile& t, int64_t n0, __mmask16 chmask, const float (*stage)[64]) {
  const QEpilogue& ep = *t.ep;
  const float* residual = ep.residual;
  const int64_t ldr = ep.ld_residual, ldy = t.ldy;
  const Requant requant(ep);
  for (int r = 0; r < NT; ++r) {
    const int nvalid = static_cast<int>(t.mc - 16 * r < 16 ? t.mc - 16 * r : 16);
    __m512 v[16];
    for (int c = 0; c < 16; ++c) v[c] = _mm512_load_ps(&stage[c][16 * r]);
    transpose_16x16(v);
    const int64_t mbase = t.m0 + 16 * r;
#pragma GCC unroll 16
    for (int q = 0; q < 16; ++q) {
      if (q >= nvalid) break;
      const int64_t m = mbase + q;
      __m512 o = v[q];
      if (Res)
        o = _mm512_add_ps(o, Full ? _mm512_loadu_ps(residual + m * ldr + n0)
                                  : _mm512_maskz_loadu_ps(chmask, residual + m * ldr + n0));
      if (Bf16 && Full)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<uint16_t*>(t.y) + m * ldy + n0),
                            (__m256i)_mm512_cvtneps_pbh(o));
      else if (Bf16)
        _mm256_mask_storeu_epi16(static_cast<uint16_t*>(t.y) + m * ldy + n0, chmask,
                                 (__m256i)_mm512_cvtneps_pbh(o));
      else if (U8 && Full)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint8_t*>(t.y) + m * ldy + n0),
                         _mm512_cvtepi32_epi8(requant(o)));
      else if (U8)
        _mm512_mask_cvtepi32_storeu_epi8(static_cast<uint8_t*>(t.y) + m * ldy + n0, chmask, requant(o));
      else if (Full)
        _mm512_storeu_ps(static_cast<float*>(t.y) + m * ldy + n0, o);
      else
        _mm512_mask_storeu_ps(static_cast<float*>(t.y) + m * ldy + n0, chmask, o);
    }
  }
}

// Bf16Pairs (QEpilogue::k_pairs): the stage's channel rows two at a time as
// BF16 pair words, channel n0 + c in the low half and n0 + c + 1 in the high
// one, into pair row (n0 + c - n_base) / 2 of y from token m0. The stage is
// channel-major already: per 16 tokens one conversion of both rows and one
// word interleave, where token rows took a 16 x 16 transpose (and the AMX
// attention transposed them back). The rounding is flush_rows' Bf16 one.
template <int NT>
void flush_pairs(const SpmmTile& t, int64_t n0, int nch, const float (*stage)[64]) {
  const __m512i idx = _mm512_load_si512(f32::kPairInterleave);
  uint32_t* y = static_cast<uint32_t*>(t.y) + t.m0;
  for (int c = 0; c + 1 < nch; c += 2) {
    uint32_t* row = y + (n0 + c - t.n_base) / 2 * t.ldy;
    for (int r = 0; r < NT; ++r) {
      const int64_t left = t.mc - 16 * r;
      const __mmask16 m = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
      const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(_mm512_load_ps(&stage[c + 1][16 * r]),
                                                        _mm512_load_ps(&stage[c][16 * r]));
      _mm512_mask_storeu_epi32(row + 16 * r, m, _mm512_permutexvar_epi16(idx, both));
    }
  }
}

// Bf16TokenPairs (QEpilogue::v_pairs): per 32 tokens, each of the stage's
// 16 channel rows converted to 16 words of token pairs (the BF16 values of
// tokens 2g and 2g + 1, in order, are word g already), then one 16 x 16
// transpose of words gives pair rows of 16 channels, stored from channel
// n0 - n_base of pair row m0 / 2 + g (m0 and the tile's tokens even: run_spmm).
// Half the transposes of flush_rows' Bf16 rows, and the AMX attention need
// not interleave V's rows into pairs itself.
template <int NT>
void flush_token_pairs(const SpmmTile& t, int64_t n0, int nch, const float (*stage)[64]) {
  uint32_t* y = static_cast<uint32_t*>(t.y) + (t.m0 / 2) * t.ldy + (n0 - t.n_base);
  const __mmask16 chmask = nch >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << nch) - 1);
  for (int q = 0; 2 * q < NT; ++q) {
    __m512 v[16];
    for (int c = 0; c < 16; ++c)  // (the stage's tokens past 16 NT are zeros)
      v[c] = (__m512)_mm512_cvtne2ps_pbh(_mm512_load_ps(&stage[c][32 * q + 16]), _mm512_load_ps(&stage[c][32 * q]));
    transpose_16x16(v);
    const int64_t pairs = (t.mc - 32 * q + 1) / 2;
#pragma GCC unroll 16
    for (int g = 0; g < 16; ++g) {
      if (g >= pairs) break;
      _mm512_mask_storeu_epi32(y + (16 * q + g) * t.ldy, chmask, (__m512i)v[g]);
    }
  }
}

// flush_rows for the tile's output kind (token rows: f32, u8 or BF16, the
// residual where there is one).
template <int NT, bool Full>
void flush_rows_kind(const SpmmTile& t, int64_t n0, __mmask16 chmask, const float (*stage)[64]) {
  if (t.out == OutKind::Bf16) {  // (no residual: run_spmm)
    flush_rows<NT, false, false, true, Full>(t, n0, chmask, stage);
    return;
  }
  const bool u8 = t.out == OutKind::U8;
  const bool res = t.ep->residual != nullptr && (u8 || t.out == OutKind::F32);
  if (u8)
    res ? flush_rows<NT, true, true, false, Full>(t, n0, chmask, stage)
        : flush_rows<NT, true, false, false, Full>(t, n0, chmask, stage);
  else
    res ? flush_rows<NT, false, true, false, Full>(t, n0, chmask, stage)
        : flush_rows<NT, false, false, false, Full>(t, n0, chmask, stage);
}

// The second half of the epilogue (the first, channel-major, is in run_tile)
// for the staged 16 channels (4 block-rows from brg) x 64 tokens: into the
// chain's f32 blocked output (flush_blocked, which applies GELU itself), or
// GELU over the staged values (element-wise, so the layout does not matter)
// and then token rows (flush_rows). Writing y in whole 64-byte rows matters:
// y's row stride (3 KB for N = 768) maps 16-byte pieces of 64 rows onto the
// same few L1 sets.
template <int NT>
void flush_stage(const SpmmTile& t, int64_t brg, int64_t nbr, float (*stage)[64], bool nan_free) {
  const int64_t n0 = 4 * brg;
  const int nch = static_cast<int>(4 * nbr);
  const __mmask16 chmask = static_cast<__mmask16>((1u << nch) - 1);
  const QEpilogue& ep = *t.ep;
  // GELU on the token columns this tile computed (16 NT of 64; the others
  // stay 0 = GELU(0)): at 16 tokens, GELU over all 64 took 11% of a run.
  // (The blocked output applies it in flush_blocked.)
  if (t.out != OutKind::S32Raw && t.out != OutKind::F32Blocked && ep.gelu) {
    const auto& tab = f32::kernel_table_avx512();
    void (*const gelu)(float*, int64_t) = ep.gelu_coarse ? tab.gelu_erf_q : tab.gelu_erf;
    if (NT == 4)
      gelu(&stage[0][0], static_cast<int64_t>(nch) * 64);
    else
      for (int c = 0; c < nch; ++c) gelu(&stage[c][0], 16 * NT);
  }
  if (t.out == OutKind::F32Blocked) {
    const int g = !ep.gelu ? 0 : ep.gelu_coarse ? 2 : 1;
    const float* mul = ep.out_mul;
    switch (g * 4 + (mul != nullptr) * 2 + nan_free) {
      case 0: flush_blocked<NT, 0, false, true>(t, n0, nch, stage, mul); break;
      case 1: flush_blocked<NT, 0, false, false>(t, n0, nch, stage, mul); break;
      case 2: flush_blocked<NT, 0, true, true>(t, n0, nch, stage, mul); break;
      case 3: flush_blocked<NT, 0, true, false>(t, n0, nch, stage, mul); break;
      case 4: flush_blocked<NT, 1, false, true>(t, n0, nch, stage, mul); break;
      case 5: flush_blocked<NT, 1, false, false>(t, n0, nch, stage, mul); break;
      case 6: flush_blocked<NT, 1, true, true>(t, n0, nch, stage, mul); break;
      case 7: flush_blocked<NT, 1, true, false>(t, n0, nch, stage, mul); break;
      case 8: flush_blocked<NT, 2, false, true>(t, n0, nch, stage, mul); break;
      case 9: flush_blocked<NT, 2, false, false>(t, n0, nch, stage, mul); break;
      case 10: flush_blocked<NT, 2, true, true>(t, n0, nch, stage, mul); break;
      default: flush_blocked<NT, 2, true, false>(t, n0, nch, stage, mul); break;
    }
    return;
  }
  if (t.out == OutKind::Bf16Pairs) {  // (no residual: run_spmm)
    flush_pairs<NT>(t, n0, nch, stage);
    return;
  }
  if (t.out == OutKind::Bf16TokenPairs) {
    flush_token_pairs<NT>(t, n0, nch, stage);
    return;
  }
  if (nch == 16)
    flush_rows_kind<NT, true>(t, n0, chmask, stage);
  else
    flush_rows_kind<NT, false>(t, n0, chmask, stage);
}

// Whether no value a F32Blocked tile writes can be NaN: its tokens' scales,
// the weights' scales and bias (PackedS8Sparse::scale_w_max, bias_max) and
// its channels' out_mul all finite, and |v| <= 2^31 |x_scale| |scale_w| +
// |bias| (the corrected sum is an int32) at most FLT_MAX / 2, so that v and
// GELU(v) (at most 2 |v|) are finite, and times a finite out_mul finite or
// +-inf, never NaN. An infinite x_scale times a zero sum, or an infinite
// bias, could make one.
bool blocked_nan_free(const SpmmTile& t) {
  const PackedS8Sparse& w = *t.w;
  // fin = v * 0 + fin: 0 while every v is finite, NaN from the first that is
  // not (and stays NaN); masked-off lanes load 0.
  const __m512 zero = _mm512_setzero_ps(), absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
  __m512 fin = zero, xmax = zero;
  for (int64_t j = 0; j < t.mc; j += 16) {
    const __mmask16 m = t.mc - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (t.mc - j)) - 1);
    const __m512 s = _mm512_maskz_loadu_ps(m, t.x_scale + t.m0 + j);
    fin = _mm512_fmadd_ps(s, zero, fin);
    xmax = _mm512_max_ps(xmax, _mm512_and_ps(s, absmask));
  }
  if (const float* mul = t.ep->out_mul)
    for (int64_t n = 4 * t.br0, n1 = 4 * t.br1; n < n1; n += 16) {
      const __mmask16 m = n1 - n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n1 - n)) - 1);
      fin = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, mul + n), zero, fin);
    }
  if (_mm512_cmp_ps_mask(fin, fin, _CMP_UNORD_Q) != 0) return false;
  const double bound = 2147483648.0 * _mm512_reduce_max_ps(xmax) * w.scale_w_max + w.bias_max;
  return bound <= 0.5 * 3.4028234663852886e38;  // (false for an infinite or NaN bound)
}

// Off: the row offsets read per block, int32_t (koff64, bytes) or uint16_t
// (koff8, units of 8 bytes: a scale-8 address, no extra instruction).
template <int NT, bool Pairs, typename Off>
void run_tile(const SpmmTile& t, const Off* koff) {
  constexpr int64_t kUnit = sizeof(Off) == 2 ? 8 : 1;
  const PackedS8Sparse& w = *t.w;
  const int32_t* gp = w.group_ptr.data();
  const int8_t* wv = w.w.data();
  const uint8_t* xb = t.x;  // [K][64]
  // Per-token epilogue inputs of this tile, loaded once for all block-rows.
  // Pairs: the zero-point correction -zp ws by one vpmaddwd of the token's
  // int16 words (zp, 128 zp) and the channel's (lo, hi), lo + 128 hi = -ws
  // (PackedS8Sparse::wsum_pairs), added to the finished accumulators: two
  // uops where vpmulld and a subtraction took three. Exact, with the same
  // wraparound: the same bits. (vpdpwssd into the accumulators, or the
  // product as their starting value, made GCC copy and spill all sixteen
  // inside the product loop: every Linear 10% slower.)
  alignas(64) int32_t zp[64] = {};
  alignas(64) float xs[64] = {};
  if (t.out != OutKind::S32Raw) {
    if (Pairs)
      for (int64_t j = 0; j < t.mc; ++j) zp[j] = zp_pair_word(t.x_zp[t.m0 + j]);
    else
      std::memcpy(zp, t.x_zp + t.m0, sizeof(int32_t) * t.mc);
    std::memcpy(xs, t.x_scale + t.m0, sizeof(float) * t.mc);
  }
  // 4 block-rows (16 channels) x 64 tokens of results, channel-major, are
  // staged here and finished by flush_stage. Zeroed once so that GELU and the
  // transpose never read uninitialized floats (token columns past NT * 16,
  // channel rows past the last block-row).
  alignas(64) float stage[16][64];
  std::memset(stage, 0, sizeof stage);
  // The blocked output's coarse GELU takes v / 2 (gelu_erf_q_half_v: one
  // multiply fewer per value, the same bits): the scale and bias are halved,
  // exact, so the stage holds v / 2.
  const float half = t.out == OutKind::F32Blocked && t.ep->gelu && t.ep->gelu_coarse ? 0.5f : 1.0f;
  const bool nan_free = t.out == OutKind::F32Blocked && blocked_nan_free(t);
  int64_t brg = t.br0;
  const bool pf_y = t.out == OutKind::F32 || t.out == OutKind::U8 || t.out == OutKind::Bf16;
  for (int64_t br = t.br0; br < t.br1; ++br) {
    if (br - brg == 4) {
      flush_stage<NT>(t, brg, 4, stage, nan_free);
      brg = br;
    }
    if (pf_y) {
      // The stage's flush writes 64 token rows of y, one line each (16
      // channels from 4 brg; rows 3 KB apart for N = 768), lines that the
      // other core often holds (it read or wrote them in an earlier op):
      // each store waited for its line, and a full store buffer stalls the
      // kernel. A quarter of the rows are asked for (into L2) per
      // block-row, so they arrive while it computes: 1.09x end to end at
      // 128 tokens, 1.04x at 80 (BERT-base 90%). Prefetching the residual
      // the same way measured nothing; prefetchw (into L1, exclusive) 0.95x.
      const int64_t q1 = 16 * (br - brg) + 16 < t.mc ? 16 * (br - brg) + 16 : t.mc;
      const size_t esz = t.out == OutKind::U8 ? 1 : t.out == OutKind::Bf16 ? 2 : 4;
      for (int64_t q = 16 * (br - brg); q < q1; ++q)
        _mm_prefetch(static_cast<const char*>(t.y) + ((t.m0 + q) * t.ldy + 4 * brg) * esz, _MM_HINT_T1);
    } else if (t.out == OutKind::Bf16Pairs) {
      // The same for pair rows: this block-row's two (of the stage's eight).
      const char* row = reinterpret_cast<const char*>(static_cast<const uint32_t*>(t.y) + t.m0 +
                                                      (4 * br - t.n_base) / 2 * t.ldy);
      for (int64_t o = 0; o < t.mc * 4; o += 64) {
        _mm_prefetch(row + o, _MM_HINT_T1);
        _mm_prefetch(row + t.ldy * 4 + o, _MM_HINT_T1);
      }
    }
    __m512i acc[4][NT];
    for (int c = 0; c < 4; ++c)
      for (int r = 0; r < NT; ++r) acc[c][r] = _mm512_setzero_si512();
    const int32_t g1 = gp[br + 1];
    for (int32_t g = gp[br]; g < g1; ++g) {
      const Off* kg = koff + 4 * g;
      const __m512i x0 = _mm512_load_si512(xb + kUnit * kg[0]);
      const __m512i x1 = _mm512_load_si512(xb + kUnit * kg[1]);
      const __m512i x2 = _mm512_load_si512(xb + kUnit * kg[2]);
      const __m512i x3 = _mm512_load_si512(xb + kUnit * kg[3]);
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
    // First half of the epilogue, channel-major, into stage rows 4 jb + c:
    // fma(corr, x_scale * scale_w, bias), or the raw int32 bits. Written out
    // here rather than in a helper: passing acc by reference made GCC keep
    // it in memory and spill accumulators inside the loop above.
    const int jb = static_cast<int>(br - brg);
    if (t.out == OutKind::S32Raw) {
      for (int r = 0; r < NT; ++r)
        for (int c = 0; c < 4; ++c)
          _mm512_store_ps(&stage[4 * jb + c][16 * r], _mm512_castsi512_ps(acc[c][r]));
    } else {
      const int64_t n0 = 4 * br;
      for (int c = 0; c < 4; ++c) {
        const __m512i ws = _mm512_set1_epi32(w.wsum[n0 + c]);
        const __m512 sw = _mm512_set1_ps(w.scale_w[n0 + c] * half);
        const __m512 bv = _mm512_set1_ps(w.bias ? w.bias[n0 + c] * half : 0.f);
        const __m512i pair = Pairs ? _mm512_set1_epi32(w.wsum_pairs[n0 + c]) : ws;
        for (int r = 0; r < NT; ++r) {
          const __m512i z = _mm512_load_si512(zp + 16 * r);
          const __m512i corr = Pairs ? _mm512_add_epi32(acc[c][r], _mm512_madd_epi16(z, pair))
                                     : _mm512_sub_epi32(acc[c][r], _mm512_mullo_epi32(z, ws));
          const __m512 sc = _mm512_mul_ps(_mm512_load_ps(xs + 16 * r), sw);
          _mm512_store_ps(&stage[4 * jb + c][16 * r], _mm512_fmadd_ps(_mm512_cvtepi32_ps(corr), sc, bv));
        }
      }
    }
  }
  if (t.br1 > brg) flush_stage<NT>(t, brg, t.br1 - brg, stage, nan_free);
}

template <bool Pairs, typename Off>
void run_tile_nt(const SpmmTile& t, const Off* koff) {
  switch ((t.mc + 15) / 16) {
    case 1: run_tile<1, Pairs>(t, koff); break;
    case 2: run_tile<2, Pairs>(t, koff); break;
    case 3: run_tile<3, Pairs>(t, koff); break;
    default: run_tile<4, Pairs>(t, koff); break;
  }
}

// The tile's zero points all in [0, 255] (every quantization's), so that
// (zp, 128 zp) are int16 words, and the weights' pair words exist.
bool zp_pairs_apply(const SpmmTile& t) {
  return t.out != OutKind::S32Raw && !t.w->wsum_pairs.empty() && zp_pairs_fit(t.x_zp + t.m0, t.mc);
}

template <typename Off>
void run_tile_zp(const SpmmTile& t, const Off* koff) {
  if (zp_pairs_apply(t))
    run_tile_nt<true>(t, koff);
  else
    run_tile_nt<false>(t, koff);
}

}  // namespace

void spmm_u8s8_4x1_64x4_avx512vnni(const SpmmTile& t) {
  if (!t.w->koff8.empty())
    run_tile_zp(t, t.w->koff8.data());
  else
    run_tile_zp(t, t.w->koff64.data());
}

}  // namespace spinel::kernels::qgemm_detail

namespace spinel::kernels::qgemm_detail {
namespace {

// The 16x16 byte transpose of interleave_block_u8 on zmm: one pass
// transposes 16 rows x 64 input channels; out[j] lane L = column 16 L + j.
#define SPINEL_TR_NAME transpose16x16_u8_x4
#define SPINEL_TR_VEC __m512i
#define SPINEL_TR_UNPACK(hl, w, a, b) _mm512_unpack##hl##_epi##w(a, b)
#include "kernels/cpu/transpose16x16_u8.inc"

}  // namespace

// interleave_block_u8 for lanes = 4 (B = 64), same layout; 64 input channels
// per pass with masked loads for the K tail, a quarter of the shuffles of the
// SSE2 version.
void interleave_block_u8_zmm(const uint8_t* x, int64_t M, int64_t K, int64_t ldx, int64_t m_begin,
                             int /*lanes: 4*/, uint8_t* out) {
  constexpr int64_t B = 64;
  if (M - m_begin <= 16) {
    // One token vector (a short input, or a tail block): only slots 0..3 of
    // each lane hold tokens (slot i of lane l: token m_begin + 4 l + i), the
    // rest is zero. One transpose of the 16 token rows per 64 channels, then
    // per channel a permute that spreads its 16 bytes (4 tokens per lane)
    // and zeroes the rest: a quarter of the general path's shuffles and one
    // 64-byte store per channel instead of four 16-byte ones.
    const uint8_t* rows[16];
    bool valid[16];
    for (int s = 0; s < 16; ++s) {
      valid[s] = m_begin + s < M;
      rows[s] = valid[s] ? x + (m_begin + s) * ldx : nullptr;
    }
    __m512i spread[4];
    for (int L = 0; L < 4; ++L)
      spread[L] = _mm512_setr_epi32(4 * L, 0, 0, 0, 4 * L + 1, 0, 0, 0, 4 * L + 2, 0, 0, 0, 4 * L + 3, 0, 0, 0);
    for (int64_t k = 0; k < K; k += 64) {
      const int64_t kn = K - k < 64 ? K - k : 64;
      const __mmask64 km = kn == 64 ? ~__mmask64{0} : (__mmask64{1} << kn) - 1;
      __m512i in[16], tr[16];
      for (int s = 0; s < 16; ++s)
        in[s] = valid[s] ? _mm512_maskz_loadu_epi8(km, rows[s] + k) : _mm512_setzero_si512();
      transpose16x16_u8_x4(in, tr);
      // tr[j], lane L: channel k + 16 L + j, tokens in slot order.
      for (int L = 0; L < 4; ++L)
        for (int j = 0; j < 16 && 16 * L + j < kn; ++j)
          _mm512_storeu_si512(out + (k + 16 * L + j) * B,
                             _mm512_maskz_permutexvar_epi32(0x1111, spread[L], tr[j]));
    }
    return;
  }
  for (int l = 0; l < 4; ++l) {
    // Slot s = 4 r + i of lane l holds token m_begin + 16 r + 4 l + i.
    const uint8_t* rows[16];
    bool valid[16];
    for (int s = 0; s < 16; ++s) {
      const int64_t m = m_begin + 16 * (s / 4) + 4 * l + (s % 4);
      valid[s] = m < M;
      rows[s] = valid[s] ? x + m * ldx : nullptr;
    }
    uint8_t* o = out + 16 * l;
    for (int64_t k = 0; k < K; k += 64) {
      const int64_t kn = K - k < 64 ? K - k : 64;
      const __mmask64 km = kn == 64 ? ~__mmask64{0} : (__mmask64{1} << kn) - 1;
      __m512i in[16], tr[16];
      for (int s = 0; s < 16; ++s)
        in[s] = valid[s] ? _mm512_maskz_loadu_epi8(km, rows[s] + k) : _mm512_setzero_si512();
      transpose16x16_u8_x4(in, tr);
      if (kn == 64) {
        for (int j = 0; j < 16; ++j) {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(o + (k + j) * B), _mm512_castsi512_si128(tr[j]));
          _mm_storeu_si128(reinterpret_cast<__m128i*>(o + (k + 16 + j) * B),
                           _mm512_extracti32x4_epi32(tr[j], 1));
          _mm_storeu_si128(reinterpret_cast<__m128i*>(o + (k + 32 + j) * B),
                           _mm512_extracti32x4_epi32(tr[j], 2));
          _mm_storeu_si128(reinterpret_cast<__m128i*>(o + (k + 48 + j) * B),
                           _mm512_extracti32x4_epi32(tr[j], 3));
        }
      } else {
        alignas(64) uint8_t tmp[64];
        for (int j = 0; j < 16; ++j) {
          _mm512_store_si512(tmp, tr[j]);
          for (int64_t L = 0; L < 4 && 16 * L + j < kn; ++L)
            std::memcpy(o + (k + 16 * L + j) * B, tmp + 16 * L, 16);
        }
      }
    }
  }
}

}  // namespace spinel::kernels::qgemm_detail

namespace spinel::kernels::qgemm_detail {

namespace {

// Two saturating packs turn the 4 vectors of tokens 16 r + j into the
// kernel's layout directly: in 128-bit lane l, packs_epi32 then packus_epi16
// put byte i of vector r at 16 l + 4 r + i, which is where
// interleave_block_u8 puts token 16 r + 4 l + i; and the two saturations
// (to int16, then to 0..255) are the clamp to 0..255. Vectors r >= NV are 0.
template <int NV>
void blocked_convert_n(const float* y_blk, int64_t k0, int64_t k1, const float* inv, const int32_t* zp,
                       uint8_t* x_blk) {
  __m512 vi[4];
  __m512i vz[4];
  for (int r = 0; r < NV; ++r) {
    vi[r] = _mm512_loadu_ps(inv + 16 * r);
    vz[r] = _mm512_loadu_si512(zp + 16 * r);
  }
  for (int64_t k = k0; k < k1; ++k) {
    __m512i q[4];
    for (int r = 0; r < 4; ++r)
      q[r] = r < NV ? _mm512_add_epi32(
                          _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(y_blk + 64 * k + 16 * r), vi[r])), vz[r])
                    : _mm512_setzero_si512();
    const __m512i q01 = _mm512_packs_epi32(q[0], q[1]), q23 = _mm512_packs_epi32(q[2], q[3]);
    _mm512_storeu_si512(x_blk + 64 * k, _mm512_packus_epi16(q01, q23));
  }
}

}  // namespace

void blocked_convert_zmm(const float* y_blk, int64_t k0, int64_t k1, const float* inv,
                         const int32_t* zp, uint8_t* x_blk, int nvec) {
  // A short input's block holds 1-3 vectors of tokens: the rest are packed
  // as zeros without a load (half the work at 32 tokens).
  switch (nvec) {
    case 1: blocked_convert_n<1>(y_blk, k0, k1, inv, zp, x_blk); break;
    case 2: blocked_convert_n<2>(y_blk, k0, k1, inv, zp, x_blk); break;
    case 3: blocked_convert_n<3>(y_blk, k0, k1, inv, zp, x_blk); break;
    default: blocked_convert_n<4>(y_blk, k0, k1, inv, zp, x_blk); break;
  }
}

namespace {

// One vector of the epilogue's first half: fma(corr, x_scale * scale_w, bias)
// with corr = acc - zp * wsum in int32 (the order and roundings of every
// other path, so the bits agree).
inline __m512 epi_value(const int32_t* a, __mmask16 k, __m512i zp, __m512 xs, __m512i ws, __m512 sw, __m512 b) {
  const __m512i corr = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(k, a), _mm512_mullo_epi32(zp, ws));
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(corr), _mm512_mul_ps(xs, sw), b);
}

// The whole epilogue in one pass when there is no GELU: rows four at a time,
// each column vector's wsum, scale_w and bias loaded once for the four. The
// residual is read and y written at the same element (y may alias it).
// Before, every row went through row_tmp in a second pass for the residual or
// the requantization, and reloaded the column vectors: dense MiniLM INT8 at
// 8 x 128 tokens spent 9% of its time in this function.
template <bool Res, bool U8>
void epilogue_rows_1pass(const int32_t* acc, int64_t ldacc, int64_t m0, int64_t rows, int64_t N, const float* bias,
                         const float* scale_w, const int32_t* wsum, const float* x_scale, const int32_t* x_zp,
                         const QEpilogue& ep, void* y, int64_t ldy) {
  // The residual row kResidualAhead rows on, towards L1: it was written long
  // before (the layer's input) and its loads stalled the loop (a third of
  // its samples). Dense BERT-base INT8 at 8 x 128 tokens: the attention
  // output Linear 0.88x the time, FFN2 0.95x. The accumulators, just written
  // by oneDNN, gained nothing from the same.
  constexpr int64_t kResidualAhead = 4;
  const float* res = ep.residual;
  const int64_t ldr = ep.ld_residual;
  const Requant requant(ep);
  for (int64_t i = 0; i < rows; i += 4) {
    const int R = rows - i < 4 ? static_cast<int>(rows - i) : 4;
    if (Res)
      for (int r = 0; r < R && i + r + kResidualAhead < rows; ++r) {
        const char* p = reinterpret_cast<const char*>(res + (m0 + i + r + kResidualAhead) * ldr);
        for (int64_t o = 0; o < N * 4; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
      }
    __m512i zp[4];
    __m512 xs[4];
    for (int r = 0; r < 4; ++r) {
      const int64_t m = m0 + i + (r < R ? r : 0);
      zp[r] = _mm512_set1_epi32(x_zp[m]);
      xs[r] = _mm512_set1_ps(x_scale[m]);
    }
    for (int64_t n = 0; n < N; n += 16) {
      const __mmask16 k = N - n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (N - n)) - 1);
      const __m512i ws = _mm512_maskz_loadu_epi32(k, wsum + n);
      const __m512 sw = _mm512_maskz_loadu_ps(k, scale_w + n);
      const __m512 b = bias ? _mm512_maskz_loadu_ps(k, bias + n) : _mm512_setzero_ps();
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        if (r >= R) break;
        const int64_t m = m0 + i + r;
        __m512 v = epi_value(acc + (i + r) * ldacc + n, k, zp[r], xs[r], ws, sw, b);
        if (Res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, res + m * ldr + n));
        if (U8)
          _mm512_mask_cvtepi32_storeu_epi8(static_cast<uint8_t*>(y) + m * ldy + n, k, requant(v));
        else
          _mm512_mask_storeu_ps(static_cast<float*>(y) + m * ldy + n, k, v);
      }
    }
  }
}

}  // namespace

// Epilogue on a row-major int32 block (the dense oneDNN path); see
// dense_s8_dnnl.cpp. row_tmp holds N + 16 floats (GELU with a residual or
// requantization only).
void epilogue_rows_s32_avx512(const int32_t* acc, int64_t ldacc, int64_t m0, int64_t rows,
                              int64_t N, const float* bias, const float* scale_w,
                              const int32_t* wsum, const float* x_scale, const int32_t* x_zp,
                              const QEpilogue& ep, void* y, int64_t ldy, float* row_tmp) {
  if (!ep.gelu) {
    auto* f = ep.residual ? (ep.requantize ? epilogue_rows_1pass<true, true> : epilogue_rows_1pass<true, false>)
                          : (ep.requantize ? epilogue_rows_1pass<false, true> : epilogue_rows_1pass<false, false>);
    f(acc, ldacc, m0, rows, N, bias, scale_w, wsum, x_scale, x_zp, ep, y, ldy);
    return;
  }
  // GELU: per row, the first half into y's row (or row_tmp when a second
  // pass follows: the residual may alias y), GELU over it, then the residual
  // and the requantization.
  const Requant requant(ep);
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t m = m0 + i;
    const int32_t* a = acc + i * ldacc;
    const __m512i zp = _mm512_set1_epi32(x_zp[m]);
    const __m512 xs = _mm512_set1_ps(x_scale[m]);
    const bool two_pass = ep.requantize || ep.residual;
    float* dst = two_pass ? row_tmp : static_cast<float*>(y) + m * ldy;
    for (int64_t n = 0; n < N; n += 16) {
      const __mmask16 k = N - n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (N - n)) - 1);
      const __m512 b = bias ? _mm512_maskz_loadu_ps(k, bias + n) : _mm512_setzero_ps();
      _mm512_mask_storeu_ps(dst + n, k,
                            epi_value(a + n, k, zp, xs, _mm512_maskz_loadu_epi32(k, wsum + n),
                                      _mm512_maskz_loadu_ps(k, scale_w + n), b));
    }
    (ep.gelu_coarse ? f32::kernel_table_avx512().gelu_erf_q : f32::kernel_table_avx512().gelu_erf)(dst, N);
    if (!two_pass) continue;
    const float* res = ep.residual ? ep.residual + m * ep.ld_residual : nullptr;
    for (int64_t n = 0; n < N; n += 16) {
      const __mmask16 k = N - n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (N - n)) - 1);
      __m512 v = _mm512_maskz_loadu_ps(k, dst + n);
      if (res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, res + n));
      if (ep.requantize)
        _mm512_mask_cvtepi32_storeu_epi8(static_cast<uint8_t*>(y) + m * ldy + n, k, requant(v));
      else
        _mm512_mask_storeu_ps(static_cast<float*>(y) + m * ldy + n, k, v);
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
