// The one oneDNN CPU engine of the process, and a stream per thread.
#pragma once

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

}  // namespace spinel::kernels
