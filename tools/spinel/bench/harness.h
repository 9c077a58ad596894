// The three scenarios of MLPerf Inference LoadGen, on any Service (a model's
// sessions, or a fake in the tests):
//  - server: Poisson arrivals, a queue, dynamic batching onto N instances;
//    latency = completion - scheduled arrival, queueing included;
//  - single stream: one query at a time, back to back, batch 1;
//  - offline: every query available at once, batches of max_batch.
// Times are in seconds throughout; the report converts.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tools/spinel/bench/stats.h"

namespace spinel::bench {

// What a trial runs. Queries are numbered 0, 1, ... in arrival order; a
// service maps a number to its input (e.g. number % pool size).
class Service {
 public:
  virtual ~Service() = default;
  // Independent executors; instance i is only ever called from one thread.
  virtual int instances() const = 0;
  // Runs queries [first, first + count) as one batch on `instance`. May
  // throw: the trial stops its instances and rethrows.
  virtual void run(int instance, int64_t first, int64_t count) = 0;
  // Tokens of query `q`, for tokens/s (0: unknown).
  virtual int64_t tokens(int64_t q) const { return 0; }
};

// Where a trial is, for a live progress line (called on the thread that
// runs the trial, every progress_interval seconds).
struct TrialProgress {
  double elapsed = 0, planned = 0;  // seconds since the start; warm-up + duration
  int64_t completed = 0;            // queries (or sequences) done so far
};
using ProgressFn = std::function<void(const TrialProgress&)>;

struct TrialOptions {
  double warmup = 1.0, duration = 10.0;  // results count from warmup to warmup + duration
  size_t max_batch = 8;                  // server, offline
  double max_wait = 0.002;               // server
  double percentile = 90, budget = 0.020;
  // Server: how long after the last arrival queued queries may still finish
  // (< 0: max(0.5 s, 4 x budget)); queries not done by then count as
  // unfinished, with their latency so far (a lower bound), and fail the trial.
  double drain_limit = -1;
  // Server: the trial fails when completions in the window fall short of
  // arrivals in it by more than this fraction of them plus what the
  // instances hold in flight (instances x max_batch): the queue grows.
  double shortfall_tolerance = 0.05;
  // Pin instance i's thread to these CPUs (empty: no pinning).
  std::vector<std::vector<int>> cpus;
  ProgressFn on_progress;
  double progress_interval = 0.25;
};

struct TrialResult {
  std::string scenario;      // "server", "single" or "offline"
  double offered_rate = 0;   // server: the Poisson rate asked for, queries/s (else 0)
  double arrival_rate = 0;   // server: queries that arrived in the window / duration
  double achieved_rate = 0;  // queries (sequences) completed in the window / duration
  double tokens_per_s = 0;   // tokens of those / duration
  int64_t queries = 0;       // measured: arrived (server), run (single) or done (offline) in the window
  int64_t completed = 0;     // server: of the measured queries, how many finished
  int64_t unfinished = 0;    // server: measured queries not finished at the drain limit
  // Server: per query, completion - scheduled arrival. Single: per query.
  // Offline: per batch (its service time).
  LatencySummary latency;
  double batch_mean = 0;
  int64_t batch_max = 0, batches = 0;
  bool meets_budget = false;  // server, single: p(percentile) <= budget and, server, the queue keeps up
  std::string fail_reason;    // empty when it meets
  double wall_seconds = 0;
};

// Runs `service` against the schedule `arrivals` (ascending seconds from the
// start; queries arriving in [warmup, warmup + duration) are measured).
// `offered_rate` is only recorded. Batches are contiguous runs of the
// schedule; run() receives their query numbers.
TrialResult run_server_trial(Service& service, const std::vector<double>& arrivals,
                             double offered_rate, const TrialOptions& opts);
// The same on a Poisson schedule of `rate` from `seed` over warmup + duration.
TrialResult run_server_trial(Service& service, double rate, uint64_t seed, const TrialOptions& opts);

// Back-to-back batch-1 queries on instance 0 for warmup + duration.
TrialResult run_single_stream(Service& service, const TrialOptions& opts);

// Every instance takes batches of max_batch queries as fast as it can for
// warmup + duration; throughput counts the sequences of batches that ended
// in the window.
TrialResult run_offline(Service& service, const TrialOptions& opts);

// The highest arrival rate whose server trial meets the budget: try
// start_rate; bracket by multiplying by `grow` while trials pass (or by
// `shrink` while they fail, down to min_rate); then bisect until the bracket
// is narrower than rel_tol of its lower end or max_trials ran. Assumes
// passing is monotone in the rate (on a noisy machine it may not be: every
// trial is kept).
struct SearchOptions {
  double start_rate = 10;
  double min_rate = 0.1;
  int max_trials = 8;
  double rel_tol = 0.05;
  double grow = 1.5, shrink = 0.6;
};
struct SearchResult {
  std::vector<TrialResult> trials;  // in the order run
  int best = -1;                    // index of the highest passing rate; -1: none passed
  double max_rate = 0;              // its offered rate
};
using TrialFn = std::function<TrialResult(double rate)>;
SearchResult find_max_rate(const TrialFn& trial, const SearchOptions& opts);

// Pins the calling thread to `cpus` (sched_setaffinity); false if refused.
bool pin_this_thread(const std::vector<int>& cpus);

}  // namespace spinel::bench
