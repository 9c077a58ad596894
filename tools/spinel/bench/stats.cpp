#include "tools/spinel/bench/stats.h"

#include <algorithm>
#include <cmath>

namespace spinel::bench {

double percentile_sorted(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const double n = static_cast<double>(sorted.size());
  // ceil(p/100 * n) - 1; the small epsilon keeps 90% of 10 at rank 9 despite
  // 0.9 * 10 = 9.000000000000002 in binary.
  double rank = std::ceil(p / 100.0 * n - 1e-9);
  rank = std::min(std::max(rank, 1.0), n);
  return sorted[static_cast<size_t>(rank) - 1];
}

double percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  return percentile_sorted(values, p);
}

LatencySummary summarize(std::vector<double> values, double p) {
  LatencySummary s;
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  s.count = static_cast<int64_t>(values.size());
  double sum = 0;
  for (double v : values) sum += v;
  s.mean = sum / static_cast<double>(values.size());
  s.min = values.front();
  s.max = values.back();
  s.p50 = percentile_sorted(values, 50);
  s.p90 = percentile_sorted(values, 90);
  s.p99 = percentile_sorted(values, 99);
  s.at_percentile = percentile_sorted(values, p);
  return s;
}

}  // namespace spinel::bench
