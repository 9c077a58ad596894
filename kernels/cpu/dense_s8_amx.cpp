// Dense u8 x s8 Linear on AMX-INT8 tiles, with the INT8 epilogue of qgemm.h
// applied to each 32 x 32 block of results as soon as it leaves the tiles.
//
// Why our own, when oneDNN's matmul runs on AMX too: measured on BERT-base
// shapes at M = 128 (2 cores), oneDNN 2.6's AMX u8s8 matmul reached ~22% of
// the tiles' peak (1.34 of 6.2 TMAC/s), wrote an int32 [M, N] matrix that our
// epilogue then read back (the per-token zero point keeps oneDNN from
// applying it: see dense_s8_dnnl.cpp), and ran on OpenMP threads beside our
// TBB ones. Here the products stay in tiles until a 32 x 32 block is done,
// the epilogue runs on it while it is in L1, and the work runs on the
// caller's TBB arena.
//
// Layout. W [K, N] s8 is packed once into tiles of 16 rows x 64 bytes: tile
// (nb, kb) row r holds, for the 16 output channels nb*16 .. +15, input
// channels kb*64 + 4r .. +3 (4 bytes per channel, the order TDPBUSD reads),
// zero past K and N. Stored [nb][kb] so that one column block's tiles are
// contiguous. x is read as it is ([M, ldx] u8 rows, 64 input channels of 16
// tokens per A tile); a token block with fewer than 16 rows, or K not a
// multiple of 64, goes through a zero-padded copy, so no read goes past x.
//
// Blocking: C = 2 x 2 tiles (32 tokens x 32 channels), A in tiles 4-5, B in
// 6-7: per 64 input channels 4 tile loads and 4 TDPBUSD. Threads take
// contiguous ranges of 32-channel column panels (each weight read once); per
// panel every token block in turn, so the panel's tiles are reread from
// L1/L2. Past ~1 MB of x the tokens go in chunks so that x stays in L2.
//
// Compiled with -mamx-tile -mamx-int8, AVX-512 and AVX512_BF16 (per-file
// flags; BF16 only for y_bf16, which the caller asks for where the CPU has it); only
// called when cpu_has_amx_int8() and the active level is avx512vnni.
// GCC 12 reports _mm512_undefined_*() inside its own intrinsics as
// uninitialized (GCC bug 105593); the values are fully defined.
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/cpu/f32_isa.h"
#include "kernels/cpu/qgemm.h"

#if !(defined(__AMX_TILE__) || defined(__AMXTILE__)) || !(defined(__AMX_INT8__) || defined(__AMXINT8__)) || \
    !defined(__AVX512F__) || !defined(__AVX512BF16__)
#error "dense_s8_amx.cpp needs -mamx-tile -mamx-int8 -mavx512f -mavx512bf16"
#endif

namespace spinel::kernels::qgemm_detail {
namespace {

constexpr int64_t kTileK = 64;   // input channels per tile
constexpr int64_t kTileN = 16;   // output channels per B tile
constexpr int64_t kTileM = 16;   // tokens per A tile
constexpr int64_t kTileBytes = 1024;

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

const TileConfig& tile_config() {
  static const TileConfig c = [] {
    TileConfig t;
    for (int i = 0; i < 8; ++i) {
      t.colsb[i] = 64;
      t.rows[i] = 16;
    }
    return t;
  }();
  return c;
}

// C tiles of one 32 x 32 block (MA token tiles x NB channel tiles) over kb
// tiles of K, stored to c [32][32] int32. a: the block's first token row
// (row stride lda); b0, b1: the two column tiles' first K tile.
// Tiles have no renaming: a load into a tile waits for every product that
// reads it, so each product is followed by the load its operand's next tile
// can take (A0 after C1, B0 after C2, ...) and loads overlap products.
// pf, npf: npf lines from pf (the next panel's weights) asked into L2 while
// the products run, spread over the K steps. This load order and the
// prefetch together: dense BERT-base INT8 1.06-1.09x end to end at 128
// tokens (prefetching 2-4 panels ahead measured 0.93-0.97x at 16 tokens).
template <int MA, int NB>
void block(const uint8_t* a, int64_t lda, const int8_t* b0, const int8_t* b1, int64_t kb,
           int32_t* c, const char* pf, int64_t npf) {
  _tile_zero(0);
  if (NB > 1) _tile_zero(1);
  if (MA > 1) _tile_zero(2);
  if (MA > 1 && NB > 1) _tile_zero(3);
  const int64_t per_step = (npf + kb - 1) / kb;
  _tile_loadd(4, a, lda);
  _tile_loadd(6, b0, 64);
  if (NB > 1) _tile_loadd(7, b1, 64);
  if (MA > 1) _tile_loadd(5, a + kTileM * lda, lda);
  for (int64_t k = 0; k < kb; ++k) {
    const bool more = k + 1 < kb;
    for (int64_t q = 0; q < per_step && npf > 0; ++q, --npf, pf += 64) _mm_prefetch(pf, _MM_HINT_T1);
    _tile_dpbusd(0, 4, 6);
    if (NB > 1) _tile_dpbusd(1, 4, 7);
    if (more) _tile_loadd(4, a + (k + 1) * kTileK, lda);
    if (MA > 1) _tile_dpbusd(2, 5, 6);
    if (more) _tile_loadd(6, b0 + (k + 1) * kTileBytes, 64);
    if (MA > 1 && NB > 1) _tile_dpbusd(3, 5, 7);
    if (more) {
      if (NB > 1) _tile_loadd(7, b1 + (k + 1) * kTileBytes, 64);
      if (MA > 1) _tile_loadd(5, a + kTileM * lda + (k + 1) * kTileK, lda);
    }
  }
  _tile_stored(0, c, 128);
  if (NB > 1) _tile_stored(1, c + 16, 128);
  if (MA > 1) _tile_stored(2, c + 16 * 32, 128);
  if (MA > 1 && NB > 1) _tile_stored(3, c + 16 * 32 + 16, 128);
}

// One vector of f32 output: a streaming store when asked for and the vector
// is whole and on a line boundary, else an ordinary (masked) one.
inline void store_y(float* y, __mmask16 mask, __m512 v, bool stream) {
  if (stream && mask == 0xFFFF && (reinterpret_cast<uintptr_t>(y) & 63) == 0)
    _mm512_stream_ps(y, v);
  else
    _mm512_mask_storeu_ps(y, mask, v);
}

// One token row of a block's f32 values v[0..nv) as f16 (AmxS8Args::y_f16):
// times y_mul first when given, then rounded to nearest even. A whole 32-
// column row is one 64-byte store (streamed when asked and on a line).
inline void store_row_f16(const AmxS8Args& p, int64_t m, int64_t n0, int nv, const __mmask16* mask, __m512* v) {
  uint16_t* yh = static_cast<uint16_t*>(p.y) + m * p.ldy + n0;
  __m256i h[2];
  for (int i = 0; i < nv; ++i) {
    if (p.y_mul) v[i] = _mm512_mul_ps(v[i], _mm512_maskz_loadu_ps(mask[i], p.y_mul + n0 + 16 * i));
    h[i] = _mm512_cvtps_ph(v[i], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  if (nv == 2 && mask[1] == 0xFFFF) {
    const __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(h[0]), h[1], 1);
    if (p.stream_y && (reinterpret_cast<uintptr_t>(yh) & 63) == 0)
      _mm512_stream_si512(reinterpret_cast<__m512i*>(yh), w);
    else
      _mm512_storeu_si512(yh, w);
    return;
  }
  for (int i = 0; i < nv; ++i) _mm256_mask_storeu_epi16(yh + 16 * i, mask[i], h[i]);
}

// The INT8 epilogue (qgemm.h; the same operations in the same order as
// epilogue_rows_s32_avx512) on one 32 x 32 block c: rows [0, rows) are tokens
// m0.., columns [0, ncols) channels n0... The f32 values go through fb so that
// GELU runs once over the block, then the residual and the store per row.
void block_epilogue(const AmxS8Args& p, const int32_t* c, int64_t m0, int64_t rows, int64_t n0,
                    int64_t ncols, float* fb) {
  const QEpilogue& ep = *p.ep;
  const int nv = ncols > 16 ? 2 : 1;
  __mmask16 mask[2];
  __m512i ws[2];
  __m512 sw[2], bv[2];
  for (int h = 0; h < nv; ++h) {
    const int64_t left = ncols - 16 * h;
    mask[h] = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    ws[h] = _mm512_maskz_loadu_epi32(mask[h], p.wsum + n0 + 16 * h);
    sw[h] = _mm512_maskz_loadu_ps(mask[h], p.scale_w + n0 + 16 * h);
    bv[h] = p.bias ? _mm512_maskz_loadu_ps(mask[h], p.bias + n0 + 16 * h) : _mm512_setzero_ps();
  }
  // The one-pass loops below spell out the same per-row values each: written
  // through one shared lambda (capturing ws, sw and bv), MiniLM's FFN1 at 8 x
  // 128 tokens went 4.7-5.0 -> 6.7-6.8 ms per run, and a merged f32/f16 loop
  // had made its QKV 1.3x slower.
  if (!ep.gelu && !ep.requantize && p.y_bf16) {
    // One pass into BF16 (no residual with y_bf16): each 32-column row one
    // 64-byte store where whole.
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t m = m0 + r;
      const __m512i zp = _mm512_set1_epi32(p.x_zp[m]);
      const __m512 xs = _mm512_set1_ps(p.x_scale[m]);
      __m512 v[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
      for (int h = 0; h < nv; ++h) {
        const __m512i corr =
            _mm512_sub_epi32(_mm512_load_si512(c + r * 32 + 16 * h), _mm512_mullo_epi32(zp, ws[h]));
        v[h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(corr), _mm512_mul_ps(xs, sw[h]), bv[h]);
      }
      uint16_t* yh = static_cast<uint16_t*>(p.y) + m * p.ldy + n0;
      const __m512i w = (__m512i)_mm512_cvtne2ps_pbh(v[1], v[0]);
      if (nv == 2 && mask[1] == 0xFFFF)
        _mm512_storeu_si512(yh, w);
      else  // (mask[1] is set only for nv == 2)
        _mm512_mask_storeu_epi16(
            yh, static_cast<__mmask32>(mask[0]) | (nv == 2 ? static_cast<__mmask32>(mask[1]) << 16 : 0u), w);
    }
    return;
  }
  if (!ep.gelu && !ep.requantize && p.y_f16) {
    // One pass into f16 (no residual with y_f16).
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t m = m0 + r;
      const __m512i zp = _mm512_set1_epi32(p.x_zp[m]);
      const __m512 xs = _mm512_set1_ps(p.x_scale[m]);
      __m512 v[2];
      for (int h = 0; h < nv; ++h) {
        const __m512i corr =
            _mm512_sub_epi32(_mm512_load_si512(c + r * 32 + 16 * h), _mm512_mullo_epi32(zp, ws[h]));
        v[h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(corr), _mm512_mul_ps(xs, sw[h]), bv[h]);
      }
      store_row_f16(p, m, n0, nv, mask, v);
    }
    return;
  }
  if (!ep.gelu && !ep.requantize) {
    // One pass: nothing needs the whole block first.
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t m = m0 + r;
      const __m512i zp = _mm512_set1_epi32(p.x_zp[m]);
      const __m512 xs = _mm512_set1_ps(p.x_scale[m]);
      float* y = static_cast<float*>(p.y) + m * p.ldy + n0;
      for (int h = 0; h < nv; ++h) {
        const __m512i corr =
            _mm512_sub_epi32(_mm512_load_si512(c + r * 32 + 16 * h), _mm512_mullo_epi32(zp, ws[h]));
        __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(corr), _mm512_mul_ps(xs, sw[h]), bv[h]);
        if (ep.residual)
          v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask[h], ep.residual + m * ep.ld_residual + n0 + 16 * h));
        store_y(y + 16 * h, mask[h], v, p.stream_y);
      }
    }
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t m = m0 + r;
    const __m512i zp = _mm512_set1_epi32(p.x_zp[m]);
    const __m512 xs = _mm512_set1_ps(p.x_scale[m]);
    for (int h = 0; h < nv; ++h) {
      const __m512i corr =
          _mm512_sub_epi32(_mm512_load_si512(c + r * 32 + 16 * h), _mm512_mullo_epi32(zp, ws[h]));
      _mm512_store_ps(fb + r * 32 + 16 * h,
                      _mm512_fmadd_ps(_mm512_cvtepi32_ps(corr), _mm512_mul_ps(xs, sw[h]), bv[h]));
    }
  }
  if (ep.gelu)
    (ep.gelu_coarse ? f32::kernel_table_avx512().gelu_erf_q : f32::kernel_table_avx512().gelu_erf)(fb, rows * 32);
  if (ep.requantize) {
    const __m512 lo = _mm512_set1_ps(-512.f), hi = _mm512_set1_ps(512.f);
    const __m512 inv = _mm512_set1_ps(1.f / ep.out_scale);
    const __m512i zpo = _mm512_set1_epi32(ep.out_zp);
    const __m512i z0 = _mm512_setzero_si512(), z255 = _mm512_set1_epi32(255);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t m = m0 + r;
      for (int h = 0; h < nv; ++h) {
        __m512 v = _mm512_load_ps(fb + r * 32 + 16 * h);
        if (ep.residual)
          v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask[h], ep.residual + m * ep.ld_residual + n0 + 16 * h));
        v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v, inv), lo), hi);
        __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), zpo);
        q = _mm512_min_epi32(_mm512_max_epi32(q, z0), z255);
        _mm512_mask_cvtepi32_storeu_epi8(static_cast<uint8_t*>(p.y) + m * p.ldy + n0 + 16 * h, mask[h], q);
      }
    }
    return;
  }
  if (p.y_f16) {
    for (int64_t r = 0; r < rows; ++r) {
      __m512 v[2];
      for (int h = 0; h < nv; ++h) v[h] = _mm512_load_ps(fb + r * 32 + 16 * h);
      store_row_f16(p, m0 + r, n0, nv, mask, v);
    }
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t m = m0 + r;
    float* y = static_cast<float*>(p.y) + m * p.ldy + n0;
    for (int h = 0; h < nv; ++h) {
      __m512 v = _mm512_load_ps(fb + r * 32 + 16 * h);
      if (ep.residual)
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask[h], ep.residual + m * ep.ld_residual + n0 + 16 * h));
      store_y(y + 16 * h, mask[h], v, p.stream_y);
    }
  }
}

using BlockFn = void (*)(const uint8_t*, int64_t, const int8_t*, const int8_t*, int64_t, int32_t*,
                        const char*, int64_t);
BlockFn block_fn(int ma, int nb) {
  if (ma > 1) return nb > 1 ? block<2, 2> : block<2, 1>;
  return nb > 1 ? block<1, 2> : block<1, 1>;
}

}  // namespace

int64_t amx_s8_packed_bytes(int64_t K, int64_t N) {
  return (K + kTileK - 1) / kTileK * ((N + kTileN - 1) / kTileN) * kTileBytes;
}

void amx_s8_pack(const int8_t* W, int64_t K, int64_t N, int8_t* out) {
  const int64_t kb = (K + kTileK - 1) / kTileK, nb = (N + kTileN - 1) / kTileN;
  std::memset(out, 0, static_cast<size_t>(amx_s8_packed_bytes(K, N)));
  for (int64_t j = 0; j < nb; ++j)
    for (int64_t t = 0; t < kb; ++t) {
      int8_t* tile = out + (j * kb + t) * kTileBytes;
      for (int64_t r = 0; r < 16; ++r)
        for (int64_t c = 0; c < kTileN; ++c) {
          const int64_t n = j * kTileN + c;
          if (n >= N) break;
          for (int64_t i = 0; i < 4; ++i) {
            const int64_t k = t * kTileK + 4 * r + i;
            if (k < K) tile[r * 64 + 4 * c + i] = W[k * N + n];
          }
        }
    }
}

void amx_s8_run(const AmxS8Args& p, int64_t panel_begin, int64_t panel_end, uint8_t* pad) {
  const int64_t K = p.K, N = p.N, M = p.M;
  const int64_t kb = (K + kTileK - 1) / kTileK, nbt = (N + kTileN - 1) / kTileN;
  const int64_t Kp = kb * kTileK;
  // x as the tiles read it: itself when K is a multiple of 64 and its rows
  // start on 64-byte lines (a partial token block is copied below), else all
  // of it copied, zero-padded to Kp, aligned: a tile row that straddles two
  // lines costs two (the kernel at M = 128 ran ~1.5x slower on them).
  const uint8_t* x = p.x;
  int64_t ldx = p.ldx;
  if (amx_s8_copies_x(K, p.x, p.ldx)) {
    for (int64_t m = 0; m < M; ++m) {
      std::memcpy(pad + m * Kp, p.x + m * p.ldx, static_cast<size_t>(K));
      std::memset(pad + m * Kp + K, 0, static_cast<size_t>(Kp - K));
    }
    x = pad;
    ldx = Kp;
  }
  // The last token block when M is not a multiple of 16: its rows, zero-padded
  // to 16 (after the padded copy of x above, if any).
  uint8_t* tail = pad + (x == pad ? M * Kp : 0);
  const int64_t mfull = M / kTileM * kTileM;
  if (mfull < M) {
    std::memset(tail, 0, static_cast<size_t>(kTileM * Kp));
    for (int64_t m = mfull; m < M; ++m) std::memcpy(tail + (m - mfull) * Kp, x + m * ldx, static_cast<size_t>(K));
  }
  // Token chunks of at most ~1 MB of x (whole 32-token blocks).
  int64_t chunk = (int64_t{1} << 20) / Kp / 32 * 32;
  if (chunk < 32) chunk = 32;
  alignas(64) int32_t c[32 * 32];
  alignas(64) float fb[32 * 32];  // the epilogue's f32 block
  _tile_loadconfig(&tile_config());
  for (int64_t mc0 = 0; mc0 < M; mc0 += chunk) {
    const int64_t mc1 = mc0 + chunk < M ? mc0 + chunk : M;
    for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
      const int64_t j0 = 2 * panel;                   // first 16-column tile
      const int nbk = j0 + 1 < nbt ? 2 : 1;           // column tiles in this panel
      const int64_t n0 = j0 * kTileN;
      const int64_t ncols = (n0 + 32 < N ? n0 + 32 : N) - n0;
      const int8_t* b0 = p.packed + j0 * kb * kTileBytes;
      const int8_t* b1 = nbk > 1 ? b0 + kb * kTileBytes : b0;
      // The next panel's weights (contiguous), a share per token block.
      const int64_t next_tiles = panel + 1 < panel_end ? (j0 + 3 < nbt ? 2 : 1) : 0;
      const int64_t pf_lines = next_tiles * kb * kTileBytes / 64;
      const int64_t nblk = (mc1 - mc0 + 31) / 32;
      const int64_t share = (pf_lines + nblk - 1) / nblk;
      const char* pf = reinterpret_cast<const char*>(b0 + 2 * kb * kTileBytes);
      for (int64_t m0 = mc0; m0 < mc1; m0 += 32) {
        const int64_t rows = (m0 + 32 < mc1 ? m0 + 32 : mc1) - m0;
        const int64_t first = (m0 - mc0) / 32 * share;
        const int64_t npf = first < pf_lines ? (first + share < pf_lines ? share : pf_lines - first) : 0;
        const char* pfb = pf + first * 64;
        // Token tiles: full ones straight from x, the partial one from tail.
        const int ma = rows > kTileM ? 2 : 1;
        if (m0 + 32 <= mfull || (ma == 1 && m0 + kTileM <= mfull)) {
          block_fn(ma, nbk)(x + m0 * ldx, ldx, b0, b1, kb, c, pfb, npf);
        } else if (m0 + kTileM <= mfull) {
          // First tile full, second partial: two passes of one token tile.
          block_fn(1, nbk)(x + m0 * ldx, ldx, b0, b1, kb, c, pfb, npf);
          block_fn(1, nbk)(tail, Kp, b0, b1, kb, c + 16 * 32, nullptr, 0);
        } else {
          block_fn(1, nbk)(tail, Kp, b0, b1, kb, c, pfb, npf);
        }
        if (p.out == OutKind::S32Raw) {
          auto* acc = static_cast<int32_t*>(p.y);
          for (int64_t r = 0; r < rows; ++r)
            std::memcpy(acc + (m0 + r) * p.ldy + n0, c + r * 32, static_cast<size_t>(4 * ncols));
          continue;
        }
        block_epilogue(p, c, m0, rows, n0, ncols, fb);
      }
    }
  }
  _tile_release();
  // Streaming stores are weakly ordered: complete them before the caller's
  // join publishes y to other threads.
  if (p.stream_y) _mm_sfence();
}

}  // namespace spinel::kernels::qgemm_detail
