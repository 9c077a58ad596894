// Per-ISA builds of the FP32 row kernels (layernorm, embedding, attention
// blocks, GELU) and the run-time choice between them.
//
// The same source (f32_body.inc) is compiled three times under different
// `#pragma GCC target` settings (f32_generic.cpp, f32_avx2.cpp,
// f32_avx512.cpp) so the project's baseline x86-64 build still carries
// AVX2/AVX-512 code paths. kernel_table() picks the build for the active
// level of isa.h (the same detection and SPINEL_ISA cap as every kernel):
// scalar -> "scalar", avx2/avxvnni -> "avx2", avx512vnni -> "avx512".
//
// These functions are sequential; the TBB loops live in layernorm.cpp,
// embedding.cpp, attention.cpp and gelu.cpp.
#pragma once

#include <cstddef>
#include <cstdint>

namespace spinel::kernels::f32 {

// Token rows are padded to this many floats in attention scratch, so that the
// fixed-width inner loops never need a tail.
constexpr int64_t kPad = 16;

// 16-bit lane indices that interleave the two halves of a 32-lane vector,
// (a0, b0, a1, b1, ...): two rows' 16 BF16 values each, as cvtne2ps_pbh
// packs them, into 16 pair words (vpermw). The sparse kernel's K pairs and
// the BF16 attention's V2 build both use it.
alignas(64) inline constexpr uint16_t kPairInterleave[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,
                                                            21, 6, 22, 7, 23, 8,  24, 9,  25, 10, 26,
                                                            11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
inline int64_t round_up_pad(int64_t n) { return (n + kPad - 1) / kPad * kPad; }
// Most query rows an attention register tile holds (the score scratch is
// sized for this many); each ISA build uses up to this many.
constexpr int64_t kAttentionRows = 8;

// One attention work item: query rows [q_begin, q_end) of one head of one
// sequence. Rows of qkv are `qkv_stride` floats apart; Q of this head starts
// at column q_col, K at k_col, V at v_col.
struct AttentionBlock {
  const float* qkv;  // first token row of the sequence
  // Or: Q, K and V already rounded to BF16 (round to nearest even, as the
  // BF16 blocks round f32; the INT8 Q.K^T block quantizes Q and K from these
  // values), the same rows, columns and strides in 16-bit elements; qkv is
  // then unused.
  const uint16_t* qkv_bf16 = nullptr;
  int64_t seq_len;
  int64_t qkv_stride;
  int64_t q_col, k_col, v_col;
  int64_t head_dim;
  int64_t q_begin, q_end;
  float scale;
  // ALiBi: -alibi_slope * |j - i| is added to the scaled score of query i and
  // key j (positions within the sequence); 0 for none.
  float alibi_slope;
  float* out;  // first token row of the sequence, at this head's column
  int64_t out_stride;
  // Or (with qkv_bf16 and head_dim a multiple of 32; the INT8 Q.K^T block
  // reads only the sequence's keys): K already in the K2 pair layout
  // (attention_bf16.inc), word (p, j) =
  // (k[j][2p], k[j][2p + 1]) at k2[p * k2_stride + j] for the sequence's key
  // j. The block reads words up to j < seq_len rounded up to 16, which must
  // be readable; their scores past seq_len are never used.
  const uint32_t* k2 = nullptr;
  int64_t k2_stride = 0;
  // And (with k2) V in pair words of two tokens
  // (QEpilogue::v_pairs): row g
  // of head_dim words at v2_pairs + g * head_dim holds tokens 2g and 2g + 1
  // of the whole batch, whose token v2_first is the sequence's first. The
  // block reads only the sequence's rows (in place where v2_first is even).
  const uint32_t* v2_pairs = nullptr;
  int64_t v2_first = 0;
};

// Row stride of the K^T scratch for a sequence of len tokens: padded past a
// multiple of 16 floats by one cache line, so the head_dim rows a score tile
// walks down do not all fall into the same few L1 sets (with a power-of-two
// stride such as 512 floats they did, and long sequences ran 2x slower).
inline int64_t attention_kt_stride(int64_t len) { return round_up_pad(len) + kPad; }

// Scratch floats one attention work item needs for sequences up to max_len:
// enough for the FP32 block below and for the AMX-BF16 one.
size_t attention_slot_floats(int64_t max_len, int64_t head_dim);

// Scratch layout of the BF16 attention blocks (attention_amx.cpp and
// attention_bf16.cpp; the AVX512_BF16 one leaves o unused), in
// 32-bit words from the slot start; computed here, in baseline code, so that
// the slot size never runs AMX-built code. lp: keys padded to 32; dp:
// head_dim padded to 32 (Q.K^T); dv: head_dim padded to 16 (P.V).
// The INT8 Q.K^T variant (attention_block_avx512_s8qk) keeps K as s8 quads
// in k2's place and Q as u8 rows in qb's, with dq = head_dim padded to 64
// bytes: kq [16][dq] bytes (16 keys quantized, before their transpose), ks
// [lp] and ksum [lp] (each key's scale and 128 times the sum of its s8
// values), qs [lp + 16] (each query row's scale).
struct AmxAttentionLayout {
  int64_t lp, dp, dv, dq;
  int64_t k2, v2, qb, s, o;  // K^T pairs, V pairs, the item's Q rows, scores/P, four output tiles
  int64_t kq, ks, ksum, qs;  // the INT8 Q.K^T variant's
  int64_t words;
};
AmxAttentionLayout amx_attention_layout(int64_t len, int64_t head_dim);

// The attention work item on AMX-BF16 tiles (Q.K^T and P.V in BF16 with
// FP32 accumulation, softmax in FP32). Only where cpu_has_amx_bf16(); same
// contract as KernelTable::attention_block otherwise.
void attention_block_amx_bf16(const AttentionBlock& blk, float* scratch);

// The same on AVX512_BF16 dot products (attention_bf16.cpp; same operands,
// softmax and accuracy, no tiles). Only where cpu_has_avx512_bf16().
void attention_block_avx512_bf16(const AttentionBlock& blk, float* scratch);

// The same with Q.K^T on AVX-512 VNNI (vpdpbusd: 64 multiply-adds per
// instruction, twice vdpbf16ps's): Q and K quantized to 8 bits symmetrically
// per token and head (scale = max |x| / 127, q = nearbyint(x * 127 / max |x|)),
// Q shifted by 128 to u8 and the shift taken back exactly with each key's
// sum; the int32 sums times both scales are the scores. P.V stays BF16.
// Only where cpu_has_avx512_bf16() and the active ISA level is avx512vnni.
void attention_block_avx512_s8qk(const AttentionBlock& blk, float* scratch);

struct KernelTable {
  const char* name;
  // Rows [0, rows) of y = LN(x + residual) * gamma + beta; residual may be
  // null; y may alias x.
  void (*layernorm_rows)(const float* x, const float* residual, const float* gamma,
                         const float* beta, float eps, int64_t rows, int64_t cols, float* y);
  // Tokens [0, tokens) of the embedding op; pointers already offset to the
  // block, which starts at token first_token (the position when positions is
  // null).
  void (*embedding_rows)(const int32_t* ids, const int32_t* type_ids, const int32_t* positions,
                         int64_t first_token, int64_t tokens, int64_t hidden, const float* word, const float* pos,
                         const float* type, const float* gamma, const float* beta, float eps,
                         float* out);
  // scratch: attention_slot_floats(seq_len or more, head_dim) floats,
  // 64-byte aligned.
  void (*attention_block)(const AttentionBlock& blk, float* scratch);
  void (*gelu_erf)(float* x, int64_t n);
  void (*gelu_tanh)(float* x, int64_t n);
  // Rows [0, rows) of the GEGLU gate: x is [rows, 2n] (a | g), y [rows, n] =
  // gelu_erf(a) * g (+ residual [rows, n], may be null). y must not alias x.
  void (*geglu_rows)(const float* x, int64_t rows, int64_t n, const float* residual, float* y);
  // GELU (erf) to within 2e-5 max(1, |x|), for values quantized to 8 bits
  // next (QEpilogue::gelu_coarse): 14 vector operations where gelu_erf takes 20.
  void (*gelu_erf_q)(float* x, int64_t n);
};

const KernelTable& kernel_table_generic();
const KernelTable& kernel_table_avx2();
const KernelTable& kernel_table_avx512();

// The table for the active ISA level (isa.h), looked up at every call.
const KernelTable& kernel_table();
// The table for an explicit build name ("scalar", "avx2", "avx512"), or null
// if that name is unknown or this CPU cannot run it. For tests.
const KernelTable* kernel_table_for(const char* isa);

}  // namespace spinel::kernels::f32
