#include "tools/spinel/bench/batcher.h"

#include <algorithm>

namespace spinel::bench {

BatchDecision decide_batch(const std::vector<double>& arrivals, size_t next, double now,
                           size_t max_batch, double max_wait) {
  BatchDecision d;
  if (next >= arrivals.size()) {
    d.done = true;
    return d;
  }
  max_batch = std::max<size_t>(max_batch, 1);
  size_t queued = 0;
  while (queued < max_batch && next + queued < arrivals.size() && arrivals[next + queued] <= now)
    ++queued;
  if (queued == max_batch) {
    d.take = queued;
    return d;
  }
  if (queued == 0) {
    d.wake_at = arrivals[next];
    return d;
  }
  const double deadline = arrivals[next] + max_wait;
  const bool last_ones = next + queued == arrivals.size();
  if (now >= deadline || last_ones) {
    d.take = queued;
    return d;
  }
  d.wake_at = std::min(deadline, arrivals[next + queued]);
  return d;
}

ArrivalQueue::ArrivalQueue(const std::vector<double>& arrivals, size_t max_batch, double max_wait,
                           Clock::time_point start)
    : arrivals_(arrivals), max_batch_(std::max<size_t>(max_batch, 1)), max_wait_(max_wait), start_(start) {}

double ArrivalQueue::seconds_since_start() const {
  return std::chrono::duration<double>(Clock::now() - start_).count();
}

Batch ArrivalQueue::take() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (stopped_) return {};
    const double now = seconds_since_start();
    const BatchDecision d = decide_batch(arrivals_, next_, now, max_batch_, max_wait_);
    if (d.done) return {};
    if (d.take > 0) {
      Batch b{next_, d.take, now};
      next_ += d.take;
      // Other waiting instances decide again on the new head.
      cv_.notify_all();
      return b;
    }
    cv_.wait_until(lock, start_ + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(d.wake_at)));
  }
}

void ArrivalQueue::stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stopped_ = true;
  cv_.notify_all();
}

size_t ArrivalQueue::untaken() const {
  std::lock_guard<std::mutex> lock(mu_);
  return arrivals_.size() - next_;
}

}  // namespace spinel::bench
