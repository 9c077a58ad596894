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
  if (hot_pool() == Pool::OpenMP) {
    omp_rows(n, kMinElementsPerTask, [&](int64_t b, int64_t e) { fn(x + b, e - b); });
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

void geglu_f32(const float* x, int64_t rows, int64_t n, const float* residual, float* y) {
  if (rows <= 0 || n <= 0) return;
  const auto fn = f32::kernel_table().geglu_rows;
  const int64_t per = rows_per_task(2 * n);
  if (rows <= per) {
    fn(x, rows, n, residual, y);
    return;
  }
  if (hot_pool() == Pool::OpenMP) {
    omp_rows(rows, per, [&](int64_t b, int64_t e) {
      fn(x + b * 2 * n, e - b, n, residual ? residual + b * n : nullptr, y + b * n);
    });
    return;
  }
  tbb::parallel_for(
      tbb::blocked_range<int64_t>(0, rows, per),
      [&](const tbb::blocked_range<int64_t>& r) {
        const int64_t b = r.begin();
        fn(x + b * 2 * n, r.end() - b, n, residual ? residual + b * n : nullptr, y + b * n);
      },
      tbb::static_partitioner());
}

}  // namespace spinel::kernels
