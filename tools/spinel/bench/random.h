// The harness's random numbers: std::mt19937_64 (whose output the C++
// standard fixes) mapped to doubles and ranges by our own arithmetic, not by
// the <random> distributions (whose algorithms differ between standard
// libraries), so a seed gives the same arrivals and queries everywhere.
#pragma once

#include <cstdint>
#include <random>

namespace spinel::bench {

class Rng {
 public:
  explicit Rng(uint64_t seed) : g_(seed) {}
  uint64_t next() { return g_(); }
  // Uniform in [0, 1), 53 random bits.
  double uniform() { return static_cast<double>(g_() >> 11) * 0x1.0p-53; }
  // Uniform integer in [0, n), n >= 1 (multiply-shift; the bias is below
  // n / 2^64).
  uint64_t below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(g_()) * n) >> 64);
  }

 private:
  std::mt19937_64 g_;
};

// A seed for a named sub-stream (arrivals, lengths, token ids) of one seed,
// so that changing one of them leaves the others as they were.
uint64_t sub_seed(uint64_t seed, uint64_t stream);

}  // namespace spinel::bench
