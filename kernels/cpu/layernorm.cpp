// layernorm_f32: rows split into even static blocks over the caller's arena.
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>

#include "kernels/cpu/f32_isa.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel_util.h"
#include "kernels/cpu/qgemm.h"

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

void layernorm_quantize_here(const float* x, const float* residual, const float* gamma,
                             const float* beta, float eps, int64_t rows, int64_t cols, float* y,
                             const float* mul, uint8_t* xq, float* scale, int32_t* zp) {
  if (rows <= 0 || cols <= 0) return;
  f32::kernel_table().layernorm_rows(x, residual, gamma, beta, eps, rows, cols, y);
  if (xq) qgemm_detail::quantize_rows_u8_here(y, rows, cols, cols, xq, scale, zp, mul);
}

void layernorm_quantize_f32(const float* x, const float* residual, const float* gamma,
                            const float* beta, float eps, int64_t rows, int64_t cols, float* y,
                            const float* mul, uint8_t* xq, float* scale, int32_t* zp) {
  if (rows <= 0 || cols <= 0) return;
  // Each block of rows is quantized right after it is normalized, while its
  // rows are still in this core's cache: no second pass over y, and no
  // second parallel region and join.
  auto block = [&](int64_t b, int64_t e) {
    const int64_t off = b * cols;
    layernorm_quantize_here(x + off, residual ? residual + off : nullptr, gamma, beta, eps, e - b, cols,
                            y + off, mul, xq + off, scale + b, zp + b);
  };
  const int64_t grain = rows_per_task(cols);
  if (rows <= grain) {
    block(0, rows);
    return;
  }
  if (hot_pool() == Pool::OpenMP) {
    omp_rows(rows, grain, block);
    return;
  }
  tbb::parallel_for(
      tbb::blocked_range<int64_t>(0, rows, grain),
      [&](const tbb::blocked_range<int64_t>& r) { block(r.begin(), r.end()); }, tbb::static_partitioner());
}

}  // namespace spinel::kernels
