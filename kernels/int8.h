// The INT8 Linear contract, shared by every backend.
//
// Quantization (the contract every path implements):
//   weights  W [K, N] s8, symmetric per output channel: W_real[k][n] ~ scale_w[n] * W[k][n]
//   input    x [M, K] u8, asymmetric per token row m:  x_real[m][k] ~ s[m] * (x[m][k] - zp[m])
//   acc[m][n]  = sum_k x[m][k] * W[k][n]                              (int32, exact)
//   corr[m][n] = acc[m][n] - zp[m] * wsum[n],  wsum[n] = sum_k W[k][n] (int32, exact)
//   y[m][n]    = fma(float(corr), s[m] * scale_w[n], bias[n] or 0)     (one rounding)
//   then, in this order and each optional: y = gelu_erf(y); y += residual[m][n];
//   and requantize: q = clamp(nearbyint(y * (1 / out_scale)) + out_zp, 0, 255) (u8 out).
// Without GELU every path gives bit-identical floats; with GELU they differ
// by the vectorized GELU's error (<= 2.4e-7 max(1, |y|), f32_body.inc), and
// with gelu_coarse by up to 2e-5 max(1, |y|) (gelu_erf_q_v, f32_body.inc).
#pragma once

#include <cstdint>

namespace spinel::kernels {

// Fused epilogue options (see the contract above).
struct QEpilogue {
  bool gelu = false;                 // exact (erf) GELU
  // With gelu: the output is only ever quantized to 8 bits per token next (the
  // input of INT8 Linears), so GELU may be the cheaper polynomial form, within
  // 2e-5 max(1, |y|) of the exact one (~1e-3 of a quantization step). Kernels
  // without a coarse form ignore it.
  bool gelu_coarse = false;
  const float* residual = nullptr;   // [M, N] f32 added after GELU; may alias a f32 y
  int64_t ld_residual = 0;           // row stride of residual (0: N)
  bool requantize = false;           // y is u8 [M, ldy], else f32 [M, ldy]
  float out_scale = 1.f;             // static scale of the u8 output
  int32_t out_zp = 0;                // static zero point of the u8 output (0..255)
  // Per output channel [N], multiplied in after GELU (nullable): the next
  // Linear's input scale, applied where this Linear writes for it (the cpu
  // Linear chain's f32 blocked output only).
  const float* out_mul = nullptr;
  // y is uint16_t [M, ldy] holding each f32 value rounded to BF16 (round to
  // nearest even): for a BF16 attention, which rounds Q, K and V so itself.
  // No residual or requantize with it (nor GELU on the dense AMX kernel);
  // only where the backend's kernel says it can (cpu: qgemm.h
  // spmm_u8s8_bf16_available, DenseLinearU8S8::writes_bf16).
  bool out_bf16 = false;
  // With out_bf16, into the head panels of a fused Q, K, V output (N = 3 H
  // panel; cpu: qgemm.h spmm_u8s8_panels and spmm_u8s8_f32in): K's panels
  // (H .. 2H - 1) as 32-bit words of BF16 pairs, the layout the BF16 attention
  // multiplies K from (AttentionBlock::k2): in head h's panel, word
  // p M + m = (k[m][2p], k[m][2p + 1]), the lower dimension in the low half.
  // Q's panels stay token rows, and V's unless v_pairs. Only where the kernel says so (cpu:
  // spmm_u8s8_bf16_available, panels; std::invalid_argument elsewhere).
  bool k_pairs = false;
  // And V's panels (2H .. 3H - 1) as words of BF16 pairs of two tokens, the
  // layout the BF16 attention multiplies V from (AttentionBlock::v2_pairs): in
  // head h's panel, word g panel + d = (v[2g][d], v[2g + 1][d]), the earlier
  // token in the low half. With k_pairs, for an even M only.
  bool v_pairs = false;
};

}  // namespace spinel::kernels
