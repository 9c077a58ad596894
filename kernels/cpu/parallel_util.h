// Sizing of TBB work items for the row-wise FP32 kernels.
#pragma once

#include <cstdint>

namespace spinel::kernels {

// Elements a task should own at least: below this, scheduling a task costs
// more than the work (a few microseconds of row arithmetic).
constexpr int64_t kMinElementsPerTask = 16 * 1024;

// Rows per task for rows of `cols` elements (at least one).
inline int64_t rows_per_task(int64_t cols) {
  const int64_t r = kMinElementsPerTask / (cols > 0 ? cols : 1);
  return r > 0 ? r : 1;
}

}  // namespace spinel::kernels
