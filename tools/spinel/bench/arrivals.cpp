#include "tools/spinel/bench/arrivals.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "tools/spinel/bench/random.h"

namespace spinel::bench {

uint64_t sub_seed(uint64_t seed, uint64_t stream) {
  // SplitMix64 of the pair: well-spread seeds for neighbouring inputs.
  uint64_t z = seed * 0x9E3779B97F4A7C15ULL + stream + 0x632BE59BD9B4E019ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::vector<double> poisson_arrivals(double rate, double horizon, uint64_t seed, size_t max_queries) {
  if (!(rate > 0) || !std::isfinite(rate))
    throw std::invalid_argument("arrival rate must be positive, not " + std::to_string(rate));
  if (!(horizon >= 0) || !std::isfinite(horizon))
    throw std::invalid_argument("arrival horizon must be >= 0 seconds");
  // Expected count plus 10 standard deviations must fit.
  const double expected = rate * horizon;
  if (expected + 10 * std::sqrt(expected) > static_cast<double>(max_queries))
    throw std::invalid_argument("a Poisson process of " + std::to_string(rate) + "/s over " +
                                std::to_string(horizon) + " s needs more than " +
                                std::to_string(max_queries) + " queries");
  Rng rng(seed);
  std::vector<double> t;
  t.reserve(static_cast<size_t>(expected + 10 * std::sqrt(expected) + 16));
  double now = 0;
  for (;;) {
    now += -std::log1p(-rng.uniform()) / rate;
    if (now >= horizon || t.size() >= max_queries) break;
    t.push_back(now);
  }
  return t;
}

}  // namespace spinel::bench
