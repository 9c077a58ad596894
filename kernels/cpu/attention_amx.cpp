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
// The operand layouts, the one pass that builds them and the softmax are
// shared with the AVX512_BF16 block (attention_bf16.inc); this file adds
//   O  [4][16][16] f32: up to four output tiles before scaling by 1 / row sum.
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

namespace body = amx_bf16_body;
#include "kernels/cpu/attention_bf16.inc"

// The bytes of K2, V2 and the scores an item may keep in L1 (48 KB on the
// AMX cores we run on) before its B tiles are streamed past it.
constexpr int64_t kL1Budget = 32 * 1024;

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

// C tiles 0..nt-1 (nt <= 4) += A x B_t: A (tile 4) loaded from `a` with row
// stride a_stride bytes, B_t (tiles 5, 6, 7, then 5 again) from b + 16 t words
// with row stride b_stride bytes. Tile numbers are immediates, hence the
// unrolled form.
// Stream: B (K2 in Q·K^T, V2 in P·V) loaded with the no-reuse hint
// (TILELOADDT1), where K2, V2 and the scores together outgrow L1 (see
// attention_block_amx_bf16).
// B tile T from b (GCC's tile intrinsics take the tile number as a literal,
// hence a macro), with the no-reuse hint when Stream.
#define SPINEL_LOAD_B(T, b, stride)       \
  do {                                    \
    if (Stream)                           \
      _tile_stream_loadd(T, (b), (stride)); \
    else                                  \
      _tile_loadd(T, (b), (stride));      \
  } while (0)

template <bool Stream>
inline void dp_up_to_4(const void* a, int64_t a_stride, const uint32_t* b, int64_t b_stride, int nt) {
  _tile_loadd(4, a, a_stride);
  SPINEL_LOAD_B(5, b, b_stride);
  _tile_dpbf16ps(0, 4, 5);
  if (nt > 1) {
    SPINEL_LOAD_B(6, b + 16, b_stride);
    _tile_dpbf16ps(1, 4, 6);
  }
  if (nt > 2) {
    SPINEL_LOAD_B(7, b + 32, b_stride);
    _tile_dpbf16ps(2, 4, 7);
  }
  if (nt > 3) {
    SPINEL_LOAD_B(5, b + 48, b_stride);
    _tile_dpbf16ps(3, 4, 5);
  }
}
#undef SPINEL_LOAD_B

inline void zero_c_tiles() {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
}

// S = Q K^T for one block of 16 query rows (qb: its BF16 rows, qb_stride
// bytes apart; K2's rows k2_stride words apart) into s (16 rows lp floats
// apart), four 16-key tiles at a time sharing each A load.
template <bool Stream>
void block_scores(const AmxLayout& a, int64_t seq_len, const uint32_t* k2, int64_t k2_stride, const uint16_t* qb,
                  int64_t qb_stride, float* s) {
  const int64_t key_tiles = round_up(seq_len, 16) / 16;
  for (int64_t t0 = 0; t0 < key_tiles; t0 += 4) {
    const int nt = static_cast<int>(key_tiles - t0 < 4 ? key_tiles - t0 : 4);
    zero_c_tiles();
    for (int64_t d0 = 0; d0 < a.dp; d0 += 32)
      dp_up_to_4<Stream>(qb + d0, qb_stride, k2 + (d0 / 2) * k2_stride + t0 * 16, k2_stride * 4, nt);
    float* st = s + t0 * 16;
    const int64_t sst = a.lp * 4;
    _tile_stored(0, st, sst);
    if (nt > 1) _tile_stored(1, st + 16, sst);
    if (nt > 2) _tile_stored(2, st + 32, sst);
    if (nt > 3) _tile_stored(3, st + 48, sst);
  }
}

// The rest of the block of query rows [i0, i0 + nq) whose scores are in s:
// softmax, P over the scores, O = P V, and the output rows.
// V2's 32-key blocks before key v_full are read from v2_ip (in place, the
// same row stride), the rest from v2.
template <bool Stream>
void block_softmax_pv(const AttentionBlock& b, const AmxLayout& a, const uint32_t* v2, const uint32_t* v2_ip,
                      int64_t v_full, float* s, float* o, int64_t i0, int nq) {
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
      dp_up_to_4<Stream>(reinterpret_cast<const uint16_t*>(s) + j0, a.lp * 4,
                         (j0 < v_full ? v2_ip : v2) + (j0 / 2) * a.dv + c0 * 16, a.dv * 4, nt);
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
  // Q already in BF16 with whole 32-dim tile rows (head_dim a multiple of
  // 32): a block of 16 query rows is read by the tiles in place, and only a
  // last block of fewer rows (whose tile would read past the sequence) is
  // copied into the item's scratch. The copy of every query row was 16 KB of
  // the item's L1 at 128 tokens (48 KB at 384) next to K2, V2 and the scores;
  // the same bits either way.
  const bool q_in_place = b.qkv_bf16 != nullptr && b.head_dim % 32 == 0;
  // K2 in place where the QKV Linear wrote K in pair words (AttentionBlock::k2,
  // whose contract also gives q_in_place): no transpose here.
  const bool k2_in_place = b.k2 != nullptr;
  // V's whole 32-key blocks in place (v2_in_place; the same row stride,
  // head_dim words, as V2's): V2 is built for the rest only.
  const uint32_t* v2_ip = v2_in_place(b);
  const int64_t v_full = v2_ip ? b.seq_len / 32 * 32 : 0;
  const Operands op = build_item(b, scratch, q_in_place, k2_in_place, v_full);
  const uint32_t* k2 = k2_in_place ? b.k2 : op.k2;
  const int64_t k2_stride = k2_in_place ? b.k2_stride : op.a.lp;
  // K2 and V2 are read once per query block. Where they and the scores
  // outgrow L1, cached there they pushed out the score rows, whose tile
  // stores then missed L1 (a store that misses costs about three products):
  // so loaded with the no-reuse hint. BERT-base 90% INT8 (head_dim 64),
  // attention per run: 128 tokens 0.93 -> 0.86 ms, 384 tokens 6.4 -> 5.9
  // (with Q read in place: 0.82 and 5.6). Where they fit (MiniLM's head_dim
  // 32 at 128 tokens: 24 KB), as before. What the hint saves depends on the
  // shared L3 answering quickly (likely: data loaded with it is fetched from
  // L3 again by the next query block): for some minutes of a busier machine
  // it measured 20% slower at 128 tokens, then 6% faster again (RESULTS.md,
  // 2026-12-07 12:13 section).
  // (K2 and V2 are the layout's words before Qb; the scores 16 rows of lp.)
  const int64_t item_bytes = 4 * ((op.a.qb - op.a.k2) + 16 * op.a.lp);
  const bool stream = item_bytes > kL1Budget;
  // The tile configuration is per thread and other code (oneDNN) sets its
  // own: load ours for every item, release the tiles after it.
  _tile_loadconfig(&tile_config());
  // Per block of 16 query rows: the scores (tile operations), then the
  // softmax and P·V. (Until 2026-12-07 one function did both per block. As
  // two, the same operations in the same order, the same bits, measured
  // faster: attention per run, BERT-base 90% INT8, 64 tokens 0.42 -> 0.37-0.39
  // ms, 128 tokens 1.28-1.37 -> 0.97-1.02, 384 tokens 7.3-7.6 -> 5.9-6.1;
  // MiniLM 8 x 128 tokens 3.1 -> 2.6-2.8; dense BERT-base 1.06-1.08 ->
  // 1.01-1.06. The old function alone, kept out of line (noinline),
  // measured the same as this: what cost was how GCC compiled it inlined
  // into this one; the instruction-level cause was not pinned down
  // (RESULTS.md). Issuing the next block's scores before this block's
  // softmax, into a second score buffer, measured 5-8% slower than this.
  // The loop is written out rather than for_each_query_block's lambda: that
  // compiles to different code, and only this form was measured.)
  const int64_t blocks = (b.q_end - b.q_begin + 15) / 16;
  for (int64_t k = 0; k < blocks; ++k) {
    const int64_t i0 = b.q_begin + 16 * k;
    const int nq = static_cast<int>(b.q_end - i0 < 16 ? b.q_end - i0 : 16);
    // The Q tile rows: in place from the BF16 rows, or the item's copy
    // (zero rows past nq).
    const uint16_t* q = op.qb + (i0 - b.q_begin) * op.a.dp;
    int64_t q_stride = op.a.dp * 2;
    if (q_in_place && nq == 16) {
      q = b.qkv_bf16 + i0 * b.qkv_stride + b.q_col;
      q_stride = b.qkv_stride * 2;
    }
    if (stream) {
      block_scores<true>(op.a, b.seq_len, k2, k2_stride, q, q_stride, op.s);
      block_softmax_pv<true>(b, op.a, op.v2, v2_ip, v_full, op.s, op.o, i0, nq);
    } else {
      block_scores<false>(op.a, b.seq_len, k2, k2_stride, q, q_stride, op.s);
      block_softmax_pv<false>(b, op.a, op.v2, v2_ip, v_full, op.s, op.o, i0, nq);
    }
  }
  _tile_release();
}

}  // namespace spinel::kernels::f32
