// Sizing of work items for the row-wise FP32 kernels, and which thread pool
// runs them.
#pragma once

#include <omp.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cstdint>
#include <vector>

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

// Which threads run a dense layer's oneDNN matmuls: true: the session's TBB
// arena, the call split into tasks (row ranges or column parts of W), each a
// single-threaded oneDNN call followed by its part of the epilogue; false:
// oneDNN's own OpenMP threads. SPINEL_DENSE_POOL=tbb|omp, or auto (unset):
// by_default, which is TBB for INT8 layers and OpenMP for FP32 ones. For FP32
// MiniLM, TBB measured 1.047x single-stream / 1.003x offline at 32 tokens
// but 0.978x / 0.959x at 128 (A/B, 8 rounds), and FP32's OpenMP outliers
// after idle gaps were rarer and shorter (max 21 ms against 5.7 on TBB, at 32
// tokens); so FP32 keeps OpenMP unless asked. Other values warn once and
// mean auto. Read by each dense layer when it is made.
//
// Why TBB: a oneDNN call on OpenMP splits its work statically, so the calling
// thread waits for the other thread's share. After the threads have slept (a
// query that comes after an idle gap) that thread can be late by a whole time
// slice of the host: on the shared 2-core VMs we measure on, 10-15% of
// queries after a 5 ms gap took 12-30 ms instead of ~1 (MiniLM INT8, 32
// tokens, at our GOMP_SPINCOUNT=10000: runtime/preinit/; bench/pool_wake.cpp
// shows it on a plain loop of OpenMP regions). A TBB task that
// no other thread has taken is run by the caller: the slowest such query took
// 2.5 ms. With no OpenMP region in a dense INT8 model, the row kernels stay
// on TBB too (note_pool).
bool dense_pool_tbb(bool by_default);

// How a dense layer's TBB tasks split a call: by rows (each task all of W on
// its rows, and what comes after a row in the same task) or by column part
// (each task one part of W for all rows; what comes after a row runs after).
// By column part each thread reads only its part of W and all of x: the
// cheaper one while M < N, but only where W is larger than a core's L2
// share (1 MiB) does that show. Measured A/B on a 2-core Zen 5 at 128 tokens:
// BERT-base INT8 (768 x 2304 and x 3072, over 1 MiB) by rows 0.88x oneDNN on
// OpenMP, by column parts 1.0x; MiniLM INT8 (all under 1 MiB) by rows 1.02x,
// by columns slower (0.92x of rows at 32 tokens).
// Once every part's thread would get kDenseRowsPerThread rows or more, u8
// layers split by rows again: oneDNN then runs at full speed on each
// thread's rows, and the rows are whole on one thread, so what follows them
// (GELU, the next Linear's quantization) runs while they are in its cache
// instead of in a pass after the region. Dense BERT-base INT8 at 8 x 128
// tokens, columns -> rows: 768 x 3072 43.1 -> 40.4 ms, 768 x 2304 28.0 ->
// 26.9, whole model 0.955x the time; at 2 x 128 tokens (128 rows per
// thread) 768 x 3072 0.90x, 768 x 2304 even; at 128 tokens (64 rows per
// thread) 768 x 2304 took 1.12x by rows. f32 layers (elt_bytes 4) keep the
// old rule: MiniLM FP32 at 8 x 128 tokens was even either way.
// dense_column_parts: the parts of a layer of N columns, one per thread the
// machine has and none narrower than 128 columns.
// dense_split_forced: SPINEL_DENSE_SPLIT=rows|cols (1, 2; 0 unset or auto;
// other values warn once), read by each dense layer when it is made (A/B
// runs, tests).
constexpr int64_t kDenseRowsPerThread = 128;
int64_t dense_column_parts(int64_t N);
int dense_split_forced();
bool dense_split_by_columns(int64_t M, int64_t K, int64_t N, size_t elt_bytes, size_t parts, int forced);

// A dense layer's call on the TBB path: unit(m0, m1, p) for every row range
// and column part p of W (parts: how many), each task under OneOmpThread.
// Split by column parts (dense_split_by_columns; each task some parts, all
// rows) it returns true; split by rows, each task runs every part of its
// rows, then rows_final(m0, m1) on the same thread, and it returns false.
// Exceptions of unit reach the caller.
template <class Unit, class RowsFinal>
bool for_dense_tasks(int64_t M, int64_t K, int64_t N, size_t elt_bytes, size_t parts, int forced,
                     const Unit& unit, const RowsFinal& rows_final);

// While alive, oneDNN calls made on this thread run on it alone, and
// primitives created here are made for one thread (oneDNN reads the OpenMP
// thread count, which is per thread).
struct OneOmpThread {
  int prev = omp_get_max_threads();
  OneOmpThread() { omp_set_num_threads(1); }
  ~OneOmpThread() { omp_set_num_threads(prev); }
  OneOmpThread(const OneOmpThread&) = delete;
  OneOmpThread& operator=(const OneOmpThread&) = delete;
};

// fn(i0, i1) over even ranges of [0, n): one per thread of the calling TBB
// arena, at least min_per items each, as tasks any thread of the arena may
// take (the caller runs those no other thread has taken). fn may throw; the
// first exception reaches the caller.
template <class F>
void for_even_tasks(int64_t n, int64_t min_per, const F& fn) {
  if (n <= 0) return;
  const int64_t per = min_per > 0 ? min_per : 1;
  const int64_t tasks =
      std::max<int64_t>(1, std::min<int64_t>(tbb::this_task_arena::max_concurrency(), (n + per - 1) / per));
  if (tasks == 1) {
    fn(int64_t{0}, n);
    return;
  }
  tbb::parallel_for(
      tbb::blocked_range<int64_t>(0, tasks, 1),
      [&](const tbb::blocked_range<int64_t>& r) {
        for (int64_t t = r.begin(); t < r.end(); ++t) fn(n * t / tasks, n * (t + 1) / tasks);
      },
      tbb::simple_partitioner());
}

// Items [0, items) in `pieces` contiguous pieces balanced by cost(i) rather
// than by count (a short last token block left a thread idle): first[p] is
// piece p's first item, the item boundary nearest to its share of the total;
// first[pieces] = items.
template <class Cost>
std::vector<int64_t> balanced_pieces(int64_t items, int64_t pieces, const Cost& cost) {
  int64_t total = 0;
  for (int64_t i = 0; i < items; ++i) total += cost(i);
  std::vector<int64_t> first(static_cast<size_t>(pieces + 1), items);
  first[0] = 0;
  int64_t acc = 0, i = 0;
  for (int64_t p = 1; p < pieces; ++p) {
    const int64_t target = total * p / pieces;
    while (i < items && acc + cost(i) <= target) acc += cost(i++);
    if (i < items && target - acc > acc + cost(i) - target) acc += cost(i++);
    first[static_cast<size_t>(p)] = std::max(i, first[static_cast<size_t>(p - 1)]);
  }
  return first;
}

template <class Unit, class RowsFinal>
bool for_dense_tasks(int64_t M, int64_t K, int64_t N, size_t elt_bytes, size_t parts, int forced,
                     const Unit& unit, const RowsFinal& rows_final) {
  if (dense_split_by_columns(M, K, N, elt_bytes, parts, forced)) {
    for_even_tasks(static_cast<int64_t>(parts), 1, [&](int64_t p0, int64_t p1) {
      OneOmpThread one;
      for (int64_t p = p0; p < p1; ++p) unit(int64_t{0}, M, static_cast<size_t>(p));
    });
    return true;
  }
  for_even_tasks(M, 8, [&](int64_t m0, int64_t m1) {
    OneOmpThread one;
    for (size_t p = 0; p < parts; ++p) unit(m0, m1, p);
    rows_final(m0, m1);
  });
  return false;
}

Pool hot_pool();          // of the calling thread; Tbb until something says otherwise
void note_pool(Pool p);   // called by the kernels after a parallel region
// How many times note_pool(Pool::OpenMP) was called on this thread: whether a
// job used oneDNN's OpenMP threads (cpu backend's executor: such sessions
// keep all their jobs on one thread, whose OpenMP pool is then the only one).
uint64_t openmp_notes();

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
