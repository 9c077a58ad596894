// Block-sparse FP32 Linear: weight packing, the 4x1 block-sparsity measure,
// and the parallel driver that packs activations and dispatches the per-ISA
// register tiles (spmm_f32_{scalar,avx2,avx512}.cpp, spmm_f32_body.inc).
//
// Per call: x [M, K] (token-major, as the runtime holds it) is copied into
// token blocks of at most B tokens (B = the kernel's token_block), each
// K-major ([K][ldb], ldb = the block's tokens rounded up to the vector
// width, zeros past M), so that the activations of one input channel for the
// block's tokens are one to NT contiguous vectors. The copy is O(M K) against
// O(M nnz) kernel work (at 90% block sparsity 1/(0.1 N) of it).
// Work items are (token block, chunk of block-rows); the chunks are cut so
// that each holds about the same number of nonzero blocks (pruned layers
// have denser and sparser output channels), and items go to the arena's
// threads with a static partition (even work, no stealing on short calls).
#include "kernels/cpu/parallel_util.h"
#include "kernels/cpu/spmm_f32.h"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

#include "kernels/cpu/f32_isa.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/select.h"

namespace spinel::kernels {

namespace {

void check_shape(const char* what, const float* W, int64_t K, int64_t N) {
  if (!W || K <= 0 || N <= 0)
    throw std::invalid_argument(std::string(what) + ": bad weight [K=" + std::to_string(K) +
                                ", N=" + std::to_string(N) + "]" + (W ? "" : " (null)"));
}

bool block_nonzero(const float* row, int64_t n0, int64_t nc) {
  for (int64_t c = 0; c < nc; ++c)
    if (row[n0 + c] != 0.f) return true;
  return false;
}

}  // namespace

double block_sparsity_4x1_f32(const float* W, int64_t K, int64_t N) {
  check_shape("block_sparsity_4x1_f32", W, K, N);
  const int64_t nbr = (N + 3) / 4;
  int64_t nnz = 0;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t br = 0; br < nbr; ++br) nnz += block_nonzero(W + k * N, 4 * br, std::min<int64_t>(4, N - 4 * br));
  return 1.0 - static_cast<double>(nnz) / static_cast<double>(K * nbr);
}

PackedF32Sparse pack_f32_sparse(const float* W, int64_t K, int64_t N, const float* bias) {
  check_shape("pack_f32_sparse", W, K, N);
  PackedF32Sparse p;
  p.K = K;
  p.N = N;
  p.nbr = (N + 3) / 4;
  const int64_t nbr = p.nbr;
  // Two row-major passes (the weight is [K, N]): count per block-row, then fill.
  std::vector<int64_t> count(static_cast<size_t>(nbr), 0);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t br = 0; br < nbr; ++br)
      count[br] += block_nonzero(W + k * N, 4 * br, std::min<int64_t>(4, N - 4 * br));
  int64_t total = 0;
  for (int64_t c : count) total += c;
  if (total > std::numeric_limits<int32_t>::max() / 4)
    throw std::invalid_argument("pack_f32_sparse: weight [K=" + std::to_string(K) + ", N=" +
                                std::to_string(N) + "] has too many nonzero blocks");
  p.nnz_blocks = total;
  p.row_ptr.assign(static_cast<size_t>(nbr + 1), 0);
  for (int64_t br = 0; br < nbr; ++br)
    p.row_ptr[br + 1] = p.row_ptr[br] + static_cast<int32_t>(count[br]);
  p.kidx.resize(static_cast<size_t>(total));
  p.w.assign(static_cast<size_t>(4 * total), 0.f);
  std::vector<int32_t> cursor(p.row_ptr.begin(), p.row_ptr.end() - 1);
  for (int64_t k = 0; k < K; ++k) {
    const float* row = W + k * N;
    for (int64_t br = 0; br < nbr; ++br) {
      const int64_t nc = std::min<int64_t>(4, N - 4 * br);
      if (!block_nonzero(row, 4 * br, nc)) continue;
      const int32_t b = cursor[br]++;
      p.kidx[b] = static_cast<int32_t>(k);
      for (int64_t c = 0; c < nc; ++c) p.w[4 * static_cast<size_t>(b) + c] = row[4 * br + c];
    }
  }
  p.bias.assign(static_cast<size_t>(4 * nbr), 0.f);
  if (bias) std::copy(bias, bias + N, p.bias.begin());
  p.sparsity = 1.0 - static_cast<double>(total) / static_cast<double>(K * nbr);
  return p;
}

namespace spmm_f32_detail {
namespace {

void tanh_rows(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::tanh(x[i]);
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// Per thread, grows only: the packed activations of the token block this
// thread's work items read (see spmm_f32_with), and which call and block
// they are (calls are numbered process-wide).
struct ThreadBlock {
  std::unique_ptr<void, FreeDeleter> buf;
  size_t capacity = 0;
  uint64_t call = 0;  // 0: none yet
  int64_t block = -1;
};

float* thread_block(ThreadBlock& tb, size_t floats) {
  const size_t bytes = floats * sizeof(float);
  if (bytes > tb.capacity) {
    const size_t size = (bytes + 4095) / 4096 * 4096;
    void* p = std::aligned_alloc(64, size);
    if (!p) throw std::bad_alloc();
    tb.buf.reset(p);
    tb.capacity = size;
    tb.call = 0;
  }
  return static_cast<float*>(tb.buf.get());
}

std::atomic<uint64_t> g_spmm_f32_calls{0};

// Estimated cost of block-rows [0, br): nonzero blocks plus the epilogue and
// loop overhead of each block-row (in blocks).
constexpr int64_t kRowCost = 2;
int64_t cost_before(const PackedF32Sparse& w, int64_t br) { return w.row_ptr[br] + kRowCost * br; }

// Block-row where chunk i of `chunks` starts (chunk `chunks` starts at nbr).
int64_t chunk_start(const PackedF32Sparse& w, int64_t i, int64_t chunks) {
  if (i <= 0) return 0;
  if (i >= chunks) return w.nbr;
  const int64_t target = cost_before(w, w.nbr) * i / chunks;
  int64_t lo = 0, hi = w.nbr;  // first br with cost_before(br) >= target
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (cost_before(w, mid) < target)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

}  // namespace

void spmm_f32_with(const Kernel& kern, const PackedF32Sparse& w, const float* x, int64_t M,
                   int64_t ldx, const F32SparseEpilogue& ep, float* y, int64_t ldy) {
  if (M <= 0) return;
  const int64_t K = w.K, N = w.N;
  if (ldx < K) throw std::invalid_argument("spmm_f32: ldx < K");
  if (ldy < N) throw std::invalid_argument("spmm_f32: ldy < N");
  const int64_t ldr = ep.ld_residual > 0 ? ep.ld_residual : N;
  if (ep.residual && ldr < N) throw std::invalid_argument("spmm_f32: ld_residual < N");

  void (*act_fn)(float*, int64_t) = nullptr;
  switch (ep.act) {
    case Activation::None: break;
    case Activation::GeluErf: act_fn = f32::kernel_table().gelu_erf; break;
    case Activation::GeluTanh: act_fn = f32::kernel_table().gelu_tanh; break;
    case Activation::Tanh: act_fn = tanh_rows; break;
  }

  const int64_t B = kern.token_block, L = kern.lanes;
  const int64_t nblocks = (M + B - 1) / B;
  const int64_t block_floats = K * B;
  auto block_tokens = [&](int64_t b) { return std::min(B, M - b * B); };
  auto block_ld = [&](int64_t b) { return (block_tokens(b) + L - 1) / L * L; };

  const int64_t threads = tbb::this_task_arena::max_concurrency();
  // Enough items for the threads to balance, few enough that each streams a
  // good share of the weights while its token block stays in L1/L2.
  const int64_t target = threads > 1 ? 4 * threads : 1;
  int64_t chunks = std::max<int64_t>(1, (target + nblocks - 1) / nblocks);
  chunks = std::min(chunks, w.nbr);
  const int64_t items = nblocks * chunks;

  // Each thread packs the token blocks its items read, into its own buffer,
  // the first time it needs one in this call (as the INT8 kernel,
  // spmm_s8_pack.cpp): no separate packing pass and join, no packed rows
  // read from the other core's cache; with one block every thread packs it.
  const uint64_t call = g_spmm_f32_calls.fetch_add(1, std::memory_order_relaxed) + 1;
  auto body = [&](int64_t item) {
    const int64_t b = item / chunks, c = item % chunks;
    Tile t;
    t.w = &w;
    t.br0 = chunk_start(w, c, chunks);
    t.br1 = chunk_start(w, c + 1, chunks);
    if (t.br1 <= t.br0) return;
    thread_local ThreadBlock tb;
    float* xb = thread_block(tb, static_cast<size_t>(block_floats));
    if (tb.call != call || tb.block != b) {
      kern.pack(x + b * B * ldx, ldx, block_tokens(b), K, xb, block_ld(b));
      tb.call = call;
      tb.block = b;
    }
    t.xb = xb;
    t.ldb = block_ld(b);
    t.m0 = b * B;
    t.mc = block_tokens(b);
    t.act = ep.act;
    t.act_fn = act_fn;
    t.residual = ep.residual;
    t.ld_residual = ldr;
    t.y = y;
    t.ldy = ldy;
    kern.tile(t);
  };

  if (threads <= 1 || items == 1) {
    for (int64_t i = 0; i < items; ++i) body(i);
    return;
  }
  // One piece of contiguous items per thread, balanced by estimated cost (a
  // block's vectors of L tokens, plus one for the loads of each block),
  // not by count: a short last block left a thread idle.
  const int64_t pieces = std::min<int64_t>(items, threads);
  const std::vector<int64_t> first =
      balanced_pieces(items, pieces, [&](int64_t item) { return 1 + block_ld(item / chunks) / L; });
  tbb::parallel_for(
      tbb::blocked_range<int64_t>(0, pieces, 1),
      [&](const tbb::blocked_range<int64_t>& r) {
        for (int64_t p = r.begin(); p < r.end(); ++p)
          for (int64_t i = first[static_cast<size_t>(p)]; i < first[static_cast<size_t>(p + 1)]; ++i) body(i);
      },
      tbb::static_partitioner());
}

}  // namespace spmm_f32_detail

namespace {

// One ISA policy for every kernel family (as f32_dispatch.cpp): the level of
// isa.h picks the build, at every call.
const spmm_f32_detail::Kernel& kernel_here() {
  using namespace spmm_f32_detail;
  switch (active_isa()) {
    case Isa::Scalar: return kernel_scalar();
    case Isa::Avx2:
    case Isa::Avx2Vnni: return kernel_avx2();
    case Isa::Avx512Vnni: return cpu_has_avx512_core() ? kernel_avx512() : kernel_avx2();
  }
  return kernel_scalar();
}

}  // namespace

void spmm_f32(const PackedF32Sparse& w, const float* x, int64_t M, int64_t ldx,
              const F32SparseEpilogue& ep, float* y, int64_t ldy) {
  note_pool(Pool::Tbb);  // see parallel_util.h
  spmm_f32_detail::spmm_f32_with(kernel_here(), w, x, M, ldx, ep, y, ldy);
}

const char* spmm_f32_kernel_name() { return kernel_here().name; }

}  // namespace spinel::kernels
