// The server scenario's load: a Poisson process of queries, as absolute
// arrival times from the trial's start.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace spinel::bench {

// Arrival times in seconds, ascending, of a Poisson process of `rate`
// queries per second on [0, horizon): exponential gaps -ln(1 - u) / rate with
// u from Rng(seed). The gaps of one seed are the same unit-rate sequence
// scaled by 1 / rate, so trials at different rates see the same pattern
// (common random numbers: a rate search is less noisy). Throws
// std::invalid_argument for rate <= 0 or a horizon that would need more than
// `max_queries` arrivals.
std::vector<double> poisson_arrivals(double rate, double horizon, uint64_t seed,
                                     size_t max_queries = size_t{1} << 26);

}  // namespace spinel::bench
