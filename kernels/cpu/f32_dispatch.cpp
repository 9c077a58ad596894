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
  const auto f32_words = static_cast<size_t>(head_dim * ldk + lp * dp + kAttentionRows * lp);
  const auto amx_words = static_cast<size_t>(amx_attention_layout(len, head_dim).words);
  return f32_words > amx_words ? f32_words : amx_words;
}

AmxAttentionLayout amx_attention_layout(int64_t len, int64_t head_dim) {
  auto up = [](int64_t n, int64_t m) { return (n + m - 1) / m * m; };
  AmxAttentionLayout a{};
  a.lp = up(len < 1 ? 1 : len, 32);
  a.dp = up(head_dim, 32);
  a.dv = up(head_dim, 16);
  a.k2 = 0;
  a.v2 = a.k2 + a.dp / 2 * a.lp;
  a.qb = a.v2 + a.lp / 2 * a.dv;
  a.s = a.qb + (a.lp + 16) * a.dp / 2;  // Qb: every query row of the item, 16-row blocks
  a.o = a.s + 16 * a.lp;
  a.dq = up(head_dim, 64);
  a.kq = a.o + 4 * 256;  // four output tiles
  a.ks = a.kq + 16 * a.dq / 4;
  a.ksum = a.ks + a.lp;
  a.qs = a.ksum + a.lp;
  a.words = a.qs + a.lp + 16;  // every part a multiple of 16 words: 64-byte aligned in an aligned slot
  return a;
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
