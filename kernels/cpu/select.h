// The one place where the cpu backend chooses a Linear layer's kernel, from
// the CPU (detected once, capped by SPINEL_ISA / set_max_isa) and the layer's
// block sparsity as stored in the .spnl. The converter's default threshold
// comes from the same table.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/cpu/ops.h"
#include "runtime/ir.h"

namespace spinel::kernels {

enum class LinearImpl { DnnlF32, DnnlU8S8, SparseU8S8, SparseF32 };
// "dnnl-f32", "dnnl-u8s8", "sparse-u8s8", "sparse-f32"
const char* linear_impl_name(LinearImpl impl);

// Block sparsity from which the 4x1 block-sparse kernel beats oneDNN's dense
// u8s8 matmul (M = 128 tokens, 1 and 2 threads; bench/RESULTS.md "Sparse vs
// dense crossover"), by the dense kernel oneDNN has on the CPU.
struct SparseCrossover {
  const char* dense_kernel;  // what oneDNN's u8s8 runs on
  double min_sparsity;
};
// On AVX-512 VNNI (and below): convert's default --sparse-threshold.
constexpr SparseCrossover kCrossoverVnni{"avx512_core_vnni", 0.4};
// On AMX-INT8 the dense kernel is much faster, and the sparse one wins later.
// Against our AMX kernel (dense_s8_amx.cpp; bench_spmm_s8, 2 threads, weights
// cached) the sparse one wins from ~85% at M = 128-384 (1.3-1.5x at 90%,
// 0.8-0.9x at 80%), but end to end, where the dense weights stream from
// memory, MiniLM pruned to 80% ran 1.1x faster sparse: 0.7 stays.
constexpr SparseCrossover kCrossoverAmx{"avx512_core_amx", 0.7};

// The crossover that applies on this CPU at the active ISA level.
const SparseCrossover& crossover_here();

// Block sparsity from which an F32 layer runs the 4x1 block-sparse FP32
// kernel (spmm_f32.h) instead of oneDNN's dense f32 matmul. Measured on AVX2
// (bench/RESULTS.md "Block-sparse FP32 Linear"; bench/bench_spmm_f32.cpp:
// BERT-base shapes, M = 16, 128, 384, 1 and 2 threads): the sparse kernel
// overtakes oneDNN at <= 30% block sparsity everywhere, and already at 0% for
// M = 16 (oneDNN's f32 gemm is least efficient there); 0.4 leaves a margin
// (>= 1.2x measured at 40%). AVX-512 is assumed to move both kernels alike
// (not measured: no such CPU here). One threshold for every M: the choice is
// made once per layer, when the model is prepared.
struct F32Crossover {
  const char* dense_kernel;  // what oneDNN's f32 matmul runs on
  double min_sparsity;
};
constexpr F32Crossover kCrossoverF32{"oneDNN f32 gemm (avx2)", 0.4};

// Fraction of all-zero 4x1 blocks of f32 W [K, N] (4 consecutive output
// channels x 1 input channel; when N % 4 != 0 the last, shorter group of each
// row counts as a block). Any K, N >= 1.
double block_sparsity_4x1_f32(const float* W, int64_t K, int64_t N);

// SPINEL_F32_SPARSE, read at every choice (i.e. when a model is prepared):
// unset, "" or "auto": the crossover above; "0"/"off": every F32 Linear on
// oneDNN dense (A/B runs); "1"/"on": every F32 Linear on the sparse kernel,
// whatever its sparsity (tests). Other values warn once and mean auto.
enum class F32SparseMode { Auto, Off, On };
F32SparseMode f32_sparse_mode();

struct LinearChoice {
  LinearImpl impl = LinearImpl::DnnlF32;
  std::string why;  // one line: "block sparsity 0.91 >= 0.40 (avx512_core_vnni)"
};

// precision: what the file says (F32, S8Dense, or S8Sparse = the converter
// found the layer sparse enough for the sparse kernel). block_sparsity: the
// stored value, or < 0 when the file has none (then it is measured from W,
// s8 [K, N], which must be given for S8Sparse layers, or from W32, f32
// [K, N], for F32 layers; F32 without either counts as dense).
//   F32 -> SparseF32 if the block sparsity is >= kCrossoverF32 (or
//          SPINEL_F32_SPARSE says so), else DnnlF32;
//   S8Dense -> SparseU8S8 where dense_s8_mode() says so and the weight's K
//              and N are multiples of 4 (every block kept), else DnnlU8S8
//              (oneDNN's matmul or our AMX kernel: DenseLinearU8S8);
//   S8Sparse -> SparseU8S8, unless AMX-INT8 is usable at the active level and
//               the sparsity is below kCrossoverAmx (then DnnlU8S8); an ISA
//               cap below AVX-512 VNNI asks for that level's sparse kernel.
LinearChoice choose_linear(Precision precision, double block_sparsity, const int8_t* W, int64_t K,
                           int64_t N, const float* W32 = nullptr);

// Dense INT8 layers (stored S8Dense). SPINEL_DENSE_S8, read at every choice
// (when a model is prepared): unset, "" or "auto": our AMX-INT8 kernel where
// AMX-INT8 is usable at the avx512vnni level; else the block-sparse kernel,
// every block kept, where cpu_vnni_unpacks_free() at that level (AMD Zen 4:
// its inner loop at the VNNI peak; alone 5-18% slower than oneDNN's u8s8
// at 0% sparsity, but its fusions, the FFN chain, BF16 QKV panels and the
// LayerNorm on its threads, made the dense MiniLM 1.03-1.11x (single
// queries) and 1.05-1.16x (batches of 8) faster from 64 tokens, BERT-base
// 1.05x / 1.10x at 128, bench/RESULTS.md); else oneDNN's matmul.
// "amx": the AMX kernel where usable, else oneDNN; "dnnl": oneDNN; "sparse":
// the block-sparse kernel at any level (A/B runs, tests). Other values warn
// once and mean auto.
// Runs whose longest sequence (or whose row count) is under
// kDenseOnSparseMinTokens keep the dense kernel even then (both are
// prepared; the same bits either way): what the sparse kernel brings is the
// fusions around the attention, which grow with the sequences, while alone
// it is slower. On Zen 4 the dense MiniLM, against oneDNN throughout:
// sequences of 16 tokens 0.59x single-stream and 0.93x in batches of 8,
// 32 tokens 0.89x / 1.00x, 64 tokens 1.05x / 1.07x (bench/RESULTS.md). The
// CPU backend then writes token rows instead of head panels, and a Linear
// chain with such a layer passes quantized token rows instead (as
// linear_quantizes_next does for dense pairs).
constexpr int64_t kDenseOnSparseMinTokens = 64;
enum class DenseS8Mode { Auto, Amx, Dnnl, Sparse };
DenseS8Mode dense_s8_mode();
// Dense INT8 layers run the block-sparse kernel here (the above, resolved).
bool dense_s8_on_sparse_kernel();

// --- Attention ---------------------------------------------------------
// The attention products run in FP32 (FMA) or in BF16: Q, K, P and V rounded
// to BF16 (8 significant bits), FP32 accumulation and softmax, on one of
//   AMX-BF16 tiles (attention_amx.cpp): measured on a Xeon with AMX
//     (bench/RESULTS.md, "Attention on AMX-BF16") several times faster than
//     FP32 attention at seq 128;
//   AVX512_BF16 dot products (attention_bf16.cpp), where vdpbf16ps issues at
//     vfmadd's rate (cpu_bf16_dot_full_rate(): AMD Zen 4 and later; on a
//     Zen 5 EPYC, 32 products per instruction against 16, attention 1.8x
//     faster than FP32 at BERT-base's seq 128, bench/RESULTS.md). On Sapphire
//     Rapids it issues at half that rate, no faster than FP32: not chosen
//     there by default.
//
// SPINEL_ATTENTION, read at every choice (when a model is prepared): unset,
// "" or "auto": BF16 for models whose Linear layers are INT8 (already
// quantized, so BF16 attention stays within their accuracy: tests check
// MiniLM's INT8 cosine against FP32) on AMX-BF16, else on AVX512_BF16 where it
// runs at full rate, else FP32; FP32 for FP32 models (FP32 results stay as
// they were); "f32": always FP32; "bf16": BF16 for every model (tests, A/B
// runs) on AMX-BF16, else on AVX512_BF16 at any rate; "s8qk": INT8 Q·K^T
// with BF16 P·V (below) for every model where AVX512_BF16 runs. All need the
// active ISA level avx512vnni (a cap below it means FP32); "bf16" or "s8qk"
// without a way to run them warn once and run FP32. Other values warn once
// and mean auto.
enum class AttentionMode { Auto, F32, Bf16, S8Qk };
AttentionMode attention_mode();

struct AttentionChoice {
  AttentionProducts products = AttentionProducts::F32;
  std::string why;
};
// int8_model: the graph's Linear layers are INT8. head_dim: the heads'
// width (0: unknown). Where the choice is AVX512_BF16 for an INT8 model by
// default and heads are at least kS8QkMinHeadDim wide, Q·K^T runs in INT8
// on VNNI instead (Avx512S8Qk, ops.h): measured on a Zen 5 EPYC, BERT-base
// 90% INT8 (heads of 64) 1.02x end to end, MiniLM INT8 (heads of 32) 0.94x
// (the per-row quantization costs as much as the products save; bench/
// RESULTS.md). SPINEL_ATTENTION=s8qk asks for it on any model wherever
// AVX512_BF16 and AVX-512 VNNI run ("bf16" keeps BF16 Q·K^T).
constexpr int64_t kS8QkMinHeadDim = 64;
AttentionChoice choose_attention(bool int8_model, int64_t head_dim = 0);

// --- Linear chain ------------------------------------------------------
// Op p and op p + 1, both Linear (BERT's FFN: FFN1 with GELU, then FFN2),
// pass p + 1's input in the sparse kernel's own layouts (qgemm.h, "Two
// sparse Linears in a row": no f32 token-major matrix, no transposes, no
// separate interleave; results bit for bit the same) when: both run the
// block-sparse INT8 kernel and it has 64-token blocks (AVX-512 VNNI); p has
// no residual, no gate, and GELU (erf) or no activation; p's output is read
// by p + 1's x and by nothing else (not a graph output either); p + 1
// quantizes its input per token (no calibrated scale); op p is not itself
// the second of a chain (one link at a time). The session turns it
// off for runs whose Linear inputs are observed (calibration), and the CPU
// backend for runs of at most 16 tokens (backend_cpu.cpp kChainMinTokens).
// SPINEL_LINEAR_CHAIN, read when a model is prepared: unset, "", "auto" or
// "on": as above; "off"/"0": never (A/B runs, tests). Other values warn once
// and mean auto.
bool chain_linears(const Graph& g, size_t p);

// --- LayerNorm and the next Linear's quantization --------------------------
// Op p is a LayerNorm and op p + 1 an INT8 Linear that reads its output as x
// with per-token quantization at run time (no calibrated scale): the
// LayerNorm quantizes each block of rows for it right after normalizing
// them (ops.h layernorm_quantize_f32: the same bits, one pass and one
// parallel region fewer), and the Linear takes those. The LayerNorm's f32
// output is still written for its other readers (the residual). The CPU
// backend keeps them apart in runs whose Linear inputs are observed.
// SPINEL_LN_QUANT, read when a model is prepared: unset, "", "auto" or "on":
// as above; "off"/"0": never (A/B runs, tests). Other values warn once and
// mean auto.
bool layernorm_quantizes_next(const Graph& g, size_t p);

// --- Quantization inside the sparse kernel's parallel region -------------
// A block-sparse INT8 Linear whose input is f32 (token rows quantized per
// token at run time, or the Linear chain's blocked output) lets the
// kernel's threads quantize each token block they read as they build it
// (qgemm.h spmm_u8s8_f32in, spmm_u8s8_from_blocked_f32): the same bits,
// without a separate pass and its parallel region and join.
// SPINEL_KERNEL_QUANT, read when a model is prepared: unset, "", "auto" or
// "on": yes; "off"/"0": a separate pass (A/B runs, tests). Other values warn
// once and mean auto.
bool sparse_quantizes_in_kernel();

// --- QKV in head panels -------------------------------------------------
// Op p is a Linear whose output is read only by Attention ops' qkv input
// (BERT's fused QKV projection): it writes that output in head panels
// (qgemm.h spmm_u8s8_panels, ops.h attention_f32 qkv_panels) when it runs
// the block-sparse INT8 kernel, has no residual, gate or activation, is not
// the second Linear of a chain, is not a graph output, and the heads' width is a multiple of 16. Bit for bit
// the same results; what changes is the sparse kernel's stores (token rows
// a few KB apart share a few L1 sets). Both the Linear and its Attention ask
// this when prepared; the CPU backend also keeps token rows for runs whose
// values are observed. SPINEL_QKV_PANELS, read when a model is prepared:
// unset, "", "auto" or "on": as above; "off"/"0": never (A/B runs, tests).
// Other values warn once and mean auto. Returns the panel width (the heads'
// width, which every reading Attention must agree on), or 0 for token rows.
int64_t qkv_head_panel(const Graph& g, size_t p);

// --- QKV in BF16 for a BF16 attention ------------------------------------
// Op p is an INT8 Linear whose output is read only by one Attention op's
// qkv input, with no residual, gate or activation, not a graph output, and
// that Attention runs BF16 products (choose_attention: AmxBf16 or
// Avx512Bf16, whose blocks round Q, K and V to BF16 themselves) or INT8
// Q.K^T (Avx512S8Qk): returns its heads' width, else 0. The CPU backend then
// has the Linear write its output (token rows, or head panels:
// qkv_head_panel) as BF16 where its kernel can (DenseLinearU8S8::writes_bf16:
// the AMX kernel; the block-sparse kernel where qgemm.h
// spmm_u8s8_bf16_available, not in a chain) and the run's values are not
// observed, and tells the Attention so at run time: half the bytes written
// and read back; for the BF16 blocks the same bits, for INT8 Q.K^T Q and K
// rounded to BF16 (2^-9 relative) before their 8-bit quantization (steps of
// max |x| / 127; on Zen 4, BERT-base 90% INT8 at 128 tokens: the QKV
// Linear 0.71-0.78x and the attention 0.87-0.94x the time, bench/RESULTS.md).
// int8_model as for
// choose_attention. SPINEL_QKV_BF16, read when a model is prepared: unset,
// "", "auto" or "on": as above; "off"/"0": never (A/B runs, tests). Other
// values warn once and mean auto.
int64_t qkv_bf16_rows(const Graph& g, size_t p, bool int8_model);

// --- K and V in the BF16 attention's pair layouts -------------------------
// Op p writes head panels (qkv_head_panel) in BF16 (qkv_bf16_rows: for an
// Attention on AMX-BF16 tiles, AVX512_BF16 dot products or INT8 Q.K^T),
// heads a multiple of 32 wide: returns that width, else 0. The CPU backend
// then has the Linear write K's panels as BF16 pair words (QEpilogue::k_pairs)
// where it writes panels in BF16, and tells the Attention so at run time,
// which multiplies them in place (the BF16 blocks) or quantizes them with
// keys as lanes (INT8 Q.K^T) instead of transposing K's rows into its layout
// itself: the same bits as from BF16 rows. Both ask this when prepared. SPINEL_QKV_K2, read
// when a model is prepared: unset, "", "auto" or "on": as above; "off"/"0":
// never (A/B runs, tests). Other values warn once and mean auto.
int64_t qkv_k_pairs(const Graph& g, size_t p, bool int8_model);
// Where qkv_k_pairs says so, V's panels too as pair words of two tokens
// (QEpilogue::v_pairs), in runs of an even token count: unless SPINEL_QKV_V2
// is "off"/"0" (read when a model is prepared; as above).
bool qkv_v_pairs(const Graph& g, size_t p, bool int8_model);

// Op p's output is read only as the input of INT8 Linears (which quantize it
// to 8 bits per token) and is not a graph output: a GELU producing it may be
// the coarse polynomial (QEpilogue::gelu_coarse). SPINEL_GELU_COARSE=off
// (read when a model is prepared) says no everywhere (A/B runs).
bool output_only_quantized(const Graph& g, size_t p);

// --- The LayerNorm after a Linear, on the Linear's threads ----------------
// Op p is an INT8 Linear (block-sparse or dense) with f32 token-row output
// (no gate, GELU (erf) or no activation), and op p + 1 a LayerNorm of p's
// output alone (no residual of its
// own; BERT's residual is added in the Linear's epilogue), which nothing
// else reads (not a graph output either): the Linear's kernel threads run
// the LayerNorm, and the LayerNorm's quantization for the Linear after it
// (layernorm_quantizes_next), on each token block they finished whole
// (qgemm.h RowsDone; the dense oneDNN path: each epilogue thread's rows),
// and the LayerNorm op has nothing left to do. The same
// bits; one parallel region fewer per pair, and the rows are normalized in
// the cache of the core that wrote them. The CPU backend keeps them apart
// in runs whose values are observed. SPINEL_LN_FUSE, read when a model is
// prepared: unset, "", "auto" or "on": as above; "off"/"0": never (A/B
// runs, tests). Other values warn once and mean auto.
bool linear_runs_layernorm(const Graph& g, size_t p);

// --- A Linear quantizing the next dense Linear's input --------------------
// Op p is an INT8 Linear (block-sparse or dense) with f32 token-row output
// (no gate, GELU (erf) or no activation), read by nothing but op p + 1 (not
// a graph output either), a dense INT8 Linear quantizing that input per
// token at run time (no calibrated scale, not as its residual): BERT's FFN1
// -> FFN2 in a dense model. Op p's kernel threads quantize each block of
// rows for p + 1 (times p + 1's input scale) as soon as its rows are final
// (qgemm.h RowsDone, DenseLinearU8S8::QuantOut: a dense p whose tasks hold
// whole rows quantizes from its epilogue's row buffer and never writes its
// f32 output); p + 1 takes those. The same bits as quantize_rows_u8 after p;
// one parallel region and one pass over cold rows fewer per pair. A block-sparse
// p + 1 is left out: it quantizes its own input in its kernel (or gets it
// from the Linear chain). One link at a time: p's own input does not come
// this way. The CPU backend keeps them apart in runs whose values are
// observed. SPINEL_LINEAR_QUANT, read when a model is prepared: unset, "",
// "auto" or "on": as above; "off"/"0": never (A/B runs, tests). Other values
// warn once and mean auto.
bool linear_quantizes_next(const Graph& g, size_t p);

}  // namespace spinel::kernels
