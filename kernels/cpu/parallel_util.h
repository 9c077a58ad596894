// Sizing of work items for the row-wise FP32 kernels, and which thread pool
// runs them.
#pragma once

#include <omp.h>

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

// Two thread pools serve a session: oneDNN's OpenMP threads (Debian builds
// oneDNN with OpenMP) for the dense Linear layers, and the session's TBB arena
// for everything of ours. After a oneDNN call its OpenMP threads spin for a
// while (GOMP_SPINCOUNT) waiting for the next region; a TBB op started then
// shares the 2 cores with them (measured: MiniLM INT8's attention took 2.5x
// its own time, right after each oneDNN matmul). So the row kernels run on the
// pool that ran last on the calling thread: OpenMP after a oneDNN Linear, TBB
// after one of our sparse kernels (a model with no dense layer never wakes the
// OpenMP pool). Results do not depend on the pool: work is split by rows.
// With OMP_WAIT_POLICY=PASSIVE (OpenMP threads sleep after every region) the
// row kernels always run on TBB: MiniLM INT8 5.1 ms a run instead of 9.2
// (2.5 at the default policy; bench/RESULTS.md).
enum class Pool : int { Tbb = 0, OpenMP = 1 };
Pool hot_pool();          // of the calling thread; Tbb until something says otherwise
void note_pool(Pool p);   // called by the kernels after a parallel region

// Runs fn(begin, end) over [0, n) as one even static chunk per OpenMP thread
// (at most omp_get_max_threads() and, if > 0, max_threads; chunks of at least
// `grain`); the caller handles the TBB case itself. fn must not throw.
template <class F>
void omp_rows(int64_t n, int64_t grain, const F& fn, int64_t max_threads = 0) {
  if (n <= 0) return;
  const int64_t g = grain > 0 ? grain : 1;
  int64_t threads = (n + g - 1) / g;
  if (threads > omp_get_max_threads()) threads = omp_get_max_threads();
  if (max_threads > 0 && threads > max_threads) threads = max_threads;
  if (threads <= 1) {
    fn(int64_t{0}, n);
    return;
  }
#pragma omp parallel num_threads(static_cast<int>(threads))
  {
    const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
    const int64_t per = (n + nt - 1) / nt;
    const int64_t b = id * per < n ? id * per : n;
    const int64_t e = b + per < n ? b + per : n;
    if (e > b) fn(b, e);
  }
}

}  // namespace spinel::kernels
