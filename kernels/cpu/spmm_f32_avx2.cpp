// Block-sparse FP32 kernel for AVX2 + FMA: register tile 4 channels x 3 ymm
// (24 tokens): 12 accumulators, 3 activation vectors and a broadcast weight
// fill the 16 ymm registers. Only called after active_isa() allows AVX2.
#include <cstdint>

#include "kernels/cpu/spmm_f32.h"

// Headers come first so their inline functions keep the baseline target.
#if defined(__clang__)  // clang has no GCC target pragma; its attribute does the same
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,bmi,bmi2,popcnt,lzcnt"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,popcnt,lzcnt")
#endif
#define SPMM_F32_NS avx2
#define SPMM_F32_LANES 8
#define SPMM_F32_NT 3
#include "kernels/cpu/spmm_f32_body.inc"
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace spinel::kernels::spmm_f32_detail {
// Built for the baseline target (after pop_options): safe to call anywhere.
const Kernel& kernel_avx2() {
  static const Kernel k{"spmm_f32_4x1_24x4_avx2", 8, 24, avx2::pack, avx2::tile};
  return k;
}
}  // namespace spinel::kernels::spmm_f32_detail
