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

}  // namespace spinel::kernels
