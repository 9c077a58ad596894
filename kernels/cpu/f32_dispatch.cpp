// Chooses the FP32 row-kernel build the CPU runs best, once per process.
#include <cstdlib>
#include <cstring>

#include "kernels/cpu/f32_isa.h"
#include "kernels/cpu/isa.h"

namespace spinel::kernels::f32 {

size_t attention_slot_floats(int64_t max_len, int64_t head_dim) {
  // Must match the layout in attention_block() (f32_body.inc):
  // K^T [head_dim, ldk] | V [lp, dp] | scores [kAttentionRows, lp]. Every
  // part is a multiple of kPad floats, so a slot keeps 64-byte alignment.
  const int64_t len = max_len < 1 ? 1 : max_len;
  const int64_t lp = round_up_pad(len), ldk = attention_kt_stride(len);
  const int64_t dp = round_up_pad(head_dim);
  return static_cast<size_t>(head_dim * ldk + lp * dp + kAttentionRows * lp);
}

namespace {

bool cpu_runs_avx2() { return cpu_supports(Isa::Avx2); }
bool cpu_runs_avx512() { return cpu_has_avx512_core(); }

}  // namespace

// One ISA policy for every kernel family: the level of isa.h (detected once,
// capped by SPINEL_ISA and set_max_isa) picks the FP32 build, at every call,
// so a cap set at run time applies here as it does to the INT8 kernels.
// The AVX-512 build needs no VNNI: below the avx512vnni level (a cap, or a
// CPU with AVX-512 but without VNNI, whose level is avx2) it runs the AVX2
// build, so every kernel family honours the same cap.
const KernelTable& kernel_table() {
  switch (active_isa()) {
    case Isa::Scalar: return kernel_table_generic();
    case Isa::Avx2:
    case Isa::Avx2Vnni: return kernel_table_avx2();
    case Isa::Avx512Vnni: return cpu_runs_avx512() ? kernel_table_avx512() : kernel_table_avx2();
  }
  return kernel_table_generic();
}

const KernelTable* kernel_table_for(const char* isa) {
  if (!isa) return nullptr;
  if (!std::strcmp(isa, "scalar") || !std::strcmp(isa, "generic")) return &kernel_table_generic();
  if (!std::strcmp(isa, "avx2")) return cpu_runs_avx2() ? &kernel_table_avx2() : nullptr;
  if (!std::strcmp(isa, "avx512")) return cpu_runs_avx512() ? &kernel_table_avx512() : nullptr;
  return nullptr;
}

}  // namespace spinel::kernels::f32
