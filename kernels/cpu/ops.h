// FP32 operators of the CPU backend. All matrices are row-major; token
// matrices are packed [total_tokens, width] with per-sequence offsets
// (seq_offsets has num_seqs + 1 entries, seq_offsets[0] = 0).
//
// Parallel loops use TBB and run inside the caller's tbb::task_arena, which is
// how a session's thread budget reaches them; oneDNN (OpenMP in Debian's
// build) takes the calling thread's omp_get_max_threads(), which the session
// sets to the same budget.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <mutex>

#include "runtime/ir.h"

namespace spinel::kernels {

// out[t] = LN(word[ids[t]] + pos[positions[t]] + type[type_ids[t]]).
// pos and type may be null (then skipped); type_ids may be null (type 0).
void embedding_f32(const int32_t* ids, const int32_t* type_ids, const int32_t* positions,
                   int64_t tokens, int64_t hidden, const float* word, const float* pos,
                   const float* type, const float* gamma, const float* beta, float eps, float* out);

// y = LN(x + residual) * gamma + beta over each row; residual may be null.
// y may alias x.
void layernorm_f32(const float* x, const float* residual, const float* gamma, const float* beta,
                   float eps, int64_t rows, int64_t cols, float* y);

// layernorm_f32, then y quantized per token for the INT8 Linear that reads
// it next, in the same parallel pass: the bits of quantize_rows_u8(y, rows,
// cols, xq, scale, zp, -1, -1, mul) (qgemm.h). y may alias x; xq [rows, cols].
void layernorm_quantize_f32(const float* x, const float* residual, const float* gamma,
                            const float* beta, float eps, int64_t rows, int64_t cols, float* y,
                            const float* mul, uint8_t* xq, float* scale, int32_t* zp);

// layernorm_f32 (xq null) or layernorm_quantize_f32 (xq not null) on rows
// [0, rows), on the calling thread only: for rows handed over inside another
// kernel's parallel region (qgemm.h RowsDone). The same bits.
void layernorm_quantize_here(const float* x, const float* residual, const float* gamma,
                             const float* beta, float eps, int64_t rows, int64_t cols, float* y,
                             const float* mul, uint8_t* xq, float* scale, int32_t* zp);

// Multi-head self-attention per packed sequence. qkv is [T, 3*H] with
// columns Q | K | V, each H = num_heads * head_dim wide, heads major. out is
// [T, H]. scratch holds attention_scratch_floats(...) floats. alibi_slopes
// (num_heads floats, or null): ALiBi, -slope_h * |j - i| added to the scaled
// score of query i and key j of head h (positions within the sequence).
// products: where Q·K^T and P·V run (inputs and outputs stay f32):
//   F32         FMA, the active ISA level's build (f32_isa.h);
//   AmxBf16     AMX-BF16 tiles (f32::attention_block_amx_bf16), only where
//               cpu_has_amx_bf16();
//   Avx512Bf16  AVX512_BF16 dot products (f32::attention_block_avx512_bf16),
//               only where cpu_has_avx512_bf16();
//   Avx512S8Qk  Q·K^T on AVX-512 VNNI with Q and K quantized to 8 bits per
//               token and head, P·V as Avx512Bf16
//               (f32::attention_block_avx512_s8qk), only where
//               cpu_has_avx512_bf16() and the active ISA level is avx512vnni;
// a BF16 kind the CPU lacks throws std::logic_error. select.h chooses.
// qkv_panels: qkv is in head panels instead, [3 * num_heads][T][head_dim]
// (Q heads, then K, then V; T = seq_offsets[num_seqs]), as the sparse INT8
// Linear writes it (qgemm.h spmm_u8s8_panels with panel = head_dim). Same
// results, bit for bit.
// qkv_bf16 (AmxBf16, Avx512Bf16 and Avx512S8Qk only, else
// std::logic_error): qkv holds its token rows or head panels as BF16, 16-bit
// elements, already rounded to nearest even, as the INT8 Linears write them
// (QEpilogue::out_bf16). The BF16 blocks round Q, K and V so themselves: the
// results of the f32 values they came from, bit for bit. Avx512S8Qk quantizes
// the BF16 Q and K: the results of f32 inputs holding the BF16 values.
// k_pairs (AmxBf16, Avx512Bf16 or Avx512S8Qk with qkv_panels and qkv_bf16 and
// head_dim a multiple of 32 only, else std::logic_error): K's panels hold pair
// words (QEpilogue::k_pairs), which the block multiplies in place (INT8
// Q.K^T: quantizes with its keys as lanes, no transposes). v_pairs (with
// k_pairs and an even seq_offsets[num_seqs] only): V's panels hold pair
// words of two tokens (QEpilogue::v_pairs), read in place where a sequence
// starts on an even token. The same bits again.
enum class AttentionProducts { F32, AmxBf16, Avx512Bf16, Avx512S8Qk };
// "f32", "amx_bf16", "avx512_bf16", "avx512_s8qk"
const char* attention_products_name(AttentionProducts p);
// Whether the kind takes qkv_bf16 and k_pairs (AmxBf16, Avx512Bf16,
// Avx512S8Qk): what the QKV Linear may write for it (select.h qkv_bf16_rows).
bool attention_reads_bf16(AttentionProducts p);
void attention_f32(const float* qkv, const int64_t* seq_offsets, int64_t num_seqs,
                   int64_t num_heads, int64_t head_dim, float scale, float* out, float* scratch,
                   const float* alibi_slopes = nullptr,
                   AttentionProducts products = AttentionProducts::F32, bool qkv_panels = false,
                   bool qkv_bf16 = false, bool k_pairs = false, bool v_pairs = false);
size_t attention_scratch_floats(int64_t max_seq_len, int64_t num_heads, int64_t head_dim);

void gelu_erf_f32(float* x, int64_t n);
void gelu_tanh_f32(float* x, int64_t n);
// GEGLU gate over rows: x [rows, 2n] = a | g, y [rows, n] = gelu_erf(a) * g
// (+ residual, may be null; y may alias residual, not x).
void geglu_f32(const float* x, int64_t rows, int64_t n, const float* residual, float* y);

// y = act(x W + b) + residual through oneDNN's matmul. W is [K, N] row-major
// and is read from the caller's memory (an mmap of the model) for the life of
// this object. Primitives are cached per M. run() may be called concurrently.
class DenseLinearF32 {
 public:
  DenseLinearF32(const float* weight, const float* bias, int64_t K, int64_t N, Activation act);
  ~DenseLinearF32();
  // residual may be null; y must not alias x; y may alias residual.
  void run(const float* x, int64_t M, const float* residual, float* y) const;
  // oneDNN's name of the kernel run() uses for M rows with a residual (in
  // place: y == residual) or without, e.g. "gemm:jit"; never "ref" for a
  // shape we run (tests check).
  std::string implementation(int64_t M, bool residual, bool in_place) const;
  int64_t K() const { return K_; }
  int64_t N() const { return N_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int64_t K_, N_;
};


}  // namespace spinel::kernels
