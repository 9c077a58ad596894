// The one oneDNN CPU engine of the process, a stream per thread, and the
// argument memories of a primitive's calls kept per thread.
#pragma once

#include <tbb/enumerable_thread_specific.h>

#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

namespace spinel::kernels {

// Never destroyed: thread-local streams of pool threads that exit after
// static destructors have run still refer to it.
dnnl::engine& dnnl_engine();
// One stream per thread: streams are cheap but not free to create, and a CPU
// stream executes synchronously on the calling thread anyway.
dnnl::stream& dnnl_stream();

// Copies the tensor `from` describes at `src` into the layout `to` at `dst`
// (to.get_size() bytes), on the calling thread's stream: a weight matrix
// into the layout a primitive asked for with format_tag::any.
void dnnl_reorder(const dnnl::memory::desc& from, const void* src, const dnnl::memory::desc& to, void* dst);

// Whether oneDNN's name for a primitive's kernel (impl_info_str()) is one of
// its reference loops ("ref:any", ...): what it falls back to where no
// optimized kernel takes the descriptor, orders of magnitude slower. The
// dense Linears treat a run-time-M primitive on them as refused.
inline bool dnnl_reference_impl(const std::string& impl) { return impl.rfind("ref", 0) == 0; }

// The arguments of one primitive's calls on one thread. Making a dnnl::memory
// allocates (its object and its storage), and a dense layer split into parts
// makes several calls per op: a short input's run spent ~6% of its time in
// malloc and free. Here a call's memories are made once and kept; later
// calls with the same descriptor (the same M, stride and layout) only set
// their data pointers. Not thread-safe: one per thread (DnnlArgsPerThread).
class DnnlArgs {
 public:
  // Binds argument `arg` (DNNL_ARG_*) of the next execute() to `data`.
  void set(int arg, const dnnl::memory::desc& md, const void* data);
  // Runs p on this thread's stream with the arguments set since the last
  // execute(), and waits for it.
  void execute(const dnnl::primitive& p);

 private:
  struct Slot {
    int arg;
    dnnl::memory::desc md;
    dnnl::memory mem;
  };
  std::vector<Slot> slots_;             // every argument seen, with its memory
  std::vector<dnnl_exec_arg_t> args_;   // this call's
};

// One DnnlArgs per thread, owned by the object whose primitives it feeds (a
// weight part), so that the memories, which point at its weights, go with it.
using DnnlArgsPerThread = tbb::enumerable_thread_specific<DnnlArgs>;

}  // namespace spinel::kernels
