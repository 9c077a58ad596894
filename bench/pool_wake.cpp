// How long a burst of short parallel regions takes right after the threads
// have been idle, on oneDNN's pool (OpenMP) and on ours (a TBB arena): the
// measurement behind running dense layers on TBB (parallel_util.h,
// dense_pool_tbb). A "query" is `regions` back-to-back parallel regions of
// two chunks of ~`work` loop iterations each, after `gap` microseconds of
// sleep; 500 queries per (pool, gap).
//
// usage: [GOMP_SPINCOUNT=10000] pool_wake [regions=40] [work=15000]
// (spinel's processes run with GOMP_SPINCOUNT=10000, runtime/preinit/; this
// program does not set it, so libgomp's default spin applies unless given)
// Prints per pool and gap: p50, p90, slowest (ms), queries over 3 ms, and for
// TBB the median number of regions in which the other thread took a chunk.
#include <omp.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
std::atomic<double> g_sink{0};

void chunk(int work) {
  double s = 0;
  for (int k = 0; k < work; ++k) s += k * 1e-9;
  g_sink.store(s, std::memory_order_relaxed);
}

struct Stats {
  double p50, p90, max;
  int over3;
};

Stats stats(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  int over = 0;
  for (double v : t) over += v > 3.0;
  return {t[t.size() / 2], t[t.size() * 9 / 10], t.back(), over};
}

}  // namespace

int main(int argc, char** argv) {
  const int regions = argc > 1 ? std::atoi(argv[1]) : 40;
  const int work = argc > 2 ? std::atoi(argv[2]) : 15000;
  const int queries = 500;
  if (regions <= 0 || work <= 0) {
    std::fprintf(stderr, "usage: pool_wake [regions > 0] [work > 0]\n");
    return 2;
  }
  omp_set_num_threads(2);
  tbb::task_arena arena(2);
  const char* spin = std::getenv("GOMP_SPINCOUNT");
  std::printf("%d regions of 2 chunks of %d iterations per query, %d queries per row, GOMP_SPINCOUNT=%s\n",
              regions, work, queries, spin ? spin : "(libgomp's default)");
  std::printf("| pool | gap us | p50 ms | p90 ms | slowest ms | queries > 3 ms | regions helped (TBB, median) |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|\n");
  for (int gap : {0, 1000, 2000, 5000}) {
    std::vector<double> t;
    for (int q = 0; q < queries; ++q) {
      std::this_thread::sleep_for(std::chrono::microseconds(gap));
      const auto t0 = Clock::now();
      for (int r = 0; r < regions; ++r) {
#pragma omp parallel num_threads(2)
        chunk(work);
      }
      t.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    const Stats s = stats(t);
    std::printf("| OpenMP | %d | %.3f | %.3f | %.2f | %d | - |\n", gap, s.p50, s.p90, s.max, s.over3);
    t.clear();
    std::vector<int> helped;
    for (int q = 0; q < queries; ++q) {
      std::this_thread::sleep_for(std::chrono::microseconds(gap));
      int h = 0;
      const auto t0 = Clock::now();
      arena.execute([&] {
        const auto me = std::this_thread::get_id();
        for (int r = 0; r < regions; ++r) {
          std::atomic<bool> other{false};
          tbb::parallel_for(
              0, 2,
              [&](int) {
                if (std::this_thread::get_id() != me) other = true;
                chunk(work);
              },
              tbb::simple_partitioner());
          h += other ? 1 : 0;
        }
      });
      t.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
      helped.push_back(h);
    }
    const Stats u = stats(t);
    std::sort(helped.begin(), helped.end());
    std::printf("| TBB | %d | %.3f | %.3f | %.2f | %d | %d of %d |\n", gap, u.p50, u.p90, u.max, u.over3,
                helped[helped.size() / 2], regions);
  }
  return 0;
}
