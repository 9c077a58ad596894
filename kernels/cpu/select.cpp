#include "kernels/cpu/select.h"

#include <cstdio>

#include "kernels/cpu/isa.h"
#include "kernels/cpu/qgemm.h"

namespace spinel::kernels {

const char* linear_impl_name(LinearImpl impl) {
  switch (impl) {
    case LinearImpl::DnnlF32: return "dnnl-f32";
    case LinearImpl::DnnlU8S8: return "dnnl-u8s8";
    case LinearImpl::SparseU8S8: return "sparse-u8s8";
  }
  return "?";
}

namespace {
bool amx_in_use() { return cpu_has_amx_int8() && active_isa() == Isa::Avx512Vnni; }
}  // namespace

const SparseCrossover& crossover_here() { return amx_in_use() ? kCrossoverAmx : kCrossoverVnni; }

LinearChoice choose_linear(Precision precision, double block_sparsity, const int8_t* W, int64_t K,
                           int64_t N) {
  LinearChoice c;
  char buf[160];
  switch (precision) {
    case Precision::F32:
      c.impl = LinearImpl::DnnlF32;
      c.why = "f32 weights";
      return c;
    case Precision::S8Dense:
      c.impl = LinearImpl::DnnlU8S8;
      c.why = "stored dense";
      return c;
    case Precision::S8Sparse:
      break;
  }
  if (!amx_in_use()) {
    c.impl = LinearImpl::SparseU8S8;
    std::snprintf(buf, sizeof buf, "stored block-sparse; %s kernel at %s", "4x1",
                  isa_name(active_isa()));
    c.why = buf;
    return c;
  }
  const double s = block_sparsity >= 0 ? block_sparsity : block_sparsity_4x1(W, K, N);
  const SparseCrossover& x = kCrossoverAmx;
  c.impl = s >= x.min_sparsity ? LinearImpl::SparseU8S8 : LinearImpl::DnnlU8S8;
  std::snprintf(buf, sizeof buf, "block sparsity %.2f %s %.2f, the crossover against %s", s,
                s >= x.min_sparsity ? ">=" : "<", x.min_sparsity, x.dense_kernel);
  c.why = buf;
  return c;
}

}  // namespace spinel::kernels
