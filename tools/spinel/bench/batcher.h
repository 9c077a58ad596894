// Dynamic batching for the server scenario. Queries arrive at fixed times
// (the schedule); a free instance takes up to max_batch of those already
// arrived and not yet taken, oldest first. When fewer than max_batch are
// queued it waits for more, but never past the moment the oldest queued
// query has waited max_wait (Triton's max_queue_delay): a query that already
// waited that long in the queue, behind busy instances, goes at once.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace spinel::bench {

struct BatchDecision {
  size_t take = 0;     // > 0: dispatch the next `take` queued queries now
  double wake_at = 0;  // take == 0 and !done: decide again at this time
  bool done = false;   // every query was taken
};

// The batching policy alone, for a free instance at time `now` (seconds
// from the start, like `arrivals`, which is ascending); `next` is the first
// query not yet taken. Pure, so the tests can check it step by step:
//  - max_batch queued: take max_batch;
//  - none queued: wake at the next arrival;
//  - some queued: take them if the oldest has waited max_wait or no more
//    will ever arrive, else wake at the next arrival or at that deadline.
BatchDecision decide_batch(const std::vector<double>& arrivals, size_t next, double now,
                           size_t max_batch, double max_wait);

// A contiguous run of the schedule: queries [first, first + count).
struct Batch {
  size_t first = 0, count = 0;
  double dispatched = 0;  // seconds from the start
};

// decide_batch shared by the instances' threads. Time is the steady clock
// from `start`; arrivals are absolute offsets from it, so nothing that runs
// late (a busy core, a slow wake-up) shifts when queries arrive.
class ArrivalQueue {
 public:
  using Clock = std::chrono::steady_clock;
  ArrivalQueue(const std::vector<double>& arrivals, size_t max_batch, double max_wait,
               Clock::time_point start);
  // Blocks until a batch is due and returns it; count 0 once every query was
  // taken or stop() was called.
  Batch take();
  // take() returns empty batches from now on (the trial's drain limit).
  void stop();
  // Queries not taken yet.
  size_t untaken() const;
  double seconds_since_start() const;

 private:
  const std::vector<double>& arrivals_;
  const size_t max_batch_;
  const double max_wait_;
  const Clock::time_point start_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  size_t next_ = 0;
  bool stopped_ = false;
};

}  // namespace spinel::bench
