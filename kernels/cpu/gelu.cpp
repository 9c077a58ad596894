// In-place GELU over a flat array (for activations not fused into a Linear).
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>

#include "kernels/cpu/f32_isa.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel_util.h"

namespace spinel::kernels {
namespace {

void apply_parallel(void (*fn)(float*, int64_t), float* x, int64_t n) {
  if (n <= 0) return;
  if (n <= kMinElementsPerTask) {
    fn(x, n);
    return;
  }
  tbb::parallel_for(
      tbb::blocked_range<int64_t>(0, n, kMinElementsPerTask),
      [&](const tbb::blocked_range<int64_t>& r) { fn(x + r.begin(), r.end() - r.begin()); },
      tbb::static_partitioner());
}

}  // namespace

void gelu_erf_f32(float* x, int64_t n) { apply_parallel(f32::kernel_table().gelu_erf, x, n); }
void gelu_tanh_f32(float* x, int64_t n) { apply_parallel(f32::kernel_table().gelu_tanh, x, n); }

}  // namespace spinel::kernels
