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

void dnnl_reorder(const dnnl::memory::desc& from, const void* src, const dnnl::memory::desc& to, void* dst) {
  dnnl::memory a(from, dnnl_engine(), const_cast<void*>(src));
  dnnl::memory b(to, dnnl_engine(), dst);
  dnnl::reorder(a, b).execute(dnnl_stream(), a, b);
  dnnl_stream().wait();
}

}  // namespace spinel::kernels
