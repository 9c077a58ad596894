#include "runtime/platform.h"

#include <cstdlib>
#include <fstream>

extern "C" int spinel_spin_policy_applied(void);

#include "kernels/cpu/f32_isa.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/qgemm.h"
#include "kernels/cpu/select.h"
#include "runtime/error.h"

namespace spinel {

CpuReport cpu_report() {
  namespace k = kernels;
  CpuReport r;
  r.detected_isa = k::isa_name(k::detected_isa());
  r.active_isa = k::isa_name(k::active_isa());
  r.amx_int8 = k::cpu_has_amx_int8();
  r.dense_int8_on_sparse = k::dense_s8_on_sparse_kernel();
  const k::AttentionProducts ap = k::choose_attention(/*int8_model=*/true).products;
  if (ap != k::AttentionProducts::F32) r.int8_attention = k::attention_products_name(ap);
  r.int8_qk_vnni = k::choose_attention(/*int8_model=*/true, k::kS8QkMinHeadDim).products ==
                   k::AttentionProducts::Avx512S8Qk;
  r.sparse_int8_kernel = k::spmm_u8s8_kernel_name();
  r.f32_row_kernels = k::f32::kernel_table().name;
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      const size_t c = line.find(':');
      if (c != std::string::npos) r.model_name = line.substr(c + 2);
      break;
    }
  if (r.model_name.empty()) r.model_name = "unknown CPU";
  if (spinel_spin_policy_applied()) {
    r.omp_spin_policy = "GOMP_SPINCOUNT=10000 (spinel's default)";
  } else {
    const char* sc = std::getenv("GOMP_SPINCOUNT");
    const char* wp = std::getenv("OMP_WAIT_POLICY");
    if (sc) r.omp_spin_policy += std::string("GOMP_SPINCOUNT=") + sc;
    if (wp) r.omp_spin_policy += std::string(sc ? ", " : "") + "OMP_WAIT_POLICY=" + wp;
    r.omp_spin_policy += " (set by the user)";
  }
  return r;
}

std::vector<std::string> isa_levels() { return {"avx512vnni", "avxvnni", "avx2", "scalar"}; }

void set_isa_cap(const std::string& level) {
  kernels::Isa cap;
  if (!kernels::parse_isa(level.c_str(), &cap))
    fail("unknown instruction set '", level, "' (use avx512vnni, avxvnni, avx2 or scalar)");
  kernels::set_max_isa(cap);
}

}  // namespace spinel
