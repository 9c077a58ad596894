// The reference kernels: plain loops, the definition every optimized kernel
// (and every backend) is tested against. Written for clarity, not speed;
// sums are accumulated in double where that keeps the reference's own
// rounding out of sight. The "reference" backend runs models on them.
#pragma once

#include <cstdint>

#include "kernels/int8.h"
#include "runtime/ir.h"

namespace spinel::kernels::ref {

// --- FP32 ---
void embedding_f32(const int32_t* ids, const int32_t* type_ids, const int32_t* positions,
                   int64_t tokens, int64_t hidden, const float* word, const float* pos,
                   const float* type, const float* gamma, const float* beta, float eps, float* out);
void layernorm_f32(const float* x, const float* residual, const float* gamma, const float* beta,
                   float eps, int64_t rows, int64_t cols, float* y);
// alibi_slopes: num_heads floats or null (see kernels/cpu/ops.h).
void attention_f32(const float* qkv, const int64_t* seq_offsets, int64_t num_seqs,
                   int64_t num_heads, int64_t head_dim, float scale, float* out,
                   const float* alibi_slopes = nullptr);
void linear_f32(const float* x, const float* weight, const float* bias, int64_t M, int64_t K,
                int64_t N, Activation act, const float* residual, float* y);
// y [rows, n] = gelu_erf(a) * g (+ residual) for x [rows, 2n] = a | g, in double.
void gate_f32(const float* x, int64_t rows, int64_t n, Gate gate, const float* residual, float* y);
float gelu_erf(float x);
float gelu_tanh(float x);

// --- INT8 (the contract in kernels/int8.h) ---
// mul (nullable): the Linear's input scale [K]; x[m, k] * mul[k] is quantized.
void quantize_rows_u8(const float* x, int64_t M, int64_t K, uint8_t* xq, float* scale,
                      int32_t* zp, const float* mul = nullptr);
void quantize_rows_u8_static(const float* x, int64_t M, int64_t K, float scale, int32_t zp,
                             uint8_t* xq, float* x_scale, int32_t* x_zp, const float* mul = nullptr);
// acc [M, N] = x [M, K] (stride ldx) * W [K, N] (dense s8), int32.
void gemm_u8s8_acc(const uint8_t* x, int64_t M, int64_t K, int64_t ldx, const int8_t* W,
                   int64_t N, int32_t* acc);
// The whole contract on dense W.
void linear_u8s8(const uint8_t* x, int64_t M, int64_t K, int64_t ldx, const float* x_scale,
                 const int32_t* x_zp, const int8_t* W, int64_t N, const float* scale_w,
                 const float* bias, const QEpilogue& ep, void* y, int64_t ldy);

// --- heads ---
// out[s] = the first row (Cls) or the mean (Mean, accumulated in double) of
// sequence s's rows of x [T, width].
void pool_f32(const float* x, const int64_t* seq_offsets, int64_t num_seqs, int64_t width,
              PoolKind kind, float* out);
float tanh_f32(float x);

}  // namespace spinel::kernels::ref
