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

// __builtin_cpu_supports also checks that the OS saves the wider registers.
bool cpu_runs_avx2() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
bool cpu_runs_avx512() {
  return cpu_runs_avx2() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq");
}

const KernelTable& choose() {
  // One ISA policy for every kernel family: the level of isa.h (detected,
  // capped by SPINEL_ISA) bounds the FP32 build too.
  const Isa level = active_isa();
  if (level == Isa::Scalar) return kernel_table_generic();
  if (level == Isa::Avx2 || level == Isa::Avx2Vnni)
    return cpu_runs_avx2() ? kernel_table_avx2() : kernel_table_generic();
  if (cpu_runs_avx512()) return kernel_table_avx512();
  if (cpu_runs_avx2()) return kernel_table_avx2();
  return kernel_table_generic();
}

}  // namespace

const KernelTable* kernel_table_for(const char* isa) {
  if (!isa) return nullptr;
  if (!std::strcmp(isa, "generic") || !std::strcmp(isa, "scalar") || !std::strcmp(isa, "sse2"))
    return &kernel_table_generic();
  if (!std::strcmp(isa, "avx2")) return cpu_runs_avx2() ? &kernel_table_avx2() : nullptr;
  if (!std::strcmp(isa, "avx512") || !std::strcmp(isa, "avx512_vnni"))
    return cpu_runs_avx512() ? &kernel_table_avx512() : nullptr;
  return nullptr;
}

const KernelTable& kernel_table() {
  static const KernelTable& t = choose();
  return t;
}

}  // namespace spinel::kernels::f32
