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

void DnnlArgs::set(int arg, const dnnl::memory::desc& md, const void* data) {
  void* p = const_cast<void*>(data);
  Slot* slot = nullptr;
  for (Slot& s : slots_)
    if (s.arg == arg) slot = &s;
  if (!slot) {
    slots_.push_back(Slot{arg, md, dnnl::memory(md, dnnl_engine(), p)});
    slot = &slots_.back();
  } else if (slot->md != md) {
    slot->md = md;
    slot->mem = dnnl::memory(md, dnnl_engine(), p);
  } else {
    slot->mem.set_data_handle(p);
  }
  // slots_ may have grown above; only the memory handle is kept in args_.
  args_.push_back(dnnl_exec_arg_t{arg, slot->mem.get()});
}

void DnnlArgs::execute(const dnnl::primitive& p) {
  const dnnl_status_t st = dnnl_primitive_execute(p.get(), dnnl_stream().get(), static_cast<int>(args_.size()),
                                                  args_.data());
  args_.clear();
  dnnl::error::wrap_c_api(st, "could not execute a primitive");
  dnnl_stream().wait();
}

}  // namespace spinel::kernels
