// Block-sparse FP32 Linear of the CPU backend: y = act(x W + b) + residual
// with W stored as 4x1 blocks (4 consecutive output channels x 1 input
// channel, the pattern tools/prune_bert.py prunes and the INT8 sparse kernel
// packs), for models that are pruned but not quantized.
//
// Kernel shape (XNNPACK's f32 SpMM idea, tokens in vector lanes): the packed
// weights are walked per block-row (4 output channels); each nonzero block
// (k, w0..w3) costs one load of the activations of input channel k for a
// block of tokens (from a per-call K-major copy of x, [K][tokens]) and four
// broadcast FMAs, one per output channel, into a register tile of
// 4 channels x (NT vectors of tokens). The 4 accumulators of a token vector
// are transposed in registers into token rows of 4 channels for the fused
// epilogue (bias, activation, residual). Work items are (token block,
// chunk of block-rows) run by TBB in the caller's task_arena.
//
// Selection (which f32 layers run here): kernels/cpu/select.h.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/ir.h"

namespace spinel::kernels {

// 4x1 block-sparse f32 weights, packed once (model preparation).
//
// Block-row br covers output channels 4br .. 4br+3 (the last one fewer when
// N % 4 != 0: its missing channels are stored as zeros). Its nonzero blocks
// (input channels k whose 4 weights are not all 0), in increasing k:
//   row_ptr [nbr + 1]  blocks of block-row br: row_ptr[br] .. row_ptr[br+1]-1
//   kidx    [nnz]      input channel of each block
//   w       [4 nnz]    w[4b + c] = W[kidx[b]][4br + c]
//   bias    [4 nbr]    the bias, zero-padded (zeros when the layer has none)
struct PackedF32Sparse {
  int64_t K = 0, N = 0;
  int64_t nbr = 0;         // block-rows: ceil(N / 4)
  int64_t nnz_blocks = 0;  // nonzero blocks
  double sparsity = 0;     // 1 - nnz_blocks / (K * nbr)
  std::vector<int32_t> row_ptr;
  std::vector<int32_t> kidx;
  std::vector<float> w;
  std::vector<float> bias;
  size_t bytes() const {
    return row_ptr.size() * 4 + kidx.size() * 4 + w.size() * 4 + bias.size() * 4;
  }
};

// Packs dense f32 W [K, N] (row-major, row stride N). Any K, N >= 1 (N need
// not be a multiple of 4); bias [N] or null. std::invalid_argument on a bad
// shape or a null W, or when the nonzero blocks overflow int32 offsets.
PackedF32Sparse pack_f32_sparse(const float* W, int64_t K, int64_t N, const float* bias);

// Fused epilogue: y = act(x W + b), then + residual[m][n] (row stride
// ld_residual, 0 = N). residual may alias y (same stride), never x.
struct F32SparseEpilogue {
  Activation act = Activation::None;
  const float* residual = nullptr;
  int64_t ld_residual = 0;
};

// y [M, ldy] = epilogue(x [M, ldx] W). Any M >= 0; ldx >= K, ldy >= N. The
// kernel of active_isa() (isa.h); parallel with TBB in the caller's arena.
// Thread-safe for concurrent calls on one pack.
void spmm_f32(const PackedF32Sparse& w, const float* x, int64_t M, int64_t ldx,
              const F32SparseEpilogue& ep, float* y, int64_t ldy);

// Name of the micro-kernel spmm_f32 uses at the active ISA, e.g.
// "spmm_f32_4x1_24x4_avx2" (tokens x output channels per register tile).
const char* spmm_f32_kernel_name();

// ---------------------------------------------------------------------------
// Internals shared by the per-ISA kernel files (not API).
namespace spmm_f32_detail {

// One work item: block-rows [br0, br1) x tokens [m0, m0 + mc).
struct Tile {
  const PackedF32Sparse* w;
  const float* xb;  // this token block's activations, K-major: xb[k * ldb + (m - m0)]
  int64_t ldb;      // >= mc, a multiple of the kernel's vector width; tokens past mc are 0
  int64_t m0, mc;
  int64_t br0, br1;
  Activation act;
  void (*act_fn)(float*, int64_t);  // in-place activation of the f32 row kernels (null: none)
  const float* residual;            // [M, ld_residual] by absolute token, or null
  int64_t ld_residual;
  float* y;  // [M, ldy] by absolute token
  int64_t ldy;
};

// One ISA build: its register tile and the activation packer that feeds it.
struct Kernel {
  const char* name;
  int lanes;        // floats per vector: ldb is a multiple of it
  int token_block;  // most tokens per work item (a multiple of lanes)
  // x rows [0, mc) (row stride ldx), K columns -> xb [K][ldb], zeros in
  // columns [mc, ldb).
  void (*pack)(const float* x, int64_t ldx, int64_t mc, int64_t K, float* xb, int64_t ldb);
  void (*tile)(const Tile& t);
};

const Kernel& kernel_scalar();  // plain loops, 8 tokens
const Kernel& kernel_avx2();    // 8 floats per vector (AVX2 + FMA)
const Kernel& kernel_avx512();  // 16 floats per vector (AVX-512F)
// The AVX-512 build's 16-lane code compiled for AVX2 (each vector op done as
// two ymm ops): runs the wide kernel's logic (tiles, tails, transposes) on
// CPUs without AVX-512, for tests. Never chosen by spmm_f32.
const Kernel& kernel_avx2_w16();

// spmm_f32 on an explicit kernel (tests).
void spmm_f32_with(const Kernel& k, const PackedF32Sparse& w, const float* x, int64_t M,
                   int64_t ldx, const F32SparseEpilogue& ep, float* y, int64_t ldy);

}  // namespace spmm_f32_detail
}  // namespace spinel::kernels
