// Latency statistics of a benchmark trial: nearest-rank percentiles (the
// definition MLPerf LoadGen reports) and a summary of a set of latencies.
#pragma once

#include <cstdint>
#include <vector>

namespace spinel::bench {

// The nearest-rank p-th percentile of `values` (p in (0, 100]): the smallest
// value such that at least p% of the values are <= it, i.e. the
// ceil(p/100 * n)-th smallest. Of 1..10: p50 = 5, p90 = 9, p99 = 10.
// `values` need not be sorted (it is copied); 0 for an empty set.
double percentile(std::vector<double> values, double p);
// The same on values already sorted ascending (no copy).
double percentile_sorted(const std::vector<double>& sorted, double p);

struct LatencySummary {
  int64_t count = 0;
  double mean = 0, min = 0, max = 0;
  double p50 = 0, p90 = 0, p99 = 0;
  double at_percentile = 0;  // at the percentile the run is judged by (--percentile)
};

// Summary of `values` (any unit; the caller's), judged at percentile `p`.
LatencySummary summarize(std::vector<double> values, double p);

}  // namespace spinel::bench
