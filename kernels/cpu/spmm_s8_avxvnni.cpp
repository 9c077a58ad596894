// AVX-VNNI block-sparse u8 x s8 kernel (16 tokens x 4 output channels per
// register tile; VEX-encoded vpdpbusd on ymm, e.g. Alder Lake / Sapphire
// Rapids E-core class CPUs without AVX-512).
//
// Compiled with -mavx2 -mfma -mavxvnni (per-file flags); only called after
// cpu_has_avxvnni() says so. AVX-512 VNNI CPUs without AVX-VNNI run the same
// body in its EVEX build (spmm_s8_avx512vnni.cpp).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/f32_isa.h"
#include "kernels/cpu/qgemm.h"

#if !defined(__AVXVNNI__) || !defined(__AVX2__) || !defined(__FMA__)
#error "spmm_s8_avxvnni.cpp needs -mavx2 -mfma -mavxvnni"
#endif

namespace spinel::kernels::qgemm_detail {
namespace {
struct DotAvxVnni {
  using Z = __m256i;
  static Z prep(__m256i z) { return z; }
  static __m256i dot(__m256i acc, const Z& z, const int8_t* w4, const int16_t*) {
    int32_t v;
    std::memcpy(&v, w4, 4);
    return _mm256_dpbusd_avx_epi32(acc, z, _mm256_set1_epi32(v));
  }
};
}  // namespace
}  // namespace spinel::kernels::qgemm_detail

#define SPMM_YMM_DOT DotAvxVnni
#define SPMM_YMM_NAME spmm_u8s8_4x1_16x4_avxvnni
#include "kernels/cpu/spmm_s8_ymm.inc"
