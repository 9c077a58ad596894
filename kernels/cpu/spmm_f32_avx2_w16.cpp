// The AVX-512 kernel's source at its width (16 floats per vector, 4 token
// vectors per tile) compiled for AVX2: GCC splits each 512-bit vector
// operation into two ymm ones. Slow (the tile spills), never chosen by
// spmm_f32; it exists so that tests on AVX2-only machines run the 16-lane
// code (tiles, tails, transposes) that the AVX-512 build runs.
#include <cstdint>

#include "kernels/cpu/spmm_f32.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,bmi,bmi2,popcnt,lzcnt"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,popcnt,lzcnt")
#endif
// 64-byte vectors passed between inline functions: no ABI boundary here.
#pragma GCC diagnostic ignored "-Wpsabi"
#define SPMM_F32_NS avx2_w16
#define SPMM_F32_LANES 16
#define SPMM_F32_NT 4
#include "kernels/cpu/spmm_f32_body.inc"
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace spinel::kernels::spmm_f32_detail {
const Kernel& kernel_avx2_w16() {
  static const Kernel k{"spmm_f32_4x1_64x4_avx2_w16", 16, 64, avx2_w16::pack, avx2_w16::tile};
  return k;
}
}  // namespace spinel::kernels::spmm_f32_detail
