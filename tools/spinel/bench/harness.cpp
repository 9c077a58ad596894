#include "tools/spinel/bench/harness.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <mutex>
#include <thread>

#include "tools/spinel/bench/arrivals.h"
#include "tools/spinel/bench/batcher.h"
#include "tools/spinel/bench/random.h"

namespace spinel::bench {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string fmt(const char* f, double a, double b = 0, double c = 0) {
  char buf[160];
  std::snprintf(buf, sizeof buf, f, a, b, c);
  return buf;
}

void add_reason(std::string& r, const std::string& why) { r += (r.empty() ? "" : "; ") + why; }

// Threads that run until they return, with a progress callback on the caller's
// thread meanwhile; stops early (calls `stop`) at `stop_at` seconds from `t0`.
class Crew {
 public:
  void start(int n, const std::function<void(int)>& body) {
    running_ = n;
    for (int i = 0; i < n; ++i)
      threads_.emplace_back([this, i, body] {
        try {
          body(i);
        } catch (...) {
          std::lock_guard<std::mutex> lock(mu_);
          if (!error_) error_ = std::current_exception();
        }
        std::lock_guard<std::mutex> lock(mu_);
        --running_;
        cv_.notify_all();
      });
  }
  // Waits for every thread, reporting progress; calls `stop` once at
  // `stop_at` (or when a thread failed) and keeps waiting for them to end.
  void wait(Clock::time_point t0, double stop_at, const std::function<void()>& stop,
            const TrialOptions& o, const std::function<TrialProgress()>& where) {
    bool stopped = false;
    double last_report = -1e9;
    std::unique_lock<std::mutex> lock(mu_);
    while (running_ > 0) {
      const double now = since(t0);
      if (!stopped && (now >= stop_at || error_)) {
        stopped = true;
        lock.unlock();
        stop();
        lock.lock();
        continue;
      }
      if (o.on_progress && now - last_report >= o.progress_interval) {
        last_report = now;
        lock.unlock();
        o.on_progress(where());
        lock.lock();
        continue;
      }
      // Woken by a thread that ends; else at the next report or the stop
      // time, and at least once a second (stop_at may be "never").
      double wake = now + 1.0;
      if (o.on_progress) wake = std::min(wake, last_report + o.progress_interval);
      if (!stopped) wake = std::min(wake, stop_at);
      cv_.wait_until(lock, t0 + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(std::max(wake, now + 1e-4))));
    }
    lock.unlock();
    for (auto& t : threads_) t.join();
    threads_.clear();
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  int running_ = 0;
  std::exception_ptr error_;
};

void maybe_pin(const TrialOptions& o, int instance) {
  if (!o.cpus.empty()) pin_this_thread(o.cpus[static_cast<size_t>(instance) % o.cpus.size()]);
}

}  // namespace

bool pin_this_thread(const std::vector<int>& cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cpus)
    if (c >= 0 && c < CPU_SETSIZE) CPU_SET(c, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
}

TrialResult run_server_trial(Service& service, const std::vector<double>& arrivals, double offered_rate,
                             const TrialOptions& o) {
  const int n_inst = std::max(1, service.instances());
  const size_t n = arrivals.size();
  std::vector<double> done_at(n, -1.0);
  std::vector<std::vector<Batch>> logs(static_cast<size_t>(n_inst));
  std::atomic<int64_t> completed{0};
  // A little lead so the instances' threads are waiting when the first query arrives.
  const Clock::time_point t0 = Clock::now() + std::chrono::milliseconds(20);
  ArrivalQueue queue(arrivals, o.max_batch, o.max_wait, t0);

  Crew crew;
  crew.start(n_inst, [&](int i) {
    maybe_pin(o, i);
    for (;;) {
      const Batch b = queue.take();
      if (b.count == 0) break;
      try {
        service.run(i, static_cast<int64_t>(b.first), static_cast<int64_t>(b.count));
      } catch (...) {
        queue.stop();
        throw;
      }
      const double t = queue.seconds_since_start();
      for (size_t k = b.first; k < b.first + b.count; ++k) done_at[k] = t;
      logs[static_cast<size_t>(i)].push_back(b);
      completed += static_cast<int64_t>(b.count);
    }
  });
  const double W = o.warmup, E = o.warmup + o.duration;
  const double drain = o.drain_limit >= 0 ? o.drain_limit : std::max(0.5, 4 * o.budget);
  const double stop_at = std::max(E, n ? arrivals.back() : 0.0) + drain;
  crew.wait(t0, stop_at, [&] { queue.stop(); }, o,
            [&] { return TrialProgress{since(t0), E, completed.load()}; });
  const double end = since(t0);

  TrialResult r;
  r.scenario = "server";
  r.offered_rate = offered_rate;
  r.wall_seconds = end;
  std::vector<double> lat;
  int64_t in_window = 0, done_in_window = 0, tokens_in_window = 0;
  for (size_t i = 0; i < n; ++i) {
    if (done_at[i] >= W && done_at[i] < E) {
      ++done_in_window;
      tokens_in_window += service.tokens(static_cast<int64_t>(i));
    }
    if (arrivals[i] < W || arrivals[i] >= E) continue;
    ++in_window;
    if (done_at[i] >= 0) {
      ++r.completed;
      lat.push_back(done_at[i] - arrivals[i]);
    } else {
      ++r.unfinished;
      lat.push_back(end - arrivals[i]);  // censored: at least this
    }
  }
  r.queries = in_window;
  r.arrival_rate = in_window / o.duration;
  r.achieved_rate = done_in_window / o.duration;
  r.tokens_per_s = tokens_in_window / o.duration;
  r.latency = summarize(std::move(lat), o.percentile);
  int64_t batched = 0;
  for (const auto& log : logs)
    for (const Batch& b : log) {
      if (b.dispatched < W || b.dispatched >= E) continue;
      ++r.batches;
      batched += static_cast<int64_t>(b.count);
      r.batch_max = std::max<int64_t>(r.batch_max, static_cast<int64_t>(b.count));
    }
  r.batch_mean = r.batches ? double(batched) / double(r.batches) : 0;

  if (in_window == 0) add_reason(r.fail_reason, "no query arrived in the measured window");
  if (r.unfinished > 0)
    add_reason(r.fail_reason, std::to_string(r.unfinished) + " queries unfinished " +
                                  fmt("%.2f s", drain) + " after the last arrival");
  const double slack = o.shortfall_tolerance * double(in_window) + double(n_inst) * double(o.max_batch);
  if (double(in_window - done_in_window) > slack)
    add_reason(r.fail_reason, "queue grows: " + std::to_string(in_window) + " arrived, " +
                                  std::to_string(done_in_window) + " completed in the window");
  if (in_window > 0 && r.latency.at_percentile > o.budget)
    add_reason(r.fail_reason, fmt("p%g %.2f ms > budget %.2f ms", o.percentile,
                                  r.latency.at_percentile * 1e3, o.budget * 1e3));
  r.meets_budget = r.fail_reason.empty();
  return r;
}

TrialResult run_server_trial(Service& service, double rate, uint64_t seed, const TrialOptions& o) {
  return run_server_trial(service, poisson_arrivals(rate, o.warmup + o.duration, sub_seed(seed, 0)), rate, o);
}

TrialResult run_single_stream(Service& service, const TrialOptions& o) {
  // Runs on the caller's thread: pin it for the trial only.
  cpu_set_t saved;
  const bool restore = !o.cpus.empty() && pthread_getaffinity_np(pthread_self(), sizeof saved, &saved) == 0;
  maybe_pin(o, 0);
  struct Restore {
    bool on;
    cpu_set_t* set;
    ~Restore() {
      if (on) pthread_setaffinity_np(pthread_self(), sizeof *set, set);
    }
  } restore_affinity{restore, &saved};
  const Clock::time_point t0 = Clock::now();
  const double W = o.warmup, E = o.warmup + o.duration;
  std::vector<double> lat;
  int64_t tokens = 0, k = 0;
  double first = -1, last = 0, last_report = -1e9;
  for (;; ++k) {
    const double a = since(t0);
    if (a >= E) break;
    if (o.on_progress && a - last_report >= o.progress_interval) {
      last_report = a;
      o.on_progress({a, E, static_cast<int64_t>(lat.size())});
    }
    service.run(0, k, 1);
    const double b = since(t0);
    if (a < W) continue;
    if (first < 0) first = a;
    last = b;
    lat.push_back(b - a);
    tokens += service.tokens(k);
  }
  TrialResult r;
  r.scenario = "single";
  r.wall_seconds = since(t0);
  r.queries = r.completed = static_cast<int64_t>(lat.size());
  const double span = last > first && first >= 0 ? last - first : o.duration;
  r.achieved_rate = r.queries / span;
  r.tokens_per_s = tokens / span;
  r.batches = r.queries;
  r.batch_max = r.queries ? 1 : 0;
  r.batch_mean = r.queries ? 1 : 0;
  r.latency = summarize(std::move(lat), o.percentile);
  if (r.queries == 0) add_reason(r.fail_reason, "no query ran in the measured window");
  else if (r.latency.at_percentile > o.budget)
    add_reason(r.fail_reason, fmt("p%g %.2f ms > budget %.2f ms", o.percentile,
                                  r.latency.at_percentile * 1e3, o.budget * 1e3));
  r.meets_budget = r.fail_reason.empty();
  return r;
}

TrialResult run_offline(Service& service, const TrialOptions& o) {
  const int n_inst = std::max(1, service.instances());
  const int64_t B = static_cast<int64_t>(std::max<size_t>(o.max_batch, 1));
  struct Span {
    double start, end;
    int64_t first;
  };
  std::vector<std::vector<Span>> logs(static_cast<size_t>(n_inst));
  std::atomic<int64_t> next{0}, done{0};
  std::atomic<bool> stop{false};
  const Clock::time_point t0 = Clock::now();
  const double W = o.warmup, E = o.warmup + o.duration;
  Crew crew;
  crew.start(n_inst, [&](int i) {
    maybe_pin(o, i);
    while (!stop) {
      const double a = since(t0);
      if (a >= E) break;
      const int64_t first = next.fetch_add(B);
      service.run(i, first, B);
      logs[static_cast<size_t>(i)].push_back({a, since(t0), first});
      done += B;
    }
  });
  crew.wait(t0, 1e300, [&] { stop = true; }, o, [&] { return TrialProgress{since(t0), E, done.load()}; });

  TrialResult r;
  r.scenario = "offline";
  r.wall_seconds = since(t0);
  // A batch's sequences count in proportion to the part of its run inside
  // the window, so batches of a second or more do not quantize the rate.
  double seqs = 0, tokens = 0;
  std::vector<double> lat;
  for (const auto& log : logs)
    for (const Span& s : log) {
      const double len = s.end - s.start;
      const double overlap = std::max(0.0, std::min(s.end, E) - std::max(s.start, W));
      const double frac = len > 0 ? overlap / len : (s.end >= W && s.end < E);
      if (frac <= 0) continue;
      int64_t tk = 0;
      for (int64_t q = s.first; q < s.first + B; ++q) tk += service.tokens(q);
      seqs += frac * double(B);
      tokens += frac * double(tk);
      if (s.start >= W && s.start < E) lat.push_back(len);
    }
  r.queries = r.completed = static_cast<int64_t>(std::llround(seqs));
  r.achieved_rate = seqs / o.duration;
  r.tokens_per_s = tokens / o.duration;
  r.batches = static_cast<int64_t>(lat.size());
  r.batch_max = r.batches ? B : 0;
  r.batch_mean = r.batches ? double(B) : 0;
  r.latency = summarize(std::move(lat), o.percentile);
  if (seqs <= 0) add_reason(r.fail_reason, "no batch ran in the measured window");
  r.meets_budget = r.fail_reason.empty();
  return r;
}

SearchResult find_max_rate(const TrialFn& trial, const SearchOptions& so) {
  SearchResult res;
  double lo = 0, hi = 0;  // highest passing, lowest failing (0: none yet)
  auto run = [&](double rate) {
    res.trials.push_back(trial(rate));
    const bool ok = res.trials.back().meets_budget;
    if (ok && rate > lo) {
      lo = rate;
      res.best = static_cast<int>(res.trials.size()) - 1;
      res.max_rate = rate;
    }
    if (!ok && (hi == 0 || rate < hi)) hi = rate;
    return ok;
  };
  const int max_trials = std::max(1, so.max_trials);
  double rate = std::max(so.start_rate, so.min_rate);
  // Bracket.
  if (run(rate)) {
    while (static_cast<int>(res.trials.size()) < max_trials && hi == 0) run(rate *= so.grow);
  } else {
    while (static_cast<int>(res.trials.size()) < max_trials && lo == 0) {
      rate *= so.shrink;
      if (rate < so.min_rate) {
        // Last try at the floor, then give up: nothing slower is worth measuring.
        if (hi > so.min_rate) run(so.min_rate);
        break;
      }
      run(rate);
    }
  }
  // Bisect.
  while (static_cast<int>(res.trials.size()) < max_trials && lo > 0 && hi > 0 && (hi - lo) > so.rel_tol * lo)
    run(0.5 * (lo + hi));
  return res;
}

}  // namespace spinel::bench
