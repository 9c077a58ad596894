// Attention block on AVX512_BF16 dot products: Q·K^T and P·V as BF16
// products with FP32 accumulation (VDPBF16PS: 16 lanes, each the sum of two
// products added to an FP32 accumulator), the softmax in FP32, the same work
// item and output contract as the FP32 attention_block of f32_body.inc, and
// the same operands and softmax as the AMX-BF16 block (attention_bf16.inc).
//
// Why: where the CPU has AVX512_BF16 at full rate and no AMX (AMD's AVX-512
// cores; measured on Zen 5), one vdpbf16ps does 32 multiply-adds in the time
// of one 16-lane FMA. Measured on a Zen 5 EPYC (a loop of independent
// instructions, one core): 6.7 G vdpbf16ps/s against 4.4 G vfmadd231ps/s,
// 2-3x the multiply-adds per second; FP32 attention ran at about the FMA peak, a third of BERT-base 90%
// INT8's time at 128 tokens. On the Xeons we measured (Sapphire Rapids) it
// issues at half vfmadd's rate, no faster than FP32, and AMX tiles are the
// way there (select.h says which CPU gets which).
//
// Register tile: 4 query rows x 4 vectors of 16 keys (Q·K^T) or of 16 output
// columns (P·V), 16 accumulators; per pair of the contracted dimension, 4
// vector loads of B and 4 broadcast words of A feed 16 dot products (8 rows
// when there are only one or two vectors).
//
// attention_block_avx512_s8qk (below) runs Q·K^T on VNNI instead.
//
// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16
// -mavx512vnni (per-file flags); called only when cpu_has_avx512_bf16() says
// the CPU has them (and, for the s8qk block, the active ISA level is
// avx512vnni).
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#pragma GCC diagnostic ignored "-Wunused-function"
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/cpu/f32_isa.h"

#if !defined(__AVX512BF16__) || !defined(__AVX512BW__) || !defined(__AVX512VNNI__)
#error "attention_bf16.cpp needs -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mavx512vnni"
#endif

// The FP32 helpers (the K transpose) in this file's own build.
#define SPINEL_F32_NS avx512_bf16_body
#define SPINEL_F32_LANES 16
#define SPINEL_F32_ROWS 8
#include "kernels/cpu/f32_body.inc"

namespace spinel::kernels::f32 {
namespace {

namespace body = avx512_bf16_body;
#include "kernels/cpu/attention_bf16.inc"

// c[r][v] = sum over pairs p < np of a[r a_stride + p] (a BF16 pair,
// broadcast to every lane) . b[p b_stride + 16 v .. + 16) (16 BF16 pairs),
// for R rows r and NV vectors v (b need not be aligned: K's pair words read
// in place start at any key).
// The sums build in locals and reach out once, after the loop: __m512 may
// alias anything, so sums kept in out itself were stored back on every pair.
// Pairs p < p_split from b_first instead (V's pair words read in place, the
// same stride), in the same order into the same sums.
template <int R, int NV>
inline void dot_rxnv(const uint32_t* a, int64_t a_stride, const uint32_t* b, int64_t b_stride, int64_t np,
                     __m512 (&out)[8][4], const uint32_t* b_first, int64_t p_split) {
  __m512 c[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) c[r][v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < np; ++p) {
    const uint32_t* bp = (p < p_split ? b_first : b) + p * b_stride;
    __m512bh bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(bp + 16 * v);
    for (int r = 0; r < R; ++r) {
      const __m512bh x = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[r * a_stride + p]));
      for (int v = 0; v < NV; ++v) c[r][v] = _mm512_dpbf16_ps(c[r][v], x, bv[v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) out[r][v] = c[r][v];
}

// Rows per register tile for nv vectors: 4 x 4 (16 sums in flight), or 8 x 1
// and 8 x 2 when there are at most two vectors (MiniLM's head_dim 32, key
// tails): 4 x 2 sums were too few to hide vdpbf16ps's latency.
inline int tile_rows(int nv) { return nv <= 2 ? 8 : 4; }

// dot_rxnv for nv = 1..4 vectors (a run-time count), tile_rows(nv) rows.
inline void dot_tile(const uint32_t* a, int64_t a_stride, const uint32_t* b, int64_t b_stride, int64_t np,
                     int nv, __m512 (&c)[8][4], const uint32_t* b_first = nullptr, int64_t p_split = 0) {
  switch (nv) {
    case 4: dot_rxnv<4, 4>(a, a_stride, b, b_stride, np, c, b_first, p_split); break;
    case 3: dot_rxnv<4, 3>(a, a_stride, b, b_stride, np, c, b_first, p_split); break;
    case 2: dot_rxnv<8, 2>(a, a_stride, b, b_stride, np, c, b_first, p_split); break;
    default: dot_rxnv<8, 1>(a, a_stride, b, b_stride, np, c, b_first, p_split); break;
  }
}

// S = Q K^T for one block of up to 16 query rows; qb: its 16 BF16 Q rows
// (zero past nq). Rows are computed in fours or eights.
void scores_bf16(const AttentionBlock& b, const AmxLayout& a, const uint32_t* k2, int64_t k2_stride,
                 const uint16_t* qb, float* s, int nq) {
  __m512 c[8][4];
  // Over 16-key vectors up to the last key: groups of 4 vectors outside
  // (their K2 columns stay in L1), row tiles inside.
  const int64_t key_vecs = round_up(b.seq_len, 16) / 16;
  const int64_t qpairs = (b.head_dim + 1) / 2;  // pairs past head_dim are zero in Qb and K2
  const auto* q = reinterpret_cast<const uint32_t*>(qb);
  for (int64_t c0 = 0; c0 < key_vecs; c0 += 4) {
    const int nv = static_cast<int>(key_vecs - c0 < 4 ? key_vecs - c0 : 4);
    const int tr = tile_rows(nv);
    for (int64_t r0 = 0; r0 < nq; r0 += tr) {
      dot_tile(q + r0 * (a.dp / 2), a.dp / 2, k2 + c0 * 16, k2_stride, qpairs, nv, c);
      for (int r = 0; r < tr; ++r)
        for (int v = 0; v < nv; ++v) _mm512_store_ps(s + (r0 + r) * a.lp + (c0 + v) * 16, c[r][v]);
    }
  }
}

// The rest of a block of up to 16 query rows [i0, i0 + nq) after its scores
// S: the softmax and O = P V, written to the block's output rows (rows past
// nq are never written). V2's pair rows before v_split from v2_ip (in place,
// the same stride), the rest from v2.
void softmax_pv(const AttentionBlock& b, const AmxLayout& a, const uint32_t* v2, const uint32_t* v2_ip,
                int64_t v_split, float* s, int64_t i0, int nq) {
  __m512 c[8][4];
  // Softmax per row in FP32, then P (bf16, zero past len) over the row's
  // start; rows four at a time. Rows past nq get zero P (up to 16: the P·V
  // tiles below may read them).
  float inv[16];
  int r = 0;
  for (; r + 4 <= nq; r += 4)
    softmax_to_bf16<4>(s + r * a.lp, b.seq_len, a.lp, b.scale, b.alibi_slope, i0 + r, inv + r);
  for (; r + 2 <= nq; r += 2)
    softmax_to_bf16<2>(s + r * a.lp, b.seq_len, a.lp, b.scale, b.alibi_slope, i0 + r, inv + r);
  if (r < nq) softmax_to_bf16<1>(s + r * a.lp, b.seq_len, a.lp, b.scale, b.alibi_slope, i0 + r, inv + r);
  const int64_t pv_rows = round_up(nq, 8) > 16 ? 16 : round_up(nq, 8);
  for (r = nq; r < pv_rows; ++r) std::memset(s + r * a.lp, 0, static_cast<size_t>(a.lp) * 2);

  // O = P V over 16-column vectors of the head: pairs of keys up to the
  // last one (P is zero past len, V2 zero past the sequence).
  const int64_t kpairs = (b.seq_len + 1) / 2;
  const auto* pw = reinterpret_cast<const uint32_t*>(s);  // row r: lp words apart
  const int64_t d_vecs = a.dv / 16;
  for (int64_t c0 = 0; c0 < d_vecs; c0 += 4) {
    const int nv = static_cast<int>(d_vecs - c0 < 4 ? d_vecs - c0 : 4);
    const int tr = tile_rows(nv);
    for (int64_t r0 = 0; r0 < nq; r0 += tr) {
      dot_tile(pw + r0 * a.lp, a.lp, v2 + c0 * 16, a.dv, kpairs, nv, c, v2_ip ? v2_ip + c0 * 16 : nullptr,
               v_split);
      for (int rr = 0; rr < tr && r0 + rr < nq; ++rr) {
        const __m512 sc = _mm512_set1_ps(inv[r0 + rr]);
        float* out = b.out + (i0 + r0 + rr) * b.out_stride + c0 * 16;
        for (int v = 0; v < nv; ++v)
          _mm512_mask_storeu_ps(out + 16 * v, first_n(b.head_dim - (c0 + v) * 16), _mm512_mul_ps(c[rr][v], sc));
      }
    }
  }
}

// ---- INT8 Q·K^T (attention_block_avx512_s8qk) ---------------------------

// Symmetric 8-bit quantization of 16 rows x[i stride .. + n) (rows past
// `rows`: zeros) into out [16][dq] bytes (zero past n, plus `shift`: 0 for
// K's s8, 128 for Q's u8), the contract of attention_block_avx512_s8qk: scale
// = max |x| / 127, q = nearbyint(x * (127 / max |x|)), which is within
// [-127, 127] (no clamp needed). scale[0..16): 0 for a row of zeros (or one
// so small that 127 / max overflows: its products are below 1e-30), NaN for
// a row with a NaN (its scores become NaN, as in FP32). The 16 maxima come
// from one 16 x 16 transpose instead of 16 horizontal reductions.
//
// 16 whole rows of 64 (BERT's heads) take a faster path with the same bits:
// four loads per row, the NaN test as two unordered compares of vector
// pairs, and each row's four int32 vectors narrowed by saturating packs
// (3 instructions where 4 vpmovdb took 8; the values are within [-127, 127],
// where packing and truncating agree, and Q's +128 is an XOR of the sign
// bit); a row whose 127 / max is 0 (infinite or NaN values, or all zero)
// keeps the truncating stores, whose bytes for NaN products differ.
// 16 values of a row, f32 or BF16 (AttentionBlock::qkv_bf16: its bits the
// upper half of the f32 they stand for), lanes outside m zero.
inline __m512 load16(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load16(const uint16_t* p, __mmask16 m) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const uint16_t* p) {
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}

// Each lane's symmetric 8-bit scale from its max |x| (the lanes in nan hold
// a NaN): amax / 127, 0 where amax is 0 or 127 / amax overflows, NaN in nan;
// inv = 127 / amax where the scale is a positive number, else 0.
inline __m512 s8_scales(__m512 amax, __mmask16 nan, __m512& inv) {
  const __m512 sc = _mm512_div_ps(amax, _mm512_set1_ps(127.0f));
  inv = _mm512_div_ps(_mm512_set1_ps(127.0f), amax);
  const __mmask16 ok = static_cast<__mmask16>(_mm512_cmp_ps_mask(amax, _mm512_setzero_ps(), _CMP_GT_OQ) &
                                              _mm512_cmp_ps_mask(inv, _mm512_set1_ps(3.0e38f), _CMP_LE_OQ) & ~nan);
  inv = _mm512_maskz_mov_ps(ok, inv);
  return _mm512_mask_mov_ps(_mm512_maskz_mov_ps(ok, sc), nan, _mm512_set1_ps(__builtin_nanf("")));
}

// T: float, or uint16_t for BF16 rows (the same bytes as the f32 rows of the
// values they hold).
template <typename T>
inline void quantize_rows16(const T* x, int64_t stride, int64_t rows, int64_t n, int64_t dq, int shift,
                            uint8_t* out, float* scale) {
  const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
  body::vf m[16];
  __mmask16 nan_rows = 0;
  const bool whole = rows == 16 && n == 64 && dq == 64;
  for (int i = 0; i < 16; ++i) {
    __m512 mi = _mm512_setzero_ps();
    __mmask16 nan = 0;
    const T* r = x + i * stride;
    if (whole) {
      const __m512 v0 = load16(r), v1 = load16(r + 16), v2 = load16(r + 32), v3 = load16(r + 48);
      mi = _mm512_max_ps(_mm512_max_ps(_mm512_and_ps(v0, absmask), _mm512_and_ps(v1, absmask)),
                         _mm512_max_ps(_mm512_and_ps(v2, absmask), _mm512_and_ps(v3, absmask)));
      nan = static_cast<__mmask16>(_mm512_cmp_ps_mask(v0, v1, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(v2, v3, _CMP_UNORD_Q));
    } else if (i < rows) {
      for (int64_t d0 = 0; d0 < n; d0 += 16) {
        const __m512 v = load16(r + d0, first_n(n - d0));
        mi = _mm512_max_ps(mi, _mm512_and_ps(v, absmask));
        nan = static_cast<__mmask16>(nan | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q));
      }
    }
    if (nan) nan_rows = static_cast<__mmask16>(nan_rows | (1u << i));
    m[i] = mi;
  }
  body::transpose_square(m);  // m[l] lane i: element l of row i's maxima
  __m512 amax = m[0];
  for (int l = 1; l < 16; ++l) amax = _mm512_max_ps(amax, m[l]);
  __m512 inv;
  _mm512_storeu_ps(scale, s8_scales(amax, nan_rows, inv));
  const __m512i sh = _mm512_set1_epi32(shift);
  // Rows whose products are all finite and within [-127, 127]: packed.
  const __mmask16 packed =
      whole ? _mm512_cmp_ps_mask(inv, _mm512_setzero_ps(), _CMP_GT_OQ) : static_cast<__mmask16>(0);
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(shift == 128 ? 0x80 : 0));
  for (int i = 0; i < 16; ++i) {
    const __m512 vi = _mm512_permutexvar_ps(_mm512_set1_epi32(i), inv);
    if (packed & (1u << i)) {
      const T* r = x + i * stride;
      const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(load16(r), vi));
      const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(load16(r + 16), vi));
      const __m512i q2 = _mm512_cvtps_epi32(_mm512_mul_ps(load16(r + 32), vi));
      const __m512i q3 = _mm512_cvtps_epi32(_mm512_mul_ps(load16(r + 48), vi));
      // Per 128-bit lane: 4 values of q0, q1, q2, q3 in turn; the dword
      // permutation puts the 64 bytes back in order.
      const __m512i b = _mm512_packs_epi16(_mm512_packs_epi32(q0, q1), _mm512_packs_epi32(q2, q3));
      _mm512_storeu_si512(out + i * dq, _mm512_xor_si512(_mm512_permutexvar_epi32(order, b), flip));
      continue;
    }
    for (int64_t d0 = 0; d0 < dq; d0 += 16) {
      const __m512 v = i < rows ? load16(x + i * stride + d0, first_n(n - d0)) : _mm512_setzero_ps();
      const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v, vi)), sh);  // nearest even
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i * dq + d0), _mm512_cvtepi32_epi8(q));
    }
  }
}

// The INT8 Q·K^T operands of an item (layout in f32_isa.h):
//   K4 [dq/4][lp] words: word (p, j) = the s8 values k[j][4p .. 4p+3], the
//      vpdpbusd B operand; ks[j]: key j's scale; kcorr[j]: 128 times the sum
//      of its s8 values (the Q shift's correction: sum (q + 128) k = q.k +
//      kcorr);
//   q8 [rows][dq] bytes: u8 values q + 128 of the item's query rows (from
//      q_begin); qs[row]: their scales.
struct S8Operands {
  uint32_t* k4;
  uint8_t* q8;
  float* ks;
  int32_t* kcorr;
  float* qs;
};

// 128 times the sum of each of keys j0 .. j0 + 15's s8 values, from their
// K4 words, by vpdpbusd with ones.
inline void key_sums(const AmxLayout& a, const uint32_t* k4, int32_t* kcorr, int64_t j0) {
  __m512i sum = _mm512_setzero_si512();
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t p = 0; p < a.dq / 4; ++p)
    sum = _mm512_dpbusd_epi32(sum, ones, _mm512_load_si512(k4 + p * a.lp + j0));
  _mm512_store_si512(kcorr + j0, _mm512_slli_epi32(sum, 7));
}

// Keys j0 .. j0 + 15 (zero past the sequence) from K's rows, f32 or BF16
// (T): quantized into kq [16][dq], then each 16 keys x 64 bytes transposed as
// 16 x 16 words into K4's rows; then their sums.
template <typename T>
inline void build_k4_block(const AttentionBlock& b, const AmxLayout& a, const T* k_rows, uint8_t* kq,
                           uint32_t* k4, float* ks, int32_t* kcorr, int64_t j0) {
  const int64_t rows = b.seq_len - j0 < 16 ? b.seq_len - j0 : 16;
  quantize_rows16(k_rows + j0 * b.qkv_stride, b.qkv_stride, rows, b.head_dim, a.dq, 0, kq, ks + j0);
  for (int64_t c = 0; c < a.dq / 64; ++c) {
    body::vf r[16];
    for (int i = 0; i < 16; ++i) r[i] = (body::vf)_mm512_load_si512(kq + i * a.dq + 64 * c);
    body::transpose_square(r);
    for (int l = 0; l < 16; ++l) _mm512_store_si512(k4 + (16 * c + l) * a.lp + j0, (__m512i)r[l]);
  }
  key_sums(a, k4, kcorr, j0);
}

// The same K4 words, scales and sums from K in pair words (AttentionBlock::
// k2, as the QKV Linear writes them: word (p, j) = bf16 (k[j][2p],
// k[j][2p + 1]), head_dim a multiple of 32) with no transposes: the 16 keys
// are the lanes throughout, each key's maximum a vertical max over its
// head_dim values, each quad's word its four values' low bytes. The bytes
// are quantize_rows16's (its saturating packs and truncation agree on
// [-127, 127]; a NaN or infinite product truncates to 0 either way), the
// scales its too: the same bits as from the BF16 rows.
inline void build_k4_from_k2(const AttentionBlock& b, const AmxLayout& a, uint32_t* k4, float* ks, int32_t* kcorr,
                             int64_t j0) {
  const __mmask16 keys = first_n(b.seq_len - j0);  // (lanes past the sequence load zeros)
  const uint32_t* k2 = b.k2 + j0;
  const int64_t np = b.head_dim / 2;
  const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  auto lo = [](__m512i w) { return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)); };
  auto hi = [&](__m512i w) { return _mm512_castsi512_ps(_mm512_and_si512(w, high)); };
  __m512 amax = _mm512_setzero_ps();
  __mmask16 nan = 0;
  for (int64_t p = 0; p < np; ++p) {
    const __m512i w = _mm512_maskz_loadu_epi32(keys, k2 + p * b.k2_stride);
    const __m512 l = lo(w), h = hi(w);
    amax = _mm512_max_ps(amax, _mm512_max_ps(_mm512_and_ps(l, absmask), _mm512_and_ps(h, absmask)));
    nan = static_cast<__mmask16>(nan | _mm512_cmp_ps_mask(l, h, _CMP_UNORD_Q));
  }
  __m512 inv;
  _mm512_storeu_ps(ks + j0, s8_scales(amax, nan, inv));
  for (int64_t q = 0; q < a.dq / 4; ++q) {
    __m512i word = _mm512_setzero_si512();  // (quads past head_dim: zero)
    if (4 * q < b.head_dim) {
      const __m512i w0 = _mm512_maskz_loadu_epi32(keys, k2 + 2 * q * b.k2_stride);
      const __m512i w1 = _mm512_maskz_loadu_epi32(keys, k2 + (2 * q + 1) * b.k2_stride);
      const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(lo(w0), inv));  // nearest even
      const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(hi(w0), inv));
      const __m512i q2 = _mm512_cvtps_epi32(_mm512_mul_ps(lo(w1), inv));
      const __m512i q3 = _mm512_cvtps_epi32(_mm512_mul_ps(hi(w1), inv));
      word = _mm512_mask_blend_epi8(0x2222222222222222ull, q0, _mm512_slli_epi32(q1, 8));
      word = _mm512_mask_blend_epi8(0x4444444444444444ull, word, _mm512_slli_epi32(q2, 16));
      word = _mm512_mask_blend_epi8(0x8888888888888888ull, word, _mm512_slli_epi32(q3, 24));
    }
    _mm512_store_si512(k4 + q * a.lp + j0, word);
  }
  key_sums(a, k4, kcorr, j0);
}

// The item's query rows, f32 or BF16 (T), 16 at a time (rows past q_end up
// to a multiple of 16: scale 0).
template <typename T>
inline void build_q8(const AttentionBlock& b, const AmxLayout& a, const T* q_rows, uint8_t* q8, float* qs) {
  for (int64_t r0 = 0; r0 < b.q_end - b.q_begin; r0 += 16) {
    const int64_t rows = b.q_end - b.q_begin - r0 < 16 ? b.q_end - b.q_begin - r0 : 16;
    quantize_rows16(q_rows + (b.q_begin + r0) * b.qkv_stride, b.qkv_stride, rows, b.head_dim, a.dq, 128,
                    q8 + r0 * a.dq, qs + r0);
  }
}

// c[r][v] = sum over quads p < np of a[r a_stride + p] (4 u8, broadcast) .
// b[p b_stride + 16 v .. + 16) (16 words of 4 s8), as dot_rxnv.
template <int R, int NV>
inline void dot_s8_rxnv(const uint32_t* a, int64_t a_stride, const uint32_t* b, int64_t b_stride, int64_t np,
                        __m512i (&out)[8][4]) {
  __m512i c[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) c[r][v] = _mm512_setzero_si512();
  for (int64_t p = 0; p < np; ++p) {
    __m512i bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_si512(b + p * b_stride + 16 * v);
    for (int r = 0; r < R; ++r) {
      const __m512i x = _mm512_set1_epi32(static_cast<int>(a[r * a_stride + p]));
      for (int v = 0; v < NV; ++v) c[r][v] = _mm512_dpbusd_epi32(c[r][v], x, bv[v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) out[r][v] = c[r][v];
}

// S = Q K^T for the block of up to 16 query rows whose first is item row r_begin:
// (int32 sum - kcorr[j]) * ks[j] * qs[row].
void scores_s8(const AttentionBlock& b, const AmxLayout& a, const S8Operands& op, int64_t r_begin,
               float* s, int nq) {
  __m512i c[8][4];
  const int64_t key_vecs = round_up(b.seq_len, 16) / 16;
  const int64_t quads = (b.head_dim + 3) / 4;  // quads past head_dim are zero in K4
  const int64_t a_stride = a.dq / 4;
  const auto* q = reinterpret_cast<const uint32_t*>(op.q8 + r_begin * a.dq);
  for (int64_t c0 = 0; c0 < key_vecs; c0 += 4) {
    const int nv = static_cast<int>(key_vecs - c0 < 4 ? key_vecs - c0 : 4);
    const int tr = tile_rows(nv);
    for (int64_t r0 = 0; r0 < nq; r0 += tr) {
      const uint32_t* qa = q + r0 * a_stride;
      const uint32_t* kb = op.k4 + c0 * 16;
      switch (nv) {
        case 4: dot_s8_rxnv<4, 4>(qa, a_stride, kb, a.lp, quads, c); break;
        case 3: dot_s8_rxnv<4, 3>(qa, a_stride, kb, a.lp, quads, c); break;
        case 2: dot_s8_rxnv<8, 2>(qa, a_stride, kb, a.lp, quads, c); break;
        default: dot_s8_rxnv<8, 1>(qa, a_stride, kb, a.lp, quads, c); break;
      }
      for (int v = 0; v < nv; ++v) {
        const int64_t j = (c0 + v) * 16;
        const __m512i corr = _mm512_load_si512(op.kcorr + j);
        const __m512 ks = _mm512_load_ps(op.ks + j);
        for (int r = 0; r < tr; ++r) {
          const __m512 sc = _mm512_mul_ps(ks, _mm512_set1_ps(op.qs[r_begin + r0 + r]));
          _mm512_store_ps(s + (r0 + r) * a.lp + j,
                          _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(c[r][v], corr)), sc));
        }
      }
    }
  }
}

}  // namespace

void attention_block_avx512_bf16(const AttentionBlock& b, float* scratch) {
  if (b.q_end <= b.q_begin || b.seq_len <= 0) return;
  // K2 in place where the QKV Linear wrote K in pair words (AttentionBlock::k2):
  // no transpose here.
  const bool k2_in_place = b.k2 != nullptr;
  // V's pair rows whole inside the sequence in place (v2_in_place); V2 built
  // from the 8-pair block holding the first of the others.
  const uint32_t* v2_ip = v2_in_place(b);
  const int64_t v_split = v2_ip ? b.seq_len / 2 : 0;
  const Operands op = build_item(b, scratch, false, k2_in_place, 2 * v_split / 16 * 16);
  const uint32_t* k2 = k2_in_place ? b.k2 : op.k2;
  const int64_t k2_stride = k2_in_place ? b.k2_stride : op.a.lp;
  for_each_query_block(b, op, [&](int64_t i0, int nq, const uint16_t* qb) {
    scores_bf16(b, op.a, k2, k2_stride, qb, op.s, nq);
    softmax_pv(b, op.a, op.v2, v2_ip, v_split, op.s, i0, nq);
  });
}

void attention_block_avx512_s8qk(const AttentionBlock& b, float* scratch) {
  if (b.q_end <= b.q_begin || b.seq_len <= 0) return;
  const AmxLayout a = amx_attention_layout(b.seq_len, b.head_dim);
  uint32_t* w = reinterpret_cast<uint32_t*>(scratch);
  S8Operands op;
  op.k4 = w + a.k2;
  op.q8 = reinterpret_cast<uint8_t*>(w + a.qb);
  op.ks = reinterpret_cast<float*>(w + a.ks);
  op.kcorr = reinterpret_cast<int32_t*>(w + a.ksum);
  op.qs = reinterpret_cast<float*>(w + a.qs);
  uint32_t* v2 = w + a.v2;
  auto* kq = reinterpret_cast<uint8_t*>(w + a.kq);
  // Q, K and V as the QKV Linear wrote them: f32 rows, or BF16 rows
  // (qkv_bf16), K in pair words (k2) and V in pair words of two tokens
  // (v2_pairs), read in place as attention_block_avx512_bf16 does.
  const uint32_t* v2_ip = v2_in_place(b);
  const int64_t v_split = v2_ip ? b.seq_len / 2 : 0;
  const int64_t v_from = 2 * v_split / 16 * 16;
  for (int64_t j0 = 0; j0 < a.lp; j0 += 16) {
    if (b.k2)
      build_k4_from_k2(b, a, op.k4, op.ks, op.kcorr, j0);
    else if (b.qkv_bf16)
      build_k4_block(b, a, b.qkv_bf16 + b.k_col, kq, op.k4, op.ks, op.kcorr, j0);
    else
      build_k4_block(b, a, b.qkv + b.k_col, kq, op.k4, op.ks, op.kcorr, j0);
    if (j0 >= v_from) build_v2_block(b, a, v2, j0);
  }
  if (b.qkv_bf16)
    build_q8(b, a, b.qkv_bf16 + b.q_col, op.q8, op.qs);
  else
    build_q8(b, a, b.qkv + b.q_col, op.q8, op.qs);
  float* s = reinterpret_cast<float*>(w + a.s);
  for (int64_t i0 = b.q_begin; i0 < b.q_end; i0 += 16) {
    const int nq = static_cast<int>(b.q_end - i0 < 16 ? b.q_end - i0 : 16);
    scores_s8(b, a, op, i0 - b.q_begin, s, nq);
    softmax_pv(b, a, v2, v2_ip, v_split, s, i0, nq);
  }
}

}  // namespace spinel::kernels::f32
