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
// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16
// (per-file flags); called only when cpu_has_avx512_bf16() says the CPU has
// them.
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#pragma GCC diagnostic ignored "-Wunused-function"
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/cpu/f32_isa.h"

#if !defined(__AVX512BF16__) || !defined(__AVX512BW__)
#error "attention_bf16.cpp needs -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16"
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
// for R rows r and NV vectors v; b 64-byte aligned, b_stride a multiple of 16.
// The sums build in locals and reach out once, after the loop: __m512 may
// alias anything, so sums kept in out itself were stored back on every pair.
template <int R, int NV>
inline void dot_rxnv(const uint32_t* a, int64_t a_stride, const uint32_t* b, int64_t b_stride, int64_t np,
                     __m512 (&out)[8][4]) {
  __m512 c[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) c[r][v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < np; ++p) {
    __m512bh bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = (__m512bh)_mm512_load_si512(b + p * b_stride + 16 * v);
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
                     int nv, __m512 (&c)[8][4]) {
  switch (nv) {
    case 4: dot_rxnv<4, 4>(a, a_stride, b, b_stride, np, c); break;
    case 3: dot_rxnv<4, 3>(a, a_stride, b, b_stride, np, c); break;
    case 2: dot_rxnv<8, 2>(a, a_stride, b, b_stride, np, c); break;
    default: dot_rxnv<8, 1>(a, a_stride, b, b_stride, np, c); break;
  }
}

// One block of up to 16 query rows [i0, i0 + nq); qb: its 16 BF16 Q rows
// (zero past nq). Rows are computed in fours or eights; rows past nq are
// never written.
void query_block(const AttentionBlock& b, const AmxLayout& a, const uint32_t* k2, const uint32_t* v2,
                 const uint16_t* qb, float* s, int64_t i0, int nq) {
  __m512 c[8][4];

  // S = Q K^T over 16-key vectors up to the last key: groups of 4 vectors
  // outside (their K2 columns stay in L1), row tiles inside.
  const int64_t key_vecs = round_up(b.seq_len, 16) / 16;
  const int64_t qpairs = (b.head_dim + 1) / 2;  // pairs past head_dim are zero in Qb and K2
  const auto* q = reinterpret_cast<const uint32_t*>(qb);
  for (int64_t c0 = 0; c0 < key_vecs; c0 += 4) {
    const int nv = static_cast<int>(key_vecs - c0 < 4 ? key_vecs - c0 : 4);
    const int tr = tile_rows(nv);
    for (int64_t r0 = 0; r0 < nq; r0 += tr) {
      dot_tile(q + r0 * (a.dp / 2), a.dp / 2, k2 + c0 * 16, a.lp, qpairs, nv, c);
      for (int r = 0; r < tr; ++r)
        for (int v = 0; v < nv; ++v) _mm512_store_ps(s + (r0 + r) * a.lp + (c0 + v) * 16, c[r][v]);
    }
  }

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
      dot_tile(pw + r0 * a.lp, a.lp, v2 + c0 * 16, a.dv, kpairs, nv, c);
      for (int rr = 0; rr < tr && r0 + rr < nq; ++rr) {
        const __m512 sc = _mm512_set1_ps(inv[r0 + rr]);
        float* out = b.out + (i0 + r0 + rr) * b.out_stride + c0 * 16;
        for (int v = 0; v < nv; ++v)
          _mm512_mask_storeu_ps(out + 16 * v, first_n(b.head_dim - (c0 + v) * 16), _mm512_mul_ps(c[rr][v], sc));
      }
    }
  }
}

}  // namespace

void attention_block_avx512_bf16(const AttentionBlock& b, float* scratch) {
  if (b.q_end <= b.q_begin || b.seq_len <= 0) return;
  const Operands op = build_item(b, scratch);
  for_each_query_block(b, op, [&](int64_t i0, int nq, const uint16_t* qb) {
    query_block(b, op.a, op.k2, op.v2, qb, op.s, i0, nq);
  });
}

}  // namespace spinel::kernels::f32
