// Block-sparse FP32 kernel for AVX-512F: register tile 4 channels x 4 zmm
// (64 tokens), 16 of the 32 zmm registers as accumulators; the weight
// broadcasts fold into the FMAs' memory operand. Only called after
// active_isa() allows AVX-512 (and cpu_has_avx512_core()).
#include <cstdint>

#include "kernels/cpu/spmm_f32.h"

// Headers come first so their inline functions keep the baseline target.
#if defined(__clang__)  // clang has no GCC target pragma; its attribute does the same
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c,bmi,bmi2,popcnt,lzcnt"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c,bmi,bmi2,popcnt,lzcnt,prefer-vector-width=512")
#endif
#define SPMM_F32_NS avx512
#define SPMM_F32_LANES 16
#define SPMM_F32_NT 4
#include "kernels/cpu/spmm_f32_body.inc"
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace spinel::kernels::spmm_f32_detail {
// Built for the baseline target (after pop_options): safe to call anywhere.
const Kernel& kernel_avx512() {
  static const Kernel k{"spmm_f32_4x1_64x4_avx512", 16, 64, avx512::pack, avx512::tile};
  return k;
}
}  // namespace spinel::kernels::spmm_f32_detail
