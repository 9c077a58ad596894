// layernorm_f32: rows split into even static blocks over the caller's arena.
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>

#include "kernels/cpu/f32_isa.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel_util.h"

namespace spinel::kernels {

void layernorm_f32(const float* x, const float* residual, const float* gamma, const float* beta,
                   float eps, int64_t rows, int64_t cols, float* y) {
  if (rows <= 0 || cols <= 0) return;
  const auto& k = f32::kernel_table();
  const int64_t grain = rows_per_task(cols);
  if (rows <= grain) {
    k.layernorm_rows(x, residual, gamma, beta, eps, rows, cols, y);
    return;
  }
  if (hot_pool() == Pool::OpenMP) {
    omp_rows(rows, grain, [&](int64_t b, int64_t e) {
      k.layernorm_rows(x + b * cols, residual ? residual + b * cols : nullptr, gamma, beta, eps,
                       e - b, cols, y + b * cols);
    });
    return;
  }
  tbb::parallel_for(
      tbb::blocked_range<int64_t>(0, rows, grain),
      [&](const tbb::blocked_range<int64_t>& r) {
        const int64_t off = r.begin() * cols;
        k.layernorm_rows(x + off, residual ? residual + off : nullptr, gamma, beta, eps,
                         r.end() - r.begin(), cols, y + off);
      },
      tbb::static_partitioner());
}

}  // namespace spinel::kernels
