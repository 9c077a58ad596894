// FP32 row kernels compiled for AVX2 + FMA (Haswell and later). Only called
// after kernel_table() has checked the CPU supports them.
#include <cstdint>

#include "kernels/cpu/f32_isa.h"

// Headers come first so their inline functions keep the baseline target.
#if defined(__clang__)  // clang has no GCC target pragma; its attribute does the same
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,bmi,bmi2,popcnt,lzcnt"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,popcnt,lzcnt")
#endif
#define SPINEL_F32_NS avx2
#define SPINEL_F32_LANES 8
#define SPINEL_F32_ROWS 4
#include "kernels/cpu/f32_body.inc"
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace spinel::kernels::f32 {
// Built for the baseline target (after pop_options): safe to call anywhere.
const KernelTable& kernel_table_avx2() {
  static const KernelTable t{"avx2", avx2::layernorm_rows, avx2::embedding_rows,
                             avx2::attention_block, avx2::gelu_erf, avx2::gelu_tanh,
                             avx2::geglu_rows, avx2::gelu_erf_q};
  return t;
}
}  // namespace spinel::kernels::f32
