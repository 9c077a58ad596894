#include "kernels/cpu/parallel_util.h"

#include <strings.h>
#include <tbb/info.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace spinel::kernels {
namespace {
thread_local Pool g_hot = Pool::Tbb;
thread_local uint64_t g_omp_notes = 0;

// OMP_WAIT_POLICY=PASSIVE puts OpenMP threads to sleep at the end of every
// region: waking them again is then the cost of every region, so the row
// kernels stay on TBB (whose workers spin a little before they sleep) and only
// oneDNN's own calls pay it.
bool omp_passive() {
  static const bool passive = [] {
    const char* v = std::getenv("OMP_WAIT_POLICY");
    return v != nullptr && strcasecmp(v, "passive") == 0;
  }();
  return passive;
}
}  // namespace

Pool hot_pool() { return omp_passive() ? Pool::Tbb : g_hot; }
void note_pool(Pool p) {
  g_hot = p;
  if (p == Pool::OpenMP) ++g_omp_notes;
}
uint64_t openmp_notes() { return g_omp_notes; }

bool dense_pool_tbb(bool by_default) {
  const char* v = std::getenv("SPINEL_DENSE_POOL");
  if (!v || !*v || !std::strcmp(v, "auto")) return by_default;
  if (!std::strcmp(v, "tbb")) return true;
  if (!std::strcmp(v, "omp")) return false;
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true))
    std::fprintf(stderr, "spinel: warning: SPINEL_DENSE_POOL=%s is not one of auto, tbb, omp; using auto\n", v);
  return by_default;
}

int64_t dense_column_parts(int64_t N) {
  const int64_t by_width = std::max<int64_t>(1, N / 128);
  return std::max<int64_t>(1, std::min<int64_t>(tbb::info::default_concurrency(), by_width));
}

int dense_split_forced() {
  const char* v = std::getenv("SPINEL_DENSE_SPLIT");
  if (!v || !*v || !std::strcmp(v, "auto")) return 0;
  if (!std::strcmp(v, "rows")) return 1;
  if (!std::strcmp(v, "cols")) return 2;
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true))
    std::fprintf(stderr, "spinel: warning: SPINEL_DENSE_SPLIT=%s is not one of auto, rows, cols; using auto\n", v);
  return 0;
}

bool dense_split_by_columns(int64_t M, int64_t K, int64_t N, size_t elt_bytes, size_t parts, int forced) {
  if (parts < 2) return false;
  if (forced) return forced == 2;
  if (elt_bytes == 1 && M >= kDenseRowsPerThread * static_cast<int64_t>(parts)) return false;
  return M < N && K * N * static_cast<int64_t>(elt_bytes) > (int64_t{1} << 20);
}

}  // namespace spinel::kernels
