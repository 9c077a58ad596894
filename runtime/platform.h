// What this machine runs: the CPU features detected once at start-up, the
// instruction-set cap (SPINEL_ISA, --isa) and the kernels that follow from
// them. The runtime's public face of kernels/cpu/isa.h, so that programs
// (the CLI, the C API) need no kernel header.
#pragma once

#include <string>
#include <vector>

namespace spinel {

struct CpuReport {
  std::string detected_isa;  // best level the CPU and OS run: scalar, avx2, avxvnni, avx512vnni
  std::string active_isa;    // after the cap
  bool amx_int8 = false;     // oneDNN's dense u8s8 uses AMX here
  // Dense INT8 layers run the block-sparse kernel here, every block kept
  // (kernels/cpu/select.h dense_s8_mode).
  bool dense_int8_on_sparse = false;
  // Where INT8 models' attention products run in BF16 here (kernels/cpu/select.h):
  // "amx_bf16" (AMX tiles), "avx512_bf16" (vdpbf16ps), or empty for FP32.
  std::string int8_attention;
  // INT8 models with heads of 64 or more run Q.K^T in INT8 on VNNI here
  // (int8_attention is then "avx512_bf16", for P.V and narrower heads).
  bool int8_qk_vnni = false;
  std::string sparse_int8_kernel;  // the 4x1 block-sparse micro-kernel at the active level
  std::string f32_row_kernels;     // generic, avx2 or avx512
  std::string model_name;          // from /proc/cpuinfo
  // The OpenMP spin policy: "GOMP_SPINCOUNT=10000 (spinel's default)", or the
  // user's GOMP_SPINCOUNT / OMP_WAIT_POLICY (runtime/preinit/spin_policy.c).
  std::string omp_spin_policy;
};
CpuReport cpu_report();

// Caps the instruction set for everything prepared afterwards (process-wide;
// the same levels as SPINEL_ISA). A level above the CPU's is allowed and has
// no effect. Throws spinel::Error naming the accepted levels for an unknown one.
void set_isa_cap(const std::string& level);
// The accepted level names.
std::vector<std::string> isa_levels();

}  // namespace spinel
