// AVX2 block-sparse u8 x s8 kernel (16 tokens x 4 output channels per
// register tile) for CPUs without any VNNI. The u8 x s8 4-byte dot product
// is done exactly with vpmaddwd on 16-bit halves: bytes 0,2 and 1,3 of each
// 32-bit lane, zero-extended (and / shift), against the packed s16 weight
// pairs (w0, w2) and (w1, w3). vpmaddubsw is not used: its int16 result
// saturates (255 * 127 * 2 > 32767).
//
// Compiled with -mavx2 -mfma (per-file flags); only called after
// active_isa() says so.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/f32_isa.h"
#include "kernels/cpu/qgemm.h"

#if !defined(__AVX2__) || !defined(__FMA__)
#error "spmm_s8_avx2.cpp needs -mavx2 -mfma"
#endif

namespace spinel::kernels::qgemm_detail {
namespace {
struct DotAvx2Madd {
  struct Z {
    __m256i lo, hi;  // bytes 0,2 / 1,3 of each lane as u16
  };
  static Z prep(__m256i z) {
    return {_mm256_and_si256(z, _mm256_set1_epi32(0x00FF00FF)), _mm256_srli_epi16(z, 8)};
  }
  static __m256i dot(__m256i acc, const Z& z, const int8_t*, const int16_t* w16) {
    int32_t lo, hi;
    std::memcpy(&lo, w16, 4);
    std::memcpy(&hi, w16 + 2, 4);
    const __m256i p = _mm256_add_epi32(_mm256_madd_epi16(z.lo, _mm256_set1_epi32(lo)),
                                       _mm256_madd_epi16(z.hi, _mm256_set1_epi32(hi)));
    return _mm256_add_epi32(acc, p);
  }
};
}  // namespace
}  // namespace spinel::kernels::qgemm_detail

#define SPMM_YMM_DOT DotAvx2Madd
#define SPMM_YMM_NAME spmm_u8s8_4x1_16x4_avx2
#include "kernels/cpu/spmm_s8_ymm.inc"
