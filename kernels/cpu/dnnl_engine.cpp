#include "kernels/cpu/dnnl_engine.h"

namespace spinel::kernels {

dnnl::engine& dnnl_engine() {
  static auto* e = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *e;
}

dnnl::stream& dnnl_stream() {
  thread_local dnnl::stream s(dnnl_engine());
  return s;
}

}  // namespace spinel::kernels
