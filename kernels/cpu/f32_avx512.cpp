// FP32 row kernels compiled for AVX-512 (F/VL/BW/DQ, Skylake-SP and later)
// with 512-bit vectors preferred. Only called after kernel_table() has
// checked the CPU supports them.
#include <cstdint>

#include "kernels/cpu/f32_isa.h"

// Headers come first so their inline functions keep the baseline target.
#if defined(__clang__)  // clang has no GCC target pragma; its attribute does the same
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c,bmi,bmi2,popcnt,lzcnt"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c,bmi,bmi2,popcnt,lzcnt,prefer-vector-width=512")
#endif
#define SPINEL_F32_NS avx512
#define SPINEL_F32_LANES 16
#define SPINEL_F32_ROWS 8
#include "kernels/cpu/f32_body.inc"
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace spinel::kernels::f32 {
// Built for the baseline target (after pop_options): safe to call anywhere.
const KernelTable& kernel_table_avx512() {
  static const KernelTable t{"avx512", avx512::layernorm_rows, avx512::embedding_rows,
                             avx512::attention_block, avx512::gelu_erf, avx512::gelu_tanh,
                             avx512::geglu_rows, avx512::gelu_erf_q};
  return t;
}
}  // namespace spinel::kernels::f32
