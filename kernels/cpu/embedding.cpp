// embedding_f32: token blocks over the caller's arena; each token's row is
// summed and normalised while it is still in L1.
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>

#include "kernels/cpu/f32_isa.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel_util.h"

namespace spinel::kernels {

void embedding_f32(const int32_t* ids, const int32_t* type_ids, const int32_t* positions,
                   int64_t tokens, int64_t hidden, const float* word, const float* pos,
                   const float* type, const float* gamma, const float* beta, float eps,
                   float* out) {
  if (tokens <= 0 || hidden <= 0) return;
  const auto& k = f32::kernel_table();
  const int64_t grain = rows_per_task(hidden);
  auto run = [&](int64_t t0, int64_t t1) {
    k.embedding_rows(ids + t0, type_ids ? type_ids + t0 : nullptr,
                     positions ? positions + t0 : nullptr, t0, t1 - t0, hidden, word, pos, type, gamma,
                     beta, eps, out + t0 * hidden);
  };
  if (tokens <= grain) {
    run(0, tokens);
    return;
  }
  if (hot_pool() == Pool::OpenMP) {
    omp_rows(tokens, grain, run);
    return;
  }
  tbb::parallel_for(
      tbb::blocked_range<int64_t>(0, tokens, grain),
      [&](const tbb::blocked_range<int64_t>& r) { run(r.begin(), r.end()); },
      tbb::static_partitioner());
}

}  // namespace spinel::kernels
