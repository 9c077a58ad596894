// FP32 row kernels for the baseline x86-64 ISA (SSE2): always runnable.
#include <cstdint>

#include "kernels/cpu/f32_isa.h"

#define SPINEL_F32_NS generic
#define SPINEL_F32_LANES 4
#define SPINEL_F32_ROWS 4
#include "kernels/cpu/f32_body.inc"

namespace spinel::kernels::f32 {
const KernelTable& kernel_table_generic() {
  static const KernelTable t{"scalar", generic::layernorm_rows, generic::embedding_rows,
                             generic::attention_block, generic::gelu_erf, generic::gelu_tanh,
                             generic::geglu_rows, generic::gelu_erf_q};
  return t;
}
}  // namespace spinel::kernels::f32
