// INT8 Linear kernels of the CPU backend: block-sparse u8 x s8 SpMM (4x1
// blocks) and dense u8 x s8 through oneDNN, with one fused epilogue.
//
// The quantization contract every path implements is in kernels/int8.h.
//
// Threads: the parallel entry points use TBB and run inside the caller's
// tbb::task_arena (no threads of their own); the oneDNN path uses the calling
// thread's OpenMP budget (omp_get_max_threads()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/cpu/isa.h"
#include "kernels/int8.h"

namespace spinel::kernels {

// ---------------------------------------------------------------------------
// Dynamic per-token quantization of f32 activations.
//
// Per row m: lo = min(0, min_k x), hi = max(0, max_k x) (the range includes
// 0 so that 0 is exact); if hi == lo the row is all zeros: scale 1, zp 0, q 0.
// Otherwise scale = (hi - lo) / 255, inv = 1 / scale,
// zp = clamp(nearbyint(-lo * inv), 0, 255), q = clamp(nearbyint(x * inv) + zp, 0, 255).
// x: [M, K] (row stride ldx), xq: [M, K] (row stride ldq). Parallel over rows
// (TBB). Rounding is to nearest even.
// mul (nullable): the Linear's input scale [K] (ir.h slot::kInScale); the row
// quantized is then x[m, k] * mul[k] (one float product per value, the same in
// every path), in place of x.
void quantize_rows_u8(const float* x, int64_t M, int64_t K, uint8_t* xq, float* scale,
                      int32_t* zp, int64_t ldx = -1, int64_t ldq = -1, const float* mul = nullptr);

// Static quantization with one calibrated (scale, zp) for every row:
// q = clamp(nearbyint(x / scale) + zp, 0, 255); fills x_scale/x_zp [M] with
// them so the Linear kernels take the same per-token arguments. Parallel
// over rows (TBB). mul as quantize_rows_u8.
void quantize_rows_u8_static(const float* x, int64_t M, int64_t K, float scale, int32_t zp,
                             uint8_t* xq, float* x_scale, int32_t* x_zp, const float* mul = nullptr);

// ---------------------------------------------------------------------------
// Block-sparse weights, 4x1 blocks (4 consecutive output channels x 1 input
// channel), packed once (convert time or model load).
//
// Block-row br covers output channels 4br .. 4br+3. Its nonzero blocks (the
// input channels k whose 4 weights are not all 0), in increasing k, are
// grouped 4 at a time; the last group of a block-row is padded with zero
// blocks whose index repeats the group's last valid k (so they read valid
// memory and add 0). A block-row with no nonzero block has no group.
//
//   group_ptr [N/4 + 1]  groups of block-row br: group_ptr[br] .. group_ptr[br+1]-1
//   kidx      [groups*4] input channel of each block of each group
//   koff8     [groups*4] uint16: kidx times 8 when K <= 8192 (else empty), the
//                         AVX-512 kernel's row offsets in units of 8 bytes, scaled by
//                         its addressing (no index arithmetic in its inner loop)
//   koff64    [groups*4] kidx times 64 (bytes) when K > 8192 (else empty): the same
//                         for wider layers (int32 offsets, twice the index bytes)
//   w         [groups*16] s8: group g, channel c (0..3), slot j (0..3) at 16g + 4c + j
//                         = W[kidx[4g+j]][4br+c]: for each channel the 4 weights of a
//                         group are one 32-bit word, the vpdpbusd broadcast operand
//   w16       [groups*16] s16: the same weights for the AVX2 (no VNNI) path, per
//                         channel ordered (j0, j2, j1, j3) for two vpmaddwd
//   wsum      [N]         sum_k W[k][n], for the zero-point correction
//   scale_w   [N]         per-channel weight scale
//   bias      [N] or null (not owned; must outlive the pack)
struct PackedS8Sparse {
  int64_t K = 0, N = 0;
  int64_t nnz_blocks = 0;  // nonzero blocks, padding excluded
  int64_t groups = 0;      // groups including padded ones
  double sparsity = 0;     // 1 - nnz_blocks / (K * N / 4)
  std::vector<int32_t> group_ptr;
  std::vector<int32_t> kidx;
  std::vector<uint16_t> koff8;  // kidx * 8 (K <= 8192): the zmm kernel's row offsets / 8
  std::vector<int32_t> koff64;  // kidx * 64 (K > 8192): its byte offsets
  std::vector<int8_t> w;
  std::vector<int16_t> w16;
  std::vector<int32_t> wsum;
  // wsum_pair_words(wsum): the zmm kernel's zero-point correction in one
  // vpmaddwd against the token's words (zp, 128 zp). Empty when some |wsum|
  // is beyond ~4.19e6 (K > 2^15); the kernel then multiplies as before.
  std::vector<int32_t> wsum_pairs;
  std::vector<float> scale_w;
  const float* bias = nullptr;
  // max |scale_w| and max |bias| (0 without one), +inf when any is not finite.
  double scale_w_max = 0, bias_max = 0;
};

// The zero-point correction -zp wsum by vpmaddwd of int16 pair words, exact:
// per channel (lo, hi), lo + 128 hi = -wsum[n], lo in [0, 128) (empty when
// some |hi| >= 2^15, |wsum| beyond ~4.19e6: then the kernels multiply in 32
// bits); per token (zp, 128 zp), int16 words for zp in [0, 255], which every
// quantization gives (zp_pairs_fit checks a call's).
std::vector<int32_t> wsum_pair_words(const int32_t* wsum, int64_t N);
inline int32_t zp_pair_word(int32_t zp) {
  const auto z = static_cast<uint32_t>(zp);
  return static_cast<int32_t>(z | (z << 23));
}
inline bool zp_pairs_fit(const int32_t* zp, int64_t n) {
  uint32_t bad = 0;
  for (int64_t j = 0; j < n; ++j) bad |= static_cast<uint32_t>(zp[j]) > 255u;
  return bad == 0;
}

// Packs dense s8 W [K, N] (row-major, row stride N). K and N must be positive
// multiples of 4 (std::invalid_argument otherwise, naming the shape).
// scale_w must not be null; bias may be.
PackedS8Sparse pack_s8_sparse(const int8_t* W, int64_t K, int64_t N, const float* scale_w,
                              const float* bias);

// Fraction of all-zero 4x1 blocks of W [K, N] (K, N multiples of 4).
double block_sparsity_4x1(const int8_t* W, int64_t K, int64_t N);

// Work on whole token rows of a call's f32 token-row output once they are
// final (every channel written, the residual added): fn(ctx, m0, rows) is
// called for disjoint row ranges that together cover [0, M), once each. A
// thread that computed every channel of a token block calls it for that
// block right away, inside the kernel's parallel region, while the rows are
// in its cache: no second region, no join, no rows fetched from the other
// core. Blocks whose channels were split between threads are passed after
// the region, in parallel in ranges of at least min_rows rows (fewer rows
// in all: on the calling thread). Ranges run concurrently: fn must touch
// only its own rows (of y and of whatever it writes). The cpu backend runs
// the LayerNorm after a Linear this way (select.h linear_runs_layernorm).
struct RowsDone {
  void (*fn)(const void* ctx, int64_t m0, int64_t rows) = nullptr;
  const void* ctx = nullptr;
  int64_t min_rows = 1;
};

// y = epilogue(x W) for x u8 [M, K] (row stride ldx >= K) with per-token
// x_scale[M], x_zp[M]. y is float [M, ldy], or uint8_t [M, ldy] when
// ep.requantize. Any M >= 0. Uses the kernel of active_isa(); parallel with
// TBB in the caller's arena. Thread-safe for concurrent calls on one pack.
// done (nullable; f32 output only, std::invalid_argument otherwise): see
// RowsDone.
void spmm_u8s8(const PackedS8Sparse& w, const uint8_t* x, int64_t M, int64_t ldx,
               const float* x_scale, const int32_t* x_zp, const QEpilogue& ep, void* y,
               int64_t ldy, const RowsDone* done = nullptr);

// spmm_u8s8 with its f32 output in head panels: y is [N / panel][M][panel],
// channel n of token m at y[(n / panel) M panel + m panel + n % panel] (for
// attention: each head's Q, K and V rows contiguous, head_dim floats apart).
// The 64-token kernel stores 64 token rows per 16 channels; rows 3-9 KB apart
// (token-major N = 768-2304) fall into 4 of L1's 64 sets, rows 128-256 bytes
// apart into 16-32. Same values, bit for bit, as spmm_u8s8. panel: a multiple
// of 16 that divides N; no residual, no requantize (std::invalid_argument).
void spmm_u8s8_panels(const PackedS8Sparse& w, const uint8_t* x, int64_t M, int64_t ldx,
                      const float* x_scale, const int32_t* x_zp, const QEpilogue& ep, void* y,
                      int64_t panel);

// How the panels of a fused Q, K, V Linear (N = 3 H panel: Q, K, V of head
// h at panels h, H + h, 2 H + h) of M tokens are split between the calling
// arena's threads: P > 1 pieces, piece p heads [H p / P, H (p + 1) / P) of
// each of Q, K and V, when the M tokens are one block of the active kernel
// (M <= spmm_u8s8_token_block(): its channels are split between threads
// anyway, so no block is built twice) and P = the arena's concurrency
// divides H; else 0 (split by token blocks and block-rows).
// attention_f32 splits the heads of panel input of M tokens the same way,
// so each thread reads the Q, K and V it wrote. SPINEL_QKV_HEADS=off: never
// (A/B runs, tests; unset, auto or on: as above; other values warn once).
int64_t qkv_head_pieces(int64_t N, int64_t panel, int64_t M);

// spmm_u8s8 (or spmm_u8s8_panels, when panel > 0) on f32 activations x
// [M][ldx], quantized per token (x times mul, quantize_rows_u8's contract)
// by the kernel's own threads, each for the token blocks it works on, as it
// builds them: no separate pass and parallel region (and its join) before
// the kernel. The bits of quantize_rows_u8 then spmm_u8s8. done: as
// spmm_u8s8 (token rows only: not with panels).
void spmm_u8s8_f32in(const PackedS8Sparse& w, const float* x, int64_t M, int64_t ldx, const float* mul,
                     const QEpilogue& ep, void* y, int64_t ldy, int64_t panel = 0,
                     const RowsDone* done = nullptr);

// spmm_u8s8, spmm_u8s8_panels and spmm_u8s8_f32in take QEpilogue::out_bf16
// (y then uint16_t, its strides in 16-bit elements; no residual or
// requantize, no RowsDone): here, where the active kernel is the 64-token
// AVX-512 VNNI one and the CPU has AVX512_BF16 (std::invalid_argument
// elsewhere).
bool spmm_u8s8_bf16_available();

// Tokens per block of the active sparse INT8 kernel (64 for the AVX-512 VNNI
// one, 32 for the ymm ones, 16 scalar): what each work item reads at once.
int64_t spmm_u8s8_token_block();

// Raw accumulators acc[m][n] = sum_k x[m][k] W[k][n] (no zero-point
// correction, no epilogue) into int32 [M, ldacc]: for exact tests.
void spmm_u8s8_acc(const PackedS8Sparse& w, const uint8_t* x, int64_t M, int64_t ldx,
                   int32_t* acc, int64_t ldacc);

// ---------------------------------------------------------------------------
// Two sparse Linears in a row (FFN1 -> GELU -> FFN2) without the f32
// token-major round trip between them. Only on the 64-token AVX-512 VNNI
// kernel (spmm_u8s8_chain_available()); the results are bit for bit those of
// spmm_u8s8 -> quantize_rows_u8 -> spmm_u8s8.
//
// "Blocked" layout of C channels for M tokens: ceil(M / 64) blocks of [C][64],
// block b holding tokens 64 b .. 64 b + 63 (lanes past M are padding and
// hold anything finite or zero).
//   f32 blocked: natural token order within a block, the kernel's output as
//                it leaves its accumulators (no transposes, whole-line stores).
//   u8 blocked:  the kernel's activation layout (see interleave_block_u8 with
//                lanes = 4), ready for the next call without interleaving.
bool spmm_u8s8_chain_available();

// The range of some output channels' values per token of one block (lanes
// past the block's tokens: anything): lo/hi start at 0 (the quantization
// range includes 0), bit j of nan is set when token j met a value that is not
// finite (a NaN, or an infinity: quantization treats both alike).
struct BlockedRange {
  alignas(64) float lo[64];
  alignas(64) float hi[64];
  uint64_t nan;
};

// How many BlockedRange spmm_u8s8_to_blocked writes for N output channels
// and M tokens, in the calling TBB arena (the count depends on its size).
int64_t spmm_u8s8_blocked_ranges(int64_t N, int64_t M);

// The chain's blocked layouts, f32 [nb][N][64] and u8 [nb][K][64]: block b
// holds tokens [b S, b S + S) with S = spmm_u8s8_blocked_step(M) (at most 64:
// the token vectors shared out evenly among ceil(M / 64) blocks), token
// b S + j at place j (f32) or in the kernel's interleave of its block (u8);
// nb = ceil(M / S) <= ceil(M / 64).
int64_t spmm_u8s8_blocked_step(int64_t M);

// y_blk = act(x W + b) in the f32 blocked layout [nb][N][64], act = exact
// GELU when gelu (QEpilogue::gelu_coarse's polynomial when gelu_coarse),
// else none, times out_mul[n] when out_mul is not null (the
// next Linear's input scale [N]: the values its quantization reads). x,
// x_scale, x_zp as spmm_u8s8. Also writes ranges[spmm_u8s8_blocked_ranges(N,
// M)]: the tokens' ranges of the output, gathered while it is written (per
// work item; quantize_blocked_u8 combines them).
void spmm_u8s8_to_blocked(const PackedS8Sparse& w, const uint8_t* x, int64_t M, int64_t ldx,
                          const float* x_scale, const int32_t* x_zp, bool gelu, float* y_blk,
                          BlockedRange* ranges, const float* out_mul = nullptr,
                          bool gelu_coarse = false);

// Per-token dynamic quantization (the contract of quantize_rows_u8, same
// bits) of the f32 blocked y_blk [nb][K][64], with the ranges its
// spmm_u8s8_to_blocked call wrote (same M, N = K, same arena size), into the
// u8 blocked x_blk [nb][K][64]; scale[M], zp[M] as quantize_rows_u8.
// Parallel (TBB).
void quantize_blocked_u8(const float* y_blk, int64_t M, int64_t K, const BlockedRange* ranges,
                         uint8_t* x_blk, float* scale, int32_t* zp);

// The chain's second Linear on the first's f32 blocked output y_blk and
// ranges (spmm_u8s8_to_blocked, same M and arena size), each token block
// quantized by the kernel thread that reads it: the bits of
// quantize_blocked_u8 then spmm_u8s8_from_blocked, without that pass's
// parallel region. done: as spmm_u8s8.
void spmm_u8s8_from_blocked_f32(const PackedS8Sparse& w, const float* y_blk, const BlockedRange* ranges,
                                int64_t M, const QEpilogue& ep, void* y, int64_t ldy,
                                const RowsDone* done = nullptr);

// spmm_u8s8 on an input already in the u8 blocked layout [nb][K][64], 64-byte
// aligned (std::invalid_argument otherwise). done: as spmm_u8s8.
void spmm_u8s8_from_blocked(const PackedS8Sparse& w, const uint8_t* x_blk, int64_t M,
                            const float* x_scale, const int32_t* x_zp, const QEpilogue& ep,
                            void* y, int64_t ldy, const RowsDone* done = nullptr);

// Which layers run on this kernel: kernels/cpu/select.h.


// Name of the micro-kernel spmm_u8s8 uses at the active ISA, e.g.
// "spmm_u8s8_4x1_64x4_avx512vnni" (tokens x output channels per tile).
const char* spmm_u8s8_kernel_name();

// ---------------------------------------------------------------------------
// Dense u8 x s8 through oneDNN's matmul (int32 out), then the same epilogue
// (zero point and per-token scale applied by us: oneDNN 2.6 takes a
// per-tensor source zero point only). W is copied into oneDNN's preferred
// layout at construction; the object is immutable afterwards and run() may
// be called concurrently. oneDNN threads: OpenMP, omp_get_max_threads() of
// the calling thread.
class DenseLinearU8S8 {
 public:
  DenseLinearU8S8(const int8_t* W, int64_t K, int64_t N, const float* scale_w, const float* bias);
  ~DenseLinearU8S8();
  DenseLinearU8S8(const DenseLinearU8S8&) = delete;
  DenseLinearU8S8& operator=(const DenseLinearU8S8&) = delete;
  // done (nullable; f32 output only, std::invalid_argument otherwise): as
  // spmm_u8s8's (RowsDone). On oneDNN, each epilogue thread passes its rows
  // on as it finishes them; the AMX kernel (column panels per thread) passes
  // them after its region.
  // qout (nullable; f32 output without a residual and without done, else
  // std::invalid_argument): the output is wanted quantized per token for
  // the next Linear, the bits of quantize_rows_u8(y, M, N, qout->xq,
  // qout->scale, qout->zp, -1, -1, qout->mul); y is then scratch, its
  // contents unspecified afterwards. Where a thread holds whole rows (oneDNN
  // in TBB tasks split by rows, AVX-512 VNNI epilogue) it quantizes each row
  // from the epilogue's row buffer and y is not written at all. The AMX
  // kernel (threads split the columns) writes y * mul rounded to f16 into
  // y's memory and quantizes those rows after it: the bits of
  // quantize_rows_u8 on f16(y * mul) with no mul. A row is rounded to f16
  // only where it stays finite; otherwise the call is redone in f32 (the
  // bits of the first form).
  struct QuantOut {
    const float* mul = nullptr;  // the next Linear's input scale [N] (nullable)
    uint8_t* xq = nullptr;       // [M][N]
    float* scale = nullptr;      // [M]
    int32_t* zp = nullptr;       // [M]
  };
  void run(const uint8_t* x, int64_t M, int64_t ldx, const float* x_scale, const int32_t* x_zp,
           const QEpilogue& ep, void* y, int64_t ldy, const RowsDone* done = nullptr,
           const QuantOut* qout = nullptr) const;
  // QEpilogue::out_bf16 (y then uint16_t [M, ldy]; no GELU, requantization,
  // residual, done or qout, else std::invalid_argument): only where
  // writes_bf16(), else std::logic_error.
  bool writes_bf16() const;  // the AMX kernel, on a CPU with AVX512_BF16
  // int32 accumulators only (no correction), as spmm_u8s8_acc.
  void run_acc(const uint8_t* x, int64_t M, int64_t ldx, int32_t* acc, int64_t ldacc) const;
  int64_t K() const { return K_; }
  int64_t N() const { return N_; }
  // "amx_u8s8_dense" (our AMX-INT8 kernel, dense_s8_amx.cpp) or "dnnl_matmul_u8s8".
  const char* kernel_name() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int64_t K_, N_;
};

// Whether a DenseLinearU8S8 made now would write BF16 (writes_bf16): its AMX
// kernel on a CPU with AVX512_BF16. select.h asks before any is made.
bool dense_u8s8_writes_bf16();

// ---------------------------------------------------------------------------
// Internals shared by the per-ISA kernel files (not API).
namespace qgemm_detail {

// done over rows [m0, m0 + rows) in ranges of at least done.min_rows rows,
// in parallel over the caller's TBB arena (on the calling thread when they
// are too few to share).
void rows_done_all(const RowsDone& done, int64_t m0, int64_t rows);

// Rows [0, rows) of the epilogue on a row-major int32 accumulator block whose
// row i is token m0 + i and whose columns are y's first N (the caller offsets
// bias, scale_w, wsum, y and ep.residual to its first column). AVX-512 build
// in spmm_s8_avx512vnni.cpp: one pass, four rows at a time, without GELU;
// with GELU, per row through y's row or (with a residual or requantization
// after it) row_tmp: N + 16 floats.
void epilogue_rows_s32_avx512(const int32_t* acc, int64_t ldacc, int64_t m0, int64_t rows,
                              int64_t N, const float* bias, const float* scale_w,
                              const int32_t* wsum, const float* x_scale, const int32_t* x_zp,
                              const QEpilogue& ep, void* y, int64_t ldy, float* row_tmp);

// F32Blocked: the f32 blocked layout above (64-token kernel only; y points
// at block 0, ldy is N).
// Bf16: token rows of BF16 (QEpilogue::out_bf16; 64-token kernel only).
// Bf16Pairs: BF16 pair words of two channels, channel-major (QEpilogue::k_pairs):
// word ((n - n_base) / 2) ldy + m of uint32_t y, for even n - n_base.
// Bf16TokenPairs: BF16 pair words of two tokens, token-pair-major
// (QEpilogue::v_pairs): word (m / 2) ldy + n - n_base of uint32_t y, for even m.
enum class OutKind : int { F32 = 0, U8 = 1, S32Raw = 2, F32Blocked = 3, Bf16 = 4, Bf16Pairs = 5, Bf16TokenPairs = 6 };

// One work item of the sparse kernel: block-rows [br0, br1) x tokens
// [m0, m0 + mc) (mc <= the kernel's token block). x points to this token
// block's activations in the kernel's layout (see spmm_s8_pack.cpp):
// - scalar: token-major rows, x[(m - m0) * ldx + k];
// - vector kernels: the interleaved block [K][B] (B = 64 for zmm, 32 for ymm).
struct SpmmTile {
  const PackedS8Sparse* w;
  const uint8_t* x;
  int64_t ldx;
  int64_t m0, mc;
  int64_t br0, br1;
  const float* x_scale;  // [M], indexed by absolute token
  const int32_t* x_zp;   // [M]
  const QEpilogue* ep;
  OutKind out;
  void* y;  // [M, ldy] of the out kind, indexed by absolute token
  int64_t ldy;
  BlockedRange* range = nullptr;  // F32Blocked: this item's ranges (folded in)
  // The tokens per block of the call (run_spmm's block_step; at most the
  // kernel's block): F32Blocked writes block m0 / step of y's layout.
  int64_t step = 64;
  // Bf16Pairs, Bf16TokenPairs: the channel at the start of y's pair rows (its
  // panel's first).
  int64_t n_base = 0;
};
using SpmmTileFn = void (*)(const SpmmTile&);

// The AMX-INT8 dense kernel (dense_s8_amx.cpp; only where cpu_has_amx_int8()
// and the active level is avx512vnni). W [K, N] is packed once by
// amx_s8_pack into amx_s8_packed_bytes(K, N) bytes; amx_s8_run computes the
// 32-channel column panels [panel_begin, panel_end) of y for all M tokens,
// with the epilogue of out (F32, U8) or the raw int32 sums (S32Raw, y int32
// with row stride ldy). pad: scratch of amx_s8_pad_bytes(M, K) bytes.
struct AmxS8Args {
  const int8_t* packed;
  int64_t K, N;
  const uint8_t* x;
  int64_t M, ldx;
  const float* bias;  // nullable
  const float* scale_w;
  const int32_t* wsum;
  const float* x_scale;
  const int32_t* x_zp;
  const QEpilogue* ep;
  OutKind out;
  void* y;
  int64_t ldy;
  // F32 out: write y with streaming (non-temporal) stores where whole
  // aligned vectors allow, for an output too large to stay in cache until it
  // is read (see DenseLinearU8S8::run).
  bool stream_y = false;
  // F32 out without a residual: y is uint16_t [M, ldy] and gets each value
  // times y_mul[n] (nullable: 1) rounded to f16 (round to nearest even; past
  // the f16 range +-inf). For DenseLinearU8S8::QuantOut.
  bool y_f16 = false;
  const float* y_mul = nullptr;
  // F32 out without GELU or a residual: y is uint16_t [M, ldy] and gets each
  // value rounded to BF16 (round to nearest even, _mm512_cvtne2ps_pbh); only
  // where cpu_has_avx512_bf16(). For QEpilogue::out_bf16.
  bool y_bf16 = false;
};
int64_t amx_s8_packed_bytes(int64_t K, int64_t N);
inline int64_t amx_s8_panels(int64_t N) { return (N + 31) / 32; }
// x is copied (zero-padded to a multiple of 64 channels, rows 64-byte
// aligned) unless K is a multiple of 64 and every row starts on a line.
inline bool amx_s8_copies_x(int64_t K, const uint8_t* x, int64_t ldx) {
  return K % 64 != 0 || ldx % 64 != 0 || reinterpret_cast<uintptr_t>(x) % 64 != 0;
}
inline int64_t amx_s8_pad_bytes(int64_t M, int64_t K, const uint8_t* x, int64_t ldx) {
  const int64_t Kp = (K + 63) / 64 * 64;
  return (amx_s8_copies_x(K, x, ldx) ? M * Kp : 0) + 16 * Kp;
}
void amx_s8_pack(const int8_t* W, int64_t K, int64_t N, int8_t* out);
void amx_s8_run(const AmxS8Args& a, int64_t panel_begin, int64_t panel_end, uint8_t* pad);

void spmm_u8s8_4x1_1x4_scalar(const SpmmTile& t);
void spmm_u8s8_4x1_16x4_avx2(const SpmmTile& t);            // B = 32
void spmm_u8s8_4x1_16x4_avxvnni(const SpmmTile& t);         // B = 32 (VEX AVX-VNNI)
void spmm_u8s8_4x1_16x4_avx512vl_vnni(const SpmmTile& t);   // B = 32 (EVEX ymm)
void spmm_u8s8_4x1_64x4_avx512vnni(const SpmmTile& t);      // B = 64

// Epilogue of one output element (scalar form of the contract), used by the
// scalar kernel, the references and vector tails. Returns the float value
// before requantization.
float epilogue_value(int32_t acc, int64_t m, int64_t n, const PackedS8Sparse* w,
                     const float* bias, const float* scale_w, const int32_t* wsum,
                     const float* x_scale, const int32_t* x_zp, const QEpilogue& ep);
uint8_t requantize_value(float y, const QEpilogue& ep);

// Interleaves token-major x (rows [m_begin, m_begin + B) of M, zero past M)
// into the vector kernels' block layout for lanes L (B = 16 L): position
// p = 16 l + 4 r + i of row k holds token m_begin + 4 L r + 4 l + i.
void interleave_block_u8(const uint8_t* x, int64_t M, int64_t K, int64_t ldx, int64_t m_begin,
                         int lanes, uint8_t* out);
// The same with AVX-512 for lanes = 4 only (spmm_s8_avx512vnni.cpp; only
// after active_isa() allows it).
void interleave_block_u8_zmm(const uint8_t* x, int64_t M, int64_t K, int64_t ldx, int64_t m_begin,
                             int lanes, uint8_t* out);

// quantize_blocked_u8's conversion of channels [k0, k1) of one block's
// [K][64] into the u8 blocked rows [k0, k1), with per-lane inv/zp [64] (inv
// 0 and zp 0 give 0). Tokens from 16 nvec on (1 <= nvec <= 4; the block's
// tokens past its last) are not read and are written as 0. AVX-512.
void blocked_convert_zmm(const float* y_blk, int64_t k0, int64_t k1, const float* inv,
                         const int32_t* zp, uint8_t* x_blk, int nvec);

// quantize_rows_u8's rows (row stride ldx in, K out) on the calling thread
// (no parallel region): the same bits. For fusions that already run rows in
// parallel (ops.h layernorm_quantize_f32, spmm_u8s8_f32in).
void quantize_rows_u8_here(const float* x, int64_t M, int64_t K, int64_t ldx, uint8_t* xq, float* scale,
                           int32_t* zp, const float* mul);
// The same on f16 rows (h [M, ldh], no mul): the bits of quantize_rows_u8 on
// the rows converted to f32. AVX-512 only (the AMX kernel's QuantOut): the
// caller checks active_isa() >= Avx512Vnni.
void quantize_rows_u8_f16_here(const uint16_t* h, int64_t M, int64_t K, int64_t ldh, uint8_t* xq, float* scale,
                               int32_t* zp);

// The scale and zero point of a token from its range (quantize.cpp; the one
// formula every quantization path uses). Returns false when the token's
// values all quantize to 0 (an all-zero row; or a NaN/Inf row, whose scale
// is NaN); then *inv is not set.
bool token_quant_params(float lo, float hi, bool finite, float* scale, int32_t* zp, float* inv);

}  // namespace qgemm_detail
}  // namespace spinel::kernels
