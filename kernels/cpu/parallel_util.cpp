#include "kernels/cpu/parallel_util.h"

namespace spinel::kernels {
namespace {
thread_local Pool g_hot = Pool::Tbb;
}  // namespace

Pool hot_pool() { return g_hot; }
void note_pool(Pool p) { g_hot = p; }

}  // namespace spinel::kernels
