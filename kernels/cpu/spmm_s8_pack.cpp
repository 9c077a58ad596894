// Block-sparse u8 x s8 SpMM: weight packing, activation interleaving, and the
// parallel driver that dispatches to the per-ISA micro-kernels.
//
// Activation layout of the vector kernels. The runtime holds activations
// token-major (u8 [M, K]); vpdpbusd wants, for one group of 4 blocks with
// input channels k0..k3, a register whose 32-bit lane q holds the 4 bytes
// x[q][k0..k3] of one token. Each call therefore first copies x into token
// blocks of B = 16 L tokens (L = 4 lanes of 128 bits for zmm, 2 for ymm),
// stored K-major ([K][B] per block), with the tokens of a row permuted so
// that two rounds of in-lane unpacks (punpck{l,h}bw, then punpck{l,h}wd) of
// the 4 rows k0..k3 give registers r = 0..3 holding tokens 4L r .. 4L r + 4L-1
// in natural order:
//   row k of block b, byte p = 16 l + 4 r + i  <-  x[b S + 4 L r + 4 l + i][k],
// where a call's blocks hold S <= B tokens each (run_spmm: block_step and
// token_step; the kernel reads only the token vectors of its block's own
// tokens, whatever the slots past them hold).
// The copy is a 16x16 byte transpose per (16 tokens, 16 input channels)
// (~0.3 shuffles per byte, SSE2), O(M K) per call against O(M nnz) kernel
// work; tokens past M are zero. The unpacks cost 2 shuffles per register of
// 16 tokens, amortized over the 4 output channels of the block-row.
#include <emmintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>
#include <tbb/task_arena.h>

#include "kernels/cpu/ops.h"
#include "kernels/reference/reference.h"
#include "kernels/cpu/parallel_util.h"
#include "kernels/cpu/qgemm.h"

namespace spinel::kernels {

using qgemm_detail::OutKind;
using qgemm_detail::SpmmTile;
using qgemm_detail::SpmmTileFn;

namespace {

void check_shape(const char* what, int64_t K, int64_t N) {
  if (K <= 0 || N <= 0 || K % 4 != 0 || N % 4 != 0)
    throw std::invalid_argument(std::string(what) + ": weight [K=" + std::to_string(K) +
                                ", N=" + std::to_string(N) +
                                "] unsupported: 4x1 block sparsity needs K and N positive "
                                "multiples of 4");
}

bool block_nonzero(const int8_t* W, int64_t N, int64_t k, int64_t n0) {
  const int8_t* p = W + k * N + n0;
  return (p[0] | p[1] | p[2] | p[3]) != 0;
}

}  // namespace

double block_sparsity_4x1(const int8_t* W, int64_t K, int64_t N) {
  check_shape("block_sparsity_4x1", K, N);
  int64_t nnz = 0;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n0 = 0; n0 < N; n0 += 4) nnz += block_nonzero(W, N, k, n0);
  return 1.0 - static_cast<double>(nnz) / static_cast<double>(K * (N / 4));
}

std::vector<int32_t> wsum_pair_words(const int32_t* wsum, int64_t N) {
  std::vector<int32_t> words(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) {
    const int64_t nws = -static_cast<int64_t>(wsum[n]);
    const int64_t lo = nws & 127, hi = (nws - lo) / 128;
    if (hi < -32768 || hi > 32767) return {};
    words[static_cast<size_t>(n)] = static_cast<int32_t>(static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16));
  }
  return words;
}

PackedS8Sparse pack_s8_sparse(const int8_t* W, int64_t K, int64_t N, const float* scale_w,
                              const float* bias) {
  check_shape("pack_s8_sparse", K, N);
  if (!W || !scale_w) throw std::invalid_argument("pack_s8_sparse: null weight or scale");
  if (K > (int64_t{1} << 24))
    throw std::invalid_argument("pack_s8_sparse: K=" + std::to_string(K) +
                                " too large (int32 accumulators)");
  PackedS8Sparse p;
  p.K = K;
  p.N = N;
  p.bias = bias;
  const int64_t nbr = N / 4;
  p.group_ptr.assign(nbr + 1, 0);
  std::vector<int32_t> ks;
  for (int64_t br = 0; br < nbr; ++br) {
    ks.clear();
    for (int64_t k = 0; k < K; ++k)
      if (block_nonzero(W, N, k, 4 * br)) ks.push_back(static_cast<int32_t>(k));
    p.nnz_blocks += static_cast<int64_t>(ks.size());
    const int64_t ng = (static_cast<int64_t>(ks.size()) + 3) / 4;
    for (int64_t g = 0; g < ng; ++g) {
      for (int j = 0; j < 4; ++j) {
        const int64_t b = 4 * g + j;
        const bool valid = b < static_cast<int64_t>(ks.size());
        // A padding block repeats the last valid index and carries zeros.
        p.kidx.push_back(valid ? ks[b] : ks.back());
      }
      const size_t base = p.w.size();
      p.w.resize(base + 16, 0);
      p.w16.resize(base + 16, 0);
      for (int c = 0; c < 4; ++c)
        for (int j = 0; j < 4; ++j) {
          const int64_t b = 4 * g + j;
          if (b >= static_cast<int64_t>(ks.size())) continue;
          p.w[base + 4 * c + j] = W[static_cast<int64_t>(ks[b]) * N + 4 * br + c];
        }
      for (int c = 0; c < 4; ++c) {
        static const int order[4] = {0, 2, 1, 3};
        for (int j = 0; j < 4; ++j) p.w16[base + 4 * c + j] = p.w[base + 4 * c + order[j]];
      }
    }
    p.group_ptr[br + 1] = p.group_ptr[br] + static_cast<int32_t>(ng);
  }
  p.groups = p.group_ptr[nbr];
  if (K <= 8192) {
    p.koff8.resize(p.kidx.size());
    for (size_t i = 0; i < p.kidx.size(); ++i) p.koff8[i] = static_cast<uint16_t>(p.kidx[i] * 8);
  } else {
    p.koff64.resize(p.kidx.size());
    for (size_t i = 0; i < p.kidx.size(); ++i) p.koff64[i] = p.kidx[i] * 64;
  }
  p.sparsity = 1.0 - static_cast<double>(p.nnz_blocks) / static_cast<double>(K * nbr);
  p.wsum.assign(N, 0);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) p.wsum[n] += W[k * N + n];
  p.wsum_pairs = wsum_pair_words(p.wsum.data(), N);
  p.scale_w.assign(scale_w, scale_w + N);
  auto max_abs = [](const float* v, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; ++i) m = std::isfinite(v[i]) ? std::max(m, std::fabs(double(v[i]))) : HUGE_VAL;
    return m;
  };
  p.scale_w_max = max_abs(scale_w, N);
  p.bias_max = bias ? max_abs(bias, N) : 0.0;
  return p;
}

namespace qgemm_detail {

float epilogue_value(int32_t acc, int64_t m, int64_t n, const PackedS8Sparse* /*w*/,
                     const float* bias, const float* scale_w, const int32_t* wsum,
                     const float* x_scale, const int32_t* x_zp, const QEpilogue& ep) {
  const int32_t corr = acc - x_zp[m] * wsum[n];
  float y = std::fma(static_cast<float>(corr), x_scale[m] * scale_w[n], bias ? bias[n] : 0.f);
  if (ep.gelu) y = ref::gelu_erf(y);
  if (ep.residual) y += ep.residual[m * ep.ld_residual + n];
  return y;
}

uint8_t requantize_value(float y, const QEpilogue& ep) {
  float t = y * (1.f / ep.out_scale);
  // NaN: 0, as in the vector kernels (their conversion gives INT_MIN, which
  // the clamp takes to 0); converting it to int here was undefined.
  if (t != t) return 0;
  t = std::min(std::max(t, -512.f), 512.f);
  int32_t q = static_cast<int32_t>(std::nearbyint(t)) + ep.out_zp;
  q = std::min(std::max(q, 0), 255);
  return static_cast<uint8_t>(q);
}

namespace {

#define SPINEL_TR_NAME transpose16x16_u8
#define SPINEL_TR_VEC __m128i
#define SPINEL_TR_UNPACK(hl, w, a, b) _mm_unpack##hl##_epi##w(a, b)
#include "kernels/cpu/transpose16x16_u8.inc"

}  // namespace

void interleave_block_u8(const uint8_t* x, int64_t M, int64_t K, int64_t ldx, int64_t m_begin,
                         int lanes, uint8_t* out) {
  const int64_t B = 16 * lanes;
  static const uint8_t zeros[16] = {};
  for (int l = 0; l < lanes; ++l) {
    // Slot s = 4 r + i of lane l holds token m_begin + 4 L r + 4 l + i.
    const uint8_t* rows[16];
    bool valid[16];
    int nvalid = 0;
    for (int s = 0; s < 16; ++s) {
      const int64_t m = m_begin + 4 * lanes * (s / 4) + 4 * l + (s % 4);
      valid[s] = m < M;
      rows[s] = valid[s] ? x + m * ldx : nullptr;
      nvalid += valid[s];
    }
    uint8_t* o = out + 16 * l;
    if (nvalid == 0) {
      for (int64_t k = 0; k < K; ++k) std::memcpy(o + k * B, zeros, 16);
      continue;
    }
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
      __m128i in[16], tr[16];
      for (int s = 0; s < 16; ++s)
        in[s] = valid[s] ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[s] + k))
                         : _mm_setzero_si128();
      transpose16x16_u8(in, tr);
      for (int j = 0; j < 16; ++j)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o + (k + j) * B), tr[j]);
    }
    for (; k < K; ++k)
      for (int s = 0; s < 16; ++s) o[k * B + s] = valid[s] ? rows[s][k] : 0;
  }
}

}  // namespace qgemm_detail

namespace {

using InterleaveFn = void (*)(const uint8_t* x, int64_t M, int64_t K, int64_t ldx, int64_t m_begin,
                             int lanes, uint8_t* out);

struct KernelConfig {
  SpmmTileFn fn;
  const char* name;
  int lanes;  // 0: token-major input (scalar kernel)
  int64_t token_block;
  InterleaveFn interleave;  // builds the kernel's activation blocks (null: none)
};

KernelConfig config_for(Isa isa) {
  using namespace qgemm_detail;
  switch (isa) {
    case Isa::Avx512Vnni:
      return {spmm_u8s8_4x1_64x4_avx512vnni, "spmm_u8s8_4x1_64x4_avx512vnni", 4, 64,
              interleave_block_u8_zmm};
    case Isa::Avx2Vnni:
      if (cpu_has_avxvnni())
        return {spmm_u8s8_4x1_16x4_avxvnni, "spmm_u8s8_4x1_16x4_avxvnni", 2, 32, interleave_block_u8};
      return {spmm_u8s8_4x1_16x4_avx512vl_vnni, "spmm_u8s8_4x1_16x4_avx512vl_vnni", 2, 32,
              interleave_block_u8};
    case Isa::Avx2:
      return {spmm_u8s8_4x1_16x4_avx2, "spmm_u8s8_4x1_16x4_avx2", 2, 32, interleave_block_u8};
    case Isa::Scalar:
    default:
      return {spmm_u8s8_4x1_1x4_scalar, "spmm_u8s8_4x1_1x4_scalar", 0, 16, nullptr};
  }
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// Per thread, grows only: the interleaved activations of the token block
// this thread's work items read (see run_spmm), and which call and block they
// are (calls are numbered process-wide, so a thread never mistakes another
// call's block for its own).
struct ThreadBlock {
  std::unique_ptr<void, FreeDeleter> buf;
  size_t capacity = 0;
  uint64_t call = 0;  // 0: none yet
  int64_t block = -1;
};

uint8_t* thread_block(ThreadBlock& tb, size_t bytes) {
  if (bytes > tb.capacity) {
    const size_t size = (bytes + 4095) / 4096 * 4096;
    void* p = std::aligned_alloc(64, size);
    if (!p) throw std::bad_alloc();
    tb.buf.reset(p);
    tb.capacity = size;
    tb.call = 0;
  }
  return static_cast<uint8_t*>(tb.buf.get());
}

std::atomic<uint64_t> g_spmm_calls{0};

}  // namespace

void qgemm_detail::rows_done_all(const RowsDone& done, int64_t m0, int64_t rows) {
  if (rows <= 0) return;
  const int64_t threads = std::max(1, tbb::this_task_arena::max_concurrency());
  const int64_t grain = std::max<int64_t>(std::max<int64_t>(1, done.min_rows), (rows + threads - 1) / threads);
  if (rows <= grain) {
    done.fn(done.ctx, m0, rows);
    return;
  }
  tbb::parallel_for(
      tbb::blocked_range<int64_t>(0, rows, grain),
      [&](const tbb::blocked_range<int64_t>& r) { done.fn(done.ctx, m0 + r.begin(), r.end() - r.begin()); },
      tbb::static_partitioner());
}

namespace {

// The kernels' output kind for an epilogue.
OutKind out_kind(const QEpilogue& ep) {
  return ep.out_bf16 ? OutKind::Bf16 : ep.requantize ? OutKind::U8 : OutKind::F32;
}

// Token b * 64 + j's quantization of a chain block, from the ranges of the
// block's per_block work items (spmm_u8s8_to_blocked): inv[j], z[j] for
// blocked_convert_zmm (0 and 0 for an all-zero or non-finite token), and its
// scale and zero point into scale[j], zp[j]. j < mc; lanes past mc are 0.
void blocked_token_params(const BlockedRange* ranges, int64_t per_block, int64_t b, int64_t mc,
                          float* inv, int32_t* z, float* scale, int32_t* zp) {
  for (int64_t j = 0; j < 64; ++j) {
    inv[j] = 0.f;
    z[j] = 0;
  }
  for (int64_t j = 0; j < mc; ++j) {
    float lo = 0.f, hi = 0.f;
    bool nan = false;
    for (int64_t q = 0; q < per_block; ++q) {
      const BlockedRange& p = ranges[b * per_block + q];
      lo = std::min(lo, p.lo[j]);
      hi = std::max(hi, p.hi[j]);
      nan |= ((p.nan >> j) & 1) != 0;
    }
    float s = 0.f, v = 0.f;
    int32_t zpj = 0;
    if (qgemm_detail::token_quant_params(lo, hi, !nan, &s, &zpj, &v)) {
      inv[j] = v;
      z[j] = zpj;
    }
    scale[j] = s;
    zp[j] = zpj;
  }
}

// Per thread, grows only: the f32-input calls' token scales and zero points
// (indexed by token) and the quantized rows of a block before interleaving
// (a ThreadBlock used as a plain buffer: its call and block are not used).
struct ThreadQuant {
  std::vector<float> scale;
  std::vector<int32_t> zp;
  ThreadBlock rows;
};

// Work items: (token block, range of block-rows). Enough items for the
// arena's threads to balance, few enough that each streams a good share of
// the weights with its activations hot in L1/L2. Item i is block
// i / br_chunks, block-rows [c br_per, (c + 1) br_per) with c = i % br_chunks.
struct WorkSplit {
  int64_t br_per, br_chunks;
};
WorkSplit work_split(int64_t nbr, int64_t nblocks) {
  const int64_t threads = tbb::this_task_arena::max_concurrency();
  const int64_t target = std::max<int64_t>(1, 4 * threads);
  int64_t br_chunks = std::max<int64_t>(1, (target + nblocks - 1) / nblocks);
  br_chunks = std::min(br_chunks, nbr);
  const int64_t br_per = (nbr + br_chunks - 1) / br_chunks;
  return {br_per, (nbr + br_per - 1) / br_per};
}

// The tokens of one work item's block: B, or for one block of 17..32 or
// 49..64 tokens of the 64-token kernel on two threads or more, split in two
// by tokens instead of by channels, where the Linear adds a residual or
// hands its rows to the LayerNorm after it (done): each thread then writes
// whole rows, and the LayerNorm runs on the core that wrote them, as with
// two blocks and more. Split by channels, each thread took over lines the
// other core had written (the residual stream's, the LayerNorm's) and the
// LayerNorm ran as a separate region: BERT-base 90% INT8 at 64 tokens ran its
// attention-output Linear as fast on two threads as on one. The same token
// vectors are computed either way (17..32 tokens: 1 + 1 instead of 2; 49..64:
// 2 + 2 instead of 4); 33..48 tokens (3 vectors) stay one block. Not for
// the Linears without a residual (FFN1 768 -> 3072 measured 0.78 -> 1.1 ms
// per run at 64 tokens: each thread reads all the weights for half the
// tokens, and the chain's blocked output is already local to its channels).
int64_t token_step(int64_t M, int64_t B) {
  if (B != 64 || tbb::this_task_arena::max_concurrency() < 2) return B;
  if (M > 16 && M <= 32) return 16;
  if (M > 48 && M <= 64) return 32;
  return B;
}

// The tokens per block of the 64-token kernel for M tokens: as many blocks
// as 64-token ones, their token vectors shared out evenly (M = 72: 48 + 24,
// M = 96: 48 + 48, instead of 64 + 8 and 64 + 32). The same vectors are
// computed, but with two threads each takes one block whole, as at 128
// tokens: with 64 + 32 the work was shared by splitting the first block's
// channels, and the threads then read each other's rows in every Linear
// and LayerNorm (BERT-base 90% INT8 ran 96 tokens slower than 128). The
// chain's blocked layouts are [ceil(M / S)][K][64] with block b holding
// tokens [b S, b S + S): no more blocks than 64-token ones, so no larger.
int64_t block_step(int64_t M, int64_t B) {
  if (B != 64 || M <= 0) return B;
  const int64_t nb = (M + 63) / 64, nvec = (M + 15) / 16;
  return 16 * ((nvec + nb - 1) / nb);
}

// The pieces run_spmm gives its threads (parallel_util.h balanced_pieces):
// one piece of contiguous items per thread, balanced by estimated cost: a
// block of fewer tokens runs fewer token vectors (NT = ceil(tokens / 16) of
// B / 16), and an item costs about 1 + NT per group (the loads and unpacks,
// then NT vpdpbusd per channel); equal counts left a thread with a short
// last block idle (at 80 tokens, 64 + 16, one thread had 4 items of 64
// tokens, the other 4 of 16).
// With as many blocks as pieces, one whole block each, even when their costs
// differ (48 + 24 tokens: 3 and 2 token vectors), so that every thread keeps
// its tokens' rows; balanced by cost, the first block's channels were split
// and its rows crossed cores (BERT-base 90% INT8, 2 threads, ms per run: 72
// tokens 4.9 -> 4.3-4.4, 80 tokens 5.0 -> 4.4; 100 and 112 tokens, 4 + 3
// vectors, even).
std::vector<int64_t> piece_firsts(int64_t M, int64_t B, int64_t br_chunks, int64_t pieces) {
  const int64_t nblocks = (M + B - 1) / B;
  if (nblocks == pieces) {
    std::vector<int64_t> first(static_cast<size_t>(pieces + 1));
    for (int64_t p = 0; p <= pieces; ++p) first[static_cast<size_t>(p)] = p * br_chunks;
    return first;
  }
  const int64_t vecs = B / 16 > 0 ? B / 16 : 1;
  return balanced_pieces(nblocks * br_chunks, pieces, [&](int64_t item) {
    const int64_t b = item / br_chunks, mc = std::min(B, M - b * B);
    return 1 + std::min<int64_t>(vecs, (mc + 15) / 16);
  });
}

// f32 activations that the kernel's threads quantize themselves, each for
// the token blocks it works on (run_spmm's x is then null): token-major
// rows xf [M][ldx] (times mul, per token: quantize_rows_u8's contract), or,
// with x_blocked, the chain's f32 blocked xf [nb][K][64] with its ranges
// (quantize_blocked_u8's).
struct F32In {
  const float* xf = nullptr;
  const float* mul = nullptr;
  const BlockedRange* ranges = nullptr;
};

// x_blocked: x is already in the kernel's blocked layout [nb][K][B] (the
// Linear chain, 64-token kernel only). ranges (F32Blocked only): one per
// work item, indexed by item.
// panel > 0 (F32 out only): y is in head panels [N / panel][M][panel] (see
// spmm_u8s8_panels); ldy is then ignored.
void run_spmm(const PackedS8Sparse& w, const uint8_t* x, int64_t M, int64_t ldx,
              const float* x_scale, const int32_t* x_zp, const QEpilogue& ep, OutKind out, void* y,
              int64_t ldy, bool x_blocked = false, BlockedRange* ranges = nullptr,
              int64_t panel = 0, F32In fin = {}, const RowsDone* done = nullptr) {
  if (done && (out != OutKind::F32 || panel > 0 || !done->fn))
    throw std::invalid_argument("spmm_u8s8: work on finished rows (RowsDone) needs a function and f32 "
                                "token-row output (no requantize, no panels)");
  if (M <= 0) return;
  if (ldx < w.K) throw std::invalid_argument("spmm_u8s8: ldx < K");
  const bool f32_in = fin.xf != nullptr;
  if (f32_in && x_blocked && !fin.ranges)
    throw std::invalid_argument("spmm_u8s8: the f32 blocked input needs its ranges");
  note_pool(Pool::Tbb);  // see parallel_util.h
  if (out == OutKind::Bf16 && (ep.residual || ep.requantize || done || x_blocked || !spmm_u8s8_bf16_available()))
    throw std::invalid_argument(
        "spmm_u8s8: BF16 output (QEpilogue::out_bf16) takes no residual, requantization, RowsDone or chain "
        "input, and needs the 64-token AVX-512 VNNI kernel on a CPU with AVX512_BF16");
  if (panel > 0) {
    if (panel % 16 != 0 || w.N % panel != 0)
      throw std::invalid_argument("spmm_u8s8_panels: panel " + std::to_string(panel) +
                                  " must be a multiple of 16 that divides N = " + std::to_string(w.N));
    if ((out != OutKind::F32 && out != OutKind::Bf16) || ep.residual)
      throw std::invalid_argument("spmm_u8s8_panels: f32 or BF16 output without a residual only");
    ldy = w.N;
  }
  if ((ep.k_pairs || ep.v_pairs) && (out != OutKind::Bf16 || panel <= 0 || w.N % (3 * panel) != 0))
    throw std::invalid_argument(
        "spmm_u8s8: K or V in pair words (QEpilogue::k_pairs, v_pairs) needs BF16 output in head panels of a "
        "fused Q, K, V output (N a multiple of 3 panels)");
  if (ep.v_pairs && (!ep.k_pairs || M % 2 != 0))
    throw std::invalid_argument("spmm_u8s8: V in pair words (QEpilogue::v_pairs) needs k_pairs and an even token "
                                "count, not " + std::to_string(M));
  if (ldy < w.N) throw std::invalid_argument("spmm_u8s8: ldy < N");
  const KernelConfig cfg = config_for(active_isa());
  if ((x_blocked || out == OutKind::F32Blocked) && cfg.token_block != 64)
    throw std::logic_error(std::string("spmm_u8s8: the blocked layouts need the 64-token kernel, not ") +
                           cfg.name);
  const int64_t K = w.K, nbr = w.N / 4;
  const int64_t B = cfg.token_block;
  // Blocks of S <= B tokens, each in a B-token kernel block of its own (the
  // kernel reads its first ceil(S / 16) token vectors): block_step's even
  // share, or for one block before a LayerNorm or with a residual, token
  // rows in and out, token_step's halves.
  const bool rows_io = !x_blocked && panel == 0 && (out == OutKind::F32 || out == OutKind::U8);
  int64_t S = block_step(M, B);
  if (rows_io && (ep.residual != nullptr || done != nullptr) && token_step(M, B) < B) S = token_step(M, B);
  const int64_t nblocks = (M + S - 1) / S;
  QEpilogue e = ep;
  if (e.residual && e.ld_residual == 0) e.ld_residual = w.N;

  // The activations of a token block, in the kernel's layout, are built by
  // each thread that runs one of the block's items, into its own buffer, the
  // first time it needs them in this call: no separate parallel pass (and its
  // join) before the kernel, and no item reads rows another core just wrote.
  // The static partition gives each thread contiguous items, which are
  // block-major, so a block is built once per thread that works on it (with
  // one block, up to 64 tokens, by both threads: a few microseconds, less
  // than the other core's lines would cost to fetch).
  // Each thread builds the blocks it reads: interleaves u8 rows, or
  // quantizes f32 input (then interleaves, for the vector kernels).
  const bool interleave = (cfg.lanes > 0 && !x_blocked) || f32_in;
  const uint64_t call = interleave ? g_spmm_calls.fetch_add(1, std::memory_order_relaxed) + 1 : 0;
  const int64_t per_block_in = f32_in && x_blocked ? spmm_u8s8_blocked_ranges(K, M) / nblocks : 0;
  WorkSplit split = work_split(nbr, nblocks);
  const int64_t panel_brs = panel / 4;
  const int64_t k_panels = panel > 0 ? w.N / panel / 3 : 0;  // K's panels: [k_panels, 2 k_panels)
  if (panel > 0) {
    // Items of whole panels where possible, so that no panel is cut in two
    // and every 16-channel stage of the 64-token kernel starts on a line.
    split.br_per = (split.br_per + panel_brs - 1) / panel_brs * panel_brs;
    split.br_chunks = (nbr + split.br_per - 1) / split.br_per;
  }
  const int64_t br_per = split.br_per, br_chunks = split.br_chunks;
  const int64_t items = nblocks * br_chunks;

  const int64_t pieces = std::min<int64_t>(items, tbb::this_task_arena::max_concurrency());

  // One token block (M <= 64) from the chain's f32 blocks, its items split
  // between threads: each thread used to convert the whole block for
  // itself, half of it channels that the other thread had computed in the
  // Linear before (its f32 lines fetched from the other core): at 32 tokens
  // BERT-base 90%'s FFN2 spent as long converting its input (31 us per
  // thread and layer) as multiplying. Here the block is converted once, into
  // one buffer every item reads: piece p converts the rows of the channels
  // that piece p of the previous Linear computed (the same split of the
  // same count of block-rows, and static partitions from the same thread),
  // then the items run.
  const uint8_t* shared_x = nullptr;
  alignas(64) float shared_scale[64];
  alignas(64) int32_t shared_zp[64];
  if (f32_in && x_blocked && nblocks == 1 && pieces > 1) {
    thread_local ThreadBlock shared;  // the calling thread's, filled by every thread of the call
    uint8_t* buf = thread_block(shared, static_cast<size_t>(K * B));
    alignas(64) float inv[64];
    alignas(64) int32_t z[64];
    blocked_token_params(fin.ranges, per_block_in, 0, M, inv, z, shared_scale, shared_zp);
    // The previous Linear's pieces over its K / 4 block-rows (work_split
    // and piece_firsts as run_spmm made them for it).
    const WorkSplit prev = work_split(K / 4, 1);
    const int64_t prev_pieces = std::min<int64_t>(prev.br_chunks, tbb::this_task_arena::max_concurrency());
    const std::vector<int64_t> prev_first = piece_firsts(M, B, prev.br_chunks, prev_pieces);
    const int nvec = static_cast<int>((M + 15) / 16);
    tbb::parallel_for(
        tbb::blocked_range<int64_t>(0, prev_pieces, 1),
        [&](const tbb::blocked_range<int64_t>& r) {
          for (int64_t p = r.begin(); p < r.end(); ++p) {
            const int64_t k0 = std::min(K, 4 * prev.br_per * prev_first[static_cast<size_t>(p)]);
            const int64_t k1 = std::min(K, 4 * prev.br_per * prev_first[static_cast<size_t>(p + 1)]);
            if (k1 > k0) qgemm_detail::blocked_convert_zmm(fin.xf, k0, k1, inv, z, buf, nvec);
          }
        },
        tbb::static_partitioner());
    shared_x = buf;
  }

  // Token block b, block-rows [br0, br1) (whole panels with panels); slot:
  // the item's BlockedRange (F32Blocked).
  auto run_range = [&](int64_t b, int64_t br0, int64_t br1, int64_t slot) {
    SpmmTile t;
    t.w = &w;
    t.m0 = b * S;
    t.mc = std::min(S, M - t.m0);
    t.step = S;
    t.ldx = ldx;
    t.x_scale = x_scale;
    t.x_zp = x_zp;
    if (shared_x) {
      t.x = shared_x;
      t.x_scale = shared_scale;
      t.x_zp = shared_zp;
    } else if (interleave) {
      thread_local ThreadBlock tb;
      thread_local ThreadQuant tq;
      uint8_t* buf = thread_block(tb, static_cast<size_t>(K * B));
      if (f32_in && tq.scale.size() < static_cast<size_t>(nblocks * S)) {
        // (Only at a call's first item on this thread: M is fixed within a call.)
        tq.scale.resize(static_cast<size_t>(nblocks * S));
        tq.zp.resize(static_cast<size_t>(nblocks * S));
        tb.call = 0;
      }
      if (tb.call != call || tb.block != b) {
        if (!f32_in) {
          cfg.interleave(x, M, K, ldx, t.m0, cfg.lanes, buf);
        } else if (x_blocked) {
          alignas(64) float inv[64];
          alignas(64) int32_t z[64];
          blocked_token_params(fin.ranges, per_block_in, b, t.mc, inv, z, tq.scale.data() + t.m0,
                               tq.zp.data() + t.m0);
          qgemm_detail::blocked_convert_zmm(fin.xf + b * K * B, 0, K, inv, z, buf,
                                            static_cast<int>((t.mc + 15) / 16));
        } else {
          // The scalar kernel reads token-major rows: they are its block.
          uint8_t* rows = cfg.lanes > 0 ? thread_block(tq.rows, static_cast<size_t>(K * B)) : buf;
          qgemm_detail::quantize_rows_u8_here(fin.xf + t.m0 * ldx, t.mc, K, ldx, rows, tq.scale.data() + t.m0,
                                              tq.zp.data() + t.m0, fin.mul);
          if (cfg.lanes > 0) cfg.interleave(rows, t.mc, K, K, 0, cfg.lanes, buf);
        }
        tb.call = call;
        tb.block = b;
      }
      t.x = buf;
      if (f32_in) {
        t.x_scale = tq.scale.data();
        t.x_zp = tq.zp.data();
        if (cfg.lanes == 0) t.ldx = K;
      }
    } else {
      t.x = cfg.lanes > 0 ? x + b * K * B : x + t.m0 * ldx;
    }
    t.br0 = br0;
    t.br1 = br1;
    t.ep = &e;
    t.out = out;
    t.y = y;
    t.ldy = ldy;
    t.range = ranges ? ranges + slot : nullptr;
    if (panel <= 0) {
      cfg.fn(t);
      return;
    }
    // One call per panel the item touches, each seeing its panel as a
    // token-major [M][panel] matrix: with y offset so that its channel n
    // (absolute, as the kernels index bias and scales) lands at n - panel p.
    const int64_t br_end = t.br1;
    for (int64_t b0 = t.br0; b0 < br_end;) {
      const int64_t p = b0 / panel_brs;
      const int64_t b1 = std::min(br_end, (p + 1) * panel_brs);
      SpmmTile pt = t;
      pt.br0 = b0;
      pt.br1 = b1;
      pt.y = out == OutKind::Bf16 ? static_cast<void*>(static_cast<uint16_t*>(y) + p * (M * panel - panel))
                                  : static_cast<void*>(static_cast<float*>(y) + p * (M * panel - panel));
      pt.ldy = panel;
      if (e.k_pairs && p >= k_panels && p < 2 * k_panels) {
        // K's panel as panel / 2 rows of M pair words (QEpilogue::k_pairs).
        pt.out = OutKind::Bf16Pairs;
        pt.y = static_cast<uint16_t*>(y) + p * M * panel;
        pt.ldy = M;
        pt.n_base = p * panel;
      } else if (e.v_pairs && p >= 2 * k_panels) {
        // V's panel as M / 2 rows of panel pair words (QEpilogue::v_pairs;
        // every tile's first token and count even: M even, steps of 16).
        pt.out = OutKind::Bf16TokenPairs;
        pt.y = static_cast<uint16_t*>(y) + p * M * panel;
        pt.ldy = panel;
        pt.n_base = p * panel;
      }
      cfg.fn(pt);
      b0 = b1;
    }
  };
  auto body = [&](int64_t item) {
    const int64_t b = item / br_chunks, c = item % br_chunks;
    run_range(b, c * br_per, std::min(nbr, c * br_per + br_per), item);
  };
  if (const int64_t hp = qkv_head_pieces(w.N, panel, M); hp > 1) {
    // Q, K and V panels of an attention's heads (N = 3 H panel) of one
    // token block: piece p computes heads [H p / P, H (p + 1) / P) of each
    // of Q, K and V, the heads attention_f32 gives the same piece, on the
    // same thread (both static partitions of P pieces from the calling
    // thread): the attention then reads the Q, K and V this core wrote.
    // (Split by block-rows, one thread had Q of every head and the other V.)
    const int64_t heads = w.N / panel / 3;
    tbb::parallel_for(
        tbb::blocked_range<int64_t>(0, hp, 1),
        [&](const tbb::blocked_range<int64_t>& r) {
          for (int64_t p = r.begin(); p < r.end(); ++p) {
            const int64_t h0 = heads * p / hp, h1 = heads * (p + 1) / hp;
            for (int64_t b = 0; b < nblocks; ++b)
              for (int64_t part = 0; part < 3; ++part)
                run_range(b, (part * heads + h0) * panel_brs, (part * heads + h1) * panel_brs, 0);
          }
        },
        tbb::static_partitioner());
    return;
  }
  if (items == 1) {
    body(0);
    if (done) done->fn(done->ctx, 0, M);
    return;
  }
  const std::vector<int64_t> first = piece_firsts(M, S, br_chunks, pieces);
  // Token block b is whole in piece p when p holds all its items (block-major:
  // b br_chunks .. (b + 1) br_chunks - 1); that piece's thread passes the
  // block's rows to done after its last item (RowsDone).
  auto whole_in = [&](int64_t p, int64_t b) {
    return first[static_cast<size_t>(p)] <= b * br_chunks && (b + 1) * br_chunks <= first[static_cast<size_t>(p + 1)];
  };
  auto block_rows = [&](int64_t b) { return std::min(S, M - b * S); };
  tbb::parallel_for(
      tbb::blocked_range<int64_t>(0, pieces, 1),
      [&](const tbb::blocked_range<int64_t>& r) {
        // The shared block's lines, half of them converted by the other
        // core, asked for into L2 all at once: the kernel reads them in its
        // channels' order, one group at a time, and waited for each line it
        // met first (BERT-base 90% at 64 tokens: FFN2 1.08-1.19 -> 0.94-1.03
        // ms per run; at 40 tokens 0.83-0.89 -> 0.76-0.78).
        if (shared_x)
          for (int64_t k = 0; k < K; ++k) __builtin_prefetch(shared_x + k * B, 0, 2);  // (prefetcht1)
        for (int64_t p = r.begin(); p < r.end(); ++p)
          for (int64_t i = first[static_cast<size_t>(p)]; i < first[static_cast<size_t>(p + 1)]; ++i) {
            body(i);
            const int64_t b = i / br_chunks;
            if (done && i % br_chunks == br_chunks - 1 && whole_in(p, b)) done->fn(done->ctx, b * S, block_rows(b));
          }
      },
      tbb::static_partitioner());
  if (!done) return;
  // The blocks split between pieces (one block of at most B tokens whose
  // channels both threads computed, at most one per piece boundary): their
  // rows now, spread over the arena.
  for (int64_t b = 0, p = 0; b < nblocks; ++b) {
    while (p + 1 < pieces && first[static_cast<size_t>(p + 1)] <= b * br_chunks) ++p;
    if (!whole_in(p, b)) qgemm_detail::rows_done_all(*done, b * S, block_rows(b));
  }
}

}  // namespace

void spmm_u8s8(const PackedS8Sparse& w, const uint8_t* x, int64_t M, int64_t ldx,
               const float* x_scale, const int32_t* x_zp, const QEpilogue& ep, void* y,
               int64_t ldy, const RowsDone* done) {
  if (ep.requantize && !(ep.out_scale > 0.f))
    throw std::invalid_argument("spmm_u8s8: requantize needs out_scale > 0");
  run_spmm(w, x, M, ldx, x_scale, x_zp, ep, out_kind(ep), y, ldy, false, nullptr, 0, {}, done);
}

void spmm_u8s8_panels(const PackedS8Sparse& w, const uint8_t* x, int64_t M, int64_t ldx,
                      const float* x_scale, const int32_t* x_zp, const QEpilogue& ep, void* y,
                      int64_t panel) {
  if (panel <= 0) throw std::invalid_argument("spmm_u8s8_panels: panel must be positive");
  run_spmm(w, x, M, ldx, x_scale, x_zp, ep, out_kind(ep), y, w.N, false, nullptr, panel);
}

void spmm_u8s8_f32in(const PackedS8Sparse& w, const float* x, int64_t M, int64_t ldx, const float* mul,
                     const QEpilogue& ep, void* y, int64_t ldy, int64_t panel, const RowsDone* done) {
  if (ep.requantize && !(ep.out_scale > 0.f))
    throw std::invalid_argument("spmm_u8s8: requantize needs out_scale > 0");
  if (!x && M > 0) throw std::invalid_argument("spmm_u8s8_f32in: x must not be null");
  if (panel < 0) throw std::invalid_argument("spmm_u8s8_f32in: panel must not be negative");
  F32In fin;
  fin.xf = x;
  fin.mul = mul;
  run_spmm(w, nullptr, M, ldx, nullptr, nullptr, ep, out_kind(ep), y, ldy, false, nullptr, panel, fin, done);
}

void spmm_u8s8_from_blocked_f32(const PackedS8Sparse& w, const float* y_blk, const BlockedRange* ranges,
                                int64_t M, const QEpilogue& ep, void* y, int64_t ldy, const RowsDone* done) {
  if (ep.requantize && !(ep.out_scale > 0.f))
    throw std::invalid_argument("spmm_u8s8: requantize needs out_scale > 0");
  if (!y_blk || !ranges) throw std::invalid_argument("spmm_u8s8_from_blocked_f32: null input or ranges");
  F32In fin;
  fin.xf = y_blk;
  fin.ranges = ranges;
  run_spmm(w, nullptr, M, w.K, nullptr, nullptr, ep, ep.requantize ? OutKind::U8 : OutKind::F32, y, ldy,
           /*x_blocked=*/true, nullptr, 0, fin, done);
}

void spmm_u8s8_acc(const PackedS8Sparse& w, const uint8_t* x, int64_t M, int64_t ldx,
                   int32_t* acc, int64_t ldacc) {
  run_spmm(w, x, M, ldx, nullptr, nullptr, QEpilogue{}, OutKind::S32Raw, acc, ldacc);
}

const char* spmm_u8s8_kernel_name() { return config_for(active_isa()).name; }

bool spmm_u8s8_chain_available() { return config_for(active_isa()).token_block == 64; }

int64_t spmm_u8s8_token_block() { return config_for(active_isa()).token_block; }

bool spmm_u8s8_bf16_available() { return spmm_u8s8_chain_available() && cpu_has_avx512_bf16(); }

int64_t spmm_u8s8_blocked_step(int64_t M) { return block_step(M, 64); }

int64_t spmm_u8s8_blocked_ranges(int64_t N, int64_t M) {
  if (M <= 0 || N <= 0) return 0;
  const int64_t S = block_step(M, 64);
  const int64_t nblocks = (M + S - 1) / S;
  return nblocks * work_split(N / 4, nblocks).br_chunks;
}

void spmm_u8s8_to_blocked(const PackedS8Sparse& w, const uint8_t* x, int64_t M, int64_t ldx,
                          const float* x_scale, const int32_t* x_zp, bool gelu, float* y_blk,
                          BlockedRange* ranges, const float* out_mul, bool gelu_coarse) {
  QEpilogue ep;
  ep.gelu = gelu;
  ep.gelu_coarse = gelu_coarse;
  ep.out_mul = out_mul;
  if (!ranges) throw std::invalid_argument("spmm_u8s8_to_blocked: ranges must not be null");
  for (int64_t i = 0, n = spmm_u8s8_blocked_ranges(w.N, M); i < n; ++i) {
    std::fill(ranges[i].lo, ranges[i].lo + 64, 0.f);
    std::fill(ranges[i].hi, ranges[i].hi + 64, 0.f);
    ranges[i].nan = 0;
  }
  run_spmm(w, x, M, ldx, x_scale, x_zp, ep, OutKind::F32Blocked, y_blk, w.N, false, ranges);
}

void spmm_u8s8_from_blocked(const PackedS8Sparse& w, const uint8_t* x_blk, int64_t M,
                            const float* x_scale, const int32_t* x_zp, const QEpilogue& ep,
                            void* y, int64_t ldy, const RowsDone* done) {
  if (ep.requantize && !(ep.out_scale > 0.f))
    throw std::invalid_argument("spmm_u8s8: requantize needs out_scale > 0");
  if (reinterpret_cast<uintptr_t>(x_blk) % 64 != 0)
    throw std::invalid_argument("spmm_u8s8_from_blocked: the input blocks must be 64-byte aligned");
  run_spmm(w, x_blk, M, w.K, x_scale, x_zp, ep, ep.requantize ? OutKind::U8 : OutKind::F32, y, ldy,
           /*x_blocked=*/true, nullptr, 0, {}, done);
}

void quantize_blocked_u8(const float* y_blk, int64_t M, int64_t K, const BlockedRange* ranges,
                         uint8_t* x_blk, float* scale, int32_t* zp) {
  if (M <= 0 || K <= 0) return;
  if (!spmm_u8s8_chain_available())
    throw std::logic_error("quantize_blocked_u8: needs the 64-token (AVX-512 VNNI) kernel");
  if (!ranges) throw std::invalid_argument("quantize_blocked_u8: ranges must not be null");
  note_pool(Pool::Tbb);
  constexpr int64_t B = 64;
  const int64_t S = block_step(M, B);  // (run_spmm's blocks of the chain)
  const int64_t nb = (M + S - 1) / S;
  // The ranges of each block's items (spmm_u8s8_to_blocked with N = K).
  const int64_t per_block = spmm_u8s8_blocked_ranges(K, M) / nb;
  // Work items: (block, channel chunk), enough of them for the arena's
  // threads when there are few blocks, and at least 256 channels each; each
  // takes its block's token parameters from the ranges, then converts.
  const int64_t threads = tbb::this_task_arena::max_concurrency();
  int64_t kc = std::max<int64_t>(1, std::min<int64_t>((2 * threads + nb - 1) / nb, K / 256));
  const int64_t kper = (K + kc - 1) / kc;
  kc = (K + kper - 1) / kper;
  tbb::parallel_for(
      tbb::blocked_range<int64_t>(0, nb * kc),
      [&](const tbb::blocked_range<int64_t>& r) {
        for (int64_t i = r.begin(); i < r.end(); ++i) {
          const int64_t b = i / kc, c = i % kc;
          alignas(64) float inv[B];
          alignas(64) int32_t z[B];
          alignas(64) float sc[B];
          alignas(64) int32_t zz[B];
          const int64_t mc = std::min(S, M - b * S);
          blocked_token_params(ranges, per_block, b, mc, inv, z, sc, zz);
          if (c == 0)
            for (int64_t j = 0; j < mc; ++j) {
              scale[b * S + j] = sc[j];
              zp[b * S + j] = zz[j];
            }
          qgemm_detail::blocked_convert_zmm(y_blk + b * K * B, c * kper, std::min(K, (c + 1) * kper),
                                            inv, z, x_blk + b * K * B, static_cast<int>((mc + 15) / 16));
        }
      },
      tbb::static_partitioner());
}

}  // namespace spinel::kernels
