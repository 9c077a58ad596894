#include "kernels/cpu/parallel_util.h"

#include <strings.h>

#include <cstdlib>

namespace spinel::kernels {
namespace {
thread_local Pool g_hot = Pool::Tbb;

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
void note_pool(Pool p) { g_hot = p; }

}  // namespace spinel::kernels
