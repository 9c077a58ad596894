// The harness of `spinel bench` (tools/spinel/bench/) on fake services, so
// that nothing here needs a model: Poisson arrivals, percentiles, the
// batching policy and the threaded queue, the three scenarios, the rate
// search, synthetic queries and the JSON writer. Timed checks use generous
// bands (these machines are shared); the policy checks are exact.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

#include "runtime/util/json.h"
#include "tests/unit/tiny_model.h"
#include "tools/spinel/bench/arrivals.h"
#include "tools/spinel/bench/batcher.h"
#include "tools/spinel/bench/harness.h"
#include "tools/spinel/bench/json_writer.h"
#include "tools/spinel/bench/queries.h"
#include "tools/spinel/bench/stats.h"

using namespace spinel::bench;

namespace {

// Sleeps a fixed time per batch (plus per query) and records every batch.
class FakeService : public Service {
 public:
  FakeService(int instances, double per_batch, double per_query = 0)
      : instances_(instances), per_batch_(per_batch), per_query_(per_query) {}
  int instances() const override { return instances_; }
  void run(int instance, int64_t first, int64_t count) override {
    CHECK(instance >= 0);
    CHECK(instance < instances_);
    const double t = per_batch_ + per_query_ * double(count);
    if (t > 0) std::this_thread::sleep_for(std::chrono::duration<double>(t));
    std::lock_guard<std::mutex> lock(mu_);
    batches.push_back({first, count});
  }
  int64_t tokens(int64_t q) const override { return 10 + q % 3; }
  std::vector<std::pair<int64_t, int64_t>> batches;

 private:
  int instances_;
  double per_batch_, per_query_;
  std::mutex mu_;
};

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / double(v.size());
}

}  // namespace

TEST_CASE("Poisson arrivals: deterministic for a seed, the asked mean rate, exponential gaps") {
  const double rate = 1000, horizon = 100;
  const auto a = poisson_arrivals(rate, horizon, 42);
  const auto b = poisson_arrivals(rate, horizon, 42);
  const auto c = poisson_arrivals(rate, horizon, 43);
  CHECK(a == b);
  CHECK(a != c);
  REQUIRE(a.size() > 1000);
  CHECK(std::is_sorted(a.begin(), a.end()));
  CHECK(a.front() >= 0);
  CHECK(a.back() < horizon);
  // The count is Poisson(rate * horizon): within 5 standard deviations.
  const double n = double(a.size()), expected = rate * horizon;
  CHECK(std::fabs(n - expected) < 5 * std::sqrt(expected));
  std::vector<double> gaps;
  for (size_t i = 1; i < a.size(); ++i) gaps.push_back(a[i] - a[i - 1]);
  // Mean gap 1/rate (sd of the mean: 1/rate/sqrt(n) = 0.3%), coefficient of
  // variation 1, and P(gap < mean) = 1 - 1/e, as for an exponential.
  const double m = mean(gaps);
  CHECK(m == doctest::Approx(1 / rate).epsilon(0.02));
  double var = 0;
  for (double g : gaps) var += (g - m) * (g - m);
  CHECK(std::sqrt(var / double(gaps.size())) / m == doctest::Approx(1.0).epsilon(0.03));
  const double below = double(std::count_if(gaps.begin(), gaps.end(), [&](double g) { return g < 1 / rate; })) /
                       double(gaps.size());
  CHECK(below == doctest::Approx(1 - std::exp(-1.0)).epsilon(0.02));
  // Common random numbers: the same seed at twice the rate is the same
  // pattern at half the times.
  const auto fast = poisson_arrivals(2 * rate, horizon / 2, 42);
  REQUIRE(fast.size() == a.size());
  for (size_t i = 0; i < 1000; ++i) CHECK(fast[i] == doctest::Approx(a[i] / 2).epsilon(1e-12));
  CHECK_THROWS_AS(poisson_arrivals(0, 1, 1), std::invalid_argument);
  CHECK_THROWS_AS(poisson_arrivals(-5, 1, 1), std::invalid_argument);
  CHECK(poisson_arrivals(10, 0, 1).empty());
}

TEST_CASE("percentiles by nearest rank on hand-checkable sets") {
  std::vector<double> ten;
  for (int i = 10; i >= 1; --i) ten.push_back(i);  // unsorted on purpose
  CHECK(percentile(ten, 50) == 5);
  CHECK(percentile(ten, 90) == 9);
  CHECK(percentile(ten, 99) == 10);
  CHECK(percentile(ten, 100) == 10);
  CHECK(percentile(ten, 10) == 1);
  CHECK(percentile(ten, 11) == 2);
  CHECK(percentile(ten, 0.001) == 1);
  const std::vector<double> five = {5, 1, 4, 2, 3};
  CHECK(percentile(five, 20) == 1);
  CHECK(percentile(five, 21) == 2);
  CHECK(percentile(five, 50) == 3);
  CHECK(percentile(five, 90) == 5);
  CHECK(percentile({7}, 1) == 7);
  CHECK(percentile({7}, 99) == 7);
  CHECK(percentile({}, 50) == 0);
  // 1..1000: p99 is the 990th value, p99.9 the 999th.
  std::vector<double> k;
  for (int i = 1; i <= 1000; ++i) k.push_back(i);
  CHECK(percentile(k, 99) == 990);
  CHECK(percentile(k, 99.9) == 999);
  const LatencySummary s = summarize(ten, 90);
  CHECK(s.count == 10);
  CHECK(s.mean == doctest::Approx(5.5));
  CHECK(s.min == 1);
  CHECK(s.max == 10);
  CHECK(s.p50 == 5);
  CHECK(s.p90 == 9);
  CHECK(s.p99 == 10);
  CHECK(s.at_percentile == 9);
  CHECK(summarize(ten, 75).at_percentile == 8);
}

TEST_CASE("the batching policy step by step") {
  const std::vector<double> t = {0.000, 0.001, 0.002, 0.010, 0.011, 0.100};
  const double w = 0.005;
  // One queued, more to come before its deadline: wait for the next arrival.
  BatchDecision d = decide_batch(t, 0, 0.0, 2, w);
  CHECK(d.take == 0);
  CHECK(!d.done);
  CHECK(d.wake_at == doctest::Approx(0.001));
  // Two queued = max_batch: go.
  d = decide_batch(t, 0, 0.001, 2, w);
  CHECK(d.take == 2);
  // Three arrived but max_batch 2: take 2, never more.
  d = decide_batch(t, 0, 0.5, 2, w);
  CHECK(d.take == 2);
  // One queued (0.002), the next arrives after its deadline (0.007): wake at the deadline...
  d = decide_batch(t, 2, 0.0025, 2, w);
  CHECK(d.take == 0);
  CHECK(d.wake_at == doctest::Approx(0.007));
  // ...and take it then, alone.
  d = decide_batch(t, 2, 0.007, 2, w);
  CHECK(d.take == 1);
  // Nothing queued: wake at the next arrival.
  d = decide_batch(t, 3, 0.003, 2, w);
  CHECK(d.take == 0);
  CHECK(d.wake_at == doctest::Approx(0.010));
  // The oldest already waited longer than max_wait (the instances were busy): go at once.
  d = decide_batch(t, 3, 0.0105, 4, 0.0001);
  CHECK(d.take == 1);
  // max_wait 0 never waits.
  d = decide_batch(t, 3, 0.010, 4, 0);
  CHECK(d.take == 1);
  // The last query of the schedule goes without waiting.
  d = decide_batch(t, 5, 0.100, 4, w);
  CHECK(d.take == 1);
  // Everything taken.
  d = decide_batch(t, 6, 1.0, 4, w);
  CHECK(d.done);
  // max_batch 0 behaves as 1.
  d = decide_batch(t, 0, 0.5, 0, w);
  CHECK(d.take == 1);
}

TEST_CASE("the arrival queue: batches within max_batch, max_wait honoured, no query lost or taken twice") {
  // A burst-y schedule: Poisson at 3000/s for 0.3 s, 3 instances that take
  // 0.5 ms per query, so the queue both fills and runs dry.
  const auto arrivals = poisson_arrivals(3000, 0.3, 7);
  const size_t max_batch = 4;
  const double max_wait = 0.001;
  REQUIRE(arrivals.size() > 500);
  const auto start = std::chrono::steady_clock::now() + std::chrono::milliseconds(5);
  ArrivalQueue q(arrivals, max_batch, max_wait, start);
  std::mutex mu;
  std::vector<Batch> taken;
  std::vector<std::thread> th;
  for (int i = 0; i < 3; ++i)
    th.emplace_back([&] {
      for (;;) {
        const Batch b = q.take();
        if (b.count == 0) break;
        std::this_thread::sleep_for(std::chrono::microseconds(500 * b.count));
        std::lock_guard<std::mutex> lock(mu);
        taken.push_back(b);
      }
    });
  for (auto& t : th) t.join();
  CHECK(q.untaken() == 0);
  std::vector<int> seen(arrivals.size(), 0);
  size_t full = 0, partial = 0;
  for (const Batch& b : taken) {
    CHECK(b.count >= 1);
    CHECK(b.count <= max_batch);
    for (size_t k = b.first; k < b.first + b.count; ++k) ++seen[k];
    // Nothing is taken before it arrives.
    CHECK(arrivals[b.first + b.count - 1] <= b.dispatched);
    if (b.count == max_batch) {
      ++full;
      continue;
    }
    ++partial;
    const bool last = b.first + b.count == arrivals.size();
    // A partial batch: every query that had arrived went with it...
    if (!last) CHECK(arrivals[b.first + b.count] > b.dispatched);
    // ...and it left only once its oldest query had waited max_wait.
    if (!last) CHECK(b.dispatched >= arrivals[b.first] + max_wait);
  }
  CHECK(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));
  // Both kinds happened, so both branches above were exercised.
  CHECK(full > 0);
  CHECK(partial > 0);
  // stop() ends take() for good.
  ArrivalQueue never(arrivals, 4, 0.0, std::chrono::steady_clock::now() + std::chrono::hours(1));
  std::thread waiter([&] { CHECK(never.take().count == 0); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  never.stop();
  waiter.join();
}

TEST_CASE("server trial with a fake service: every query once, batches <= max_batch, latency includes queueing") {
  // 2 instances, 2 ms per batch + 0.5 ms per query, 400 queries/s: well within capacity.
  FakeService svc(2, 0.002, 0.0005);
  TrialOptions o;
  o.warmup = 0.1;
  o.duration = 0.4;
  o.max_batch = 3;
  o.max_wait = 0.002;
  o.budget = 0.5;
  o.percentile = 90;
  int progress_calls = 0;
  o.on_progress = [&](const TrialProgress& p) {
    ++progress_calls;
    CHECK(p.planned == doctest::Approx(0.5));
  };
  o.progress_interval = 0.05;
  const auto arrivals = poisson_arrivals(400, 0.5, 3);
  const TrialResult r = run_server_trial(svc, arrivals, 400, o);
  std::vector<int> seen(arrivals.size(), 0);
  for (const auto& [first, count] : svc.batches) {
    CHECK(count >= 1);
    CHECK(count <= 3);
    for (int64_t k = first; k < first + count; ++k) ++seen[static_cast<size_t>(k)];
  }
  CHECK(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));
  CHECK(r.scenario == "server");
  CHECK(r.unfinished == 0);
  CHECK(r.completed == r.queries);
  int64_t measured = 0;
  for (double a : arrivals) measured += a >= 0.1 && a < 0.5;
  CHECK(r.queries == measured);
  CHECK(r.arrival_rate == doctest::Approx(measured / 0.4));
  CHECK(r.meets_budget);
  CHECK(r.fail_reason.empty());
  CHECK(r.batch_max <= 3);
  // No query finishes faster than one batch of one.
  CHECK(r.latency.min >= 0.0025 - 1e-4);
  CHECK(r.latency.p50 <= r.latency.p90);
  CHECK(r.latency.p90 <= r.latency.p99);
  CHECK(r.latency.p99 <= r.latency.max);
  CHECK(r.tokens_per_s > 0);
  CHECK(progress_calls >= 3);
}

TEST_CASE("server trial: an overloaded fake service fails for its growing queue, a tight budget fails for latency") {
  // One instance, 20 ms per batch of <= 2: capacity 100/s; offered 300/s.
  FakeService slow(1, 0.020);
  TrialOptions o;
  o.warmup = 0.05;
  o.duration = 0.3;
  o.max_batch = 2;
  o.budget = 10.0;  // the budget is not what fails it
  o.drain_limit = 0.1;
  const TrialResult r = run_server_trial(slow, 300, 5, o);
  CHECK(!r.meets_budget);
  CHECK(r.fail_reason.find("queue grows") != std::string::npos);
  CHECK(r.unfinished > 0);
  CHECK(r.achieved_rate < 0.7 * r.arrival_rate);
  // Within capacity but each query takes 20 ms > a 5 ms budget.
  FakeService slow2(1, 0.020);
  o.budget = 0.005;
  o.drain_limit = -1;
  const TrialResult t = run_server_trial(slow2, 20, 5, o);
  CHECK(!t.meets_budget);
  CHECK(t.fail_reason.find("p90") != std::string::npos);
  CHECK(t.latency.at_percentile >= 0.020 - 1e-4);
}

TEST_CASE("a service that throws stops the trial and the error reaches the caller") {
  struct Broken : Service {
    int instances() const override { return 2; }
    void run(int, int64_t first, int64_t) override {
      if (first >= 5) throw std::runtime_error("broken at 5");
    }
  } broken;
  TrialOptions o;
  o.warmup = 0;
  o.duration = 5;  // would take 5 s if the error did not stop it
  o.max_batch = 1;
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH_AS(run_server_trial(broken, 200, 1, o), "broken at 5", std::runtime_error);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(3));
}

TEST_CASE("single stream and offline with a fake service") {
  FakeService svc(2, 0.002, 0.001);
  TrialOptions o;
  o.warmup = 0.05;
  o.duration = 0.3;
  o.max_batch = 4;
  o.budget = 0.1;
  const TrialResult s = run_single_stream(svc, o);
  CHECK(s.scenario == "single");
  CHECK(s.queries > 10);
  CHECK(s.batch_max == 1);
  // 3 ms per query: at least that, at most a generous 5x on a busy machine.
  CHECK(s.latency.p50 >= 0.003 - 1e-4);
  CHECK(s.latency.p50 < 0.015);
  CHECK(s.achieved_rate == doctest::Approx(1 / s.latency.mean).epsilon(0.2));
  CHECK(s.meets_budget);
  for (const auto& [first, count] : svc.batches) CHECK(count == 1);

  FakeService off(2, 0.002, 0.001);
  const TrialResult f = run_offline(off, o);
  CHECK(f.scenario == "offline");
  // 2 instances x 4 sequences / 6 ms = 1333/s at best.
  CHECK(f.achieved_rate <= 1333 * 1.05);
  CHECK(f.achieved_rate > 1333 / 4.0);
  CHECK(f.batch_max == 4);
  CHECK(f.latency.p50 >= 0.006 - 1e-4);
  CHECK(f.tokens_per_s == doctest::Approx(f.achieved_rate * 11).epsilon(0.1));
  std::set<int64_t> firsts;
  for (const auto& [first, count] : off.batches) {
    CHECK(count == 4);
    CHECK(firsts.insert(first).second);  // no batch of queries run twice
  }
}

TEST_CASE("rate search on a synthetic pass/fail threshold") {
  for (double start : {1.0, 50.0, 123.0, 1000.0}) {
    SearchOptions so;
    so.start_rate = start;
    so.min_rate = 0.5;
    so.max_trials = 20;
    so.rel_tol = 0.02;
    int calls = 0;
    const SearchResult r = find_max_rate(
        [&](double rate) {
          ++calls;
          TrialResult t;
          t.offered_rate = rate;
          t.meets_budget = rate <= 123.0;
          return t;
        },
        so);
    INFO("start ", start);
    REQUIRE(r.best >= 0);
    CHECK(r.max_rate <= 123.0);
    CHECK(r.max_rate >= 123.0 * 0.98);
    CHECK(r.trials[static_cast<size_t>(r.best)].offered_rate == r.max_rate);
    CHECK(calls == static_cast<int>(r.trials.size()));
    CHECK(calls <= 20);
  }
  // Nothing passes: the search gives up at min_rate, within max_trials.
  SearchOptions so;
  so.start_rate = 100;
  so.min_rate = 5;
  so.max_trials = 50;
  const SearchResult none = find_max_rate([](double rate) {
    TrialResult t;
    t.offered_rate = rate;
    return t;
  }, so);
  CHECK(none.best == -1);
  CHECK(none.max_rate == 0);
  CHECK(none.trials.back().offered_rate == doctest::Approx(5));
  CHECK(none.trials.size() < 10);
  // max_trials bounds the work.
  so.max_trials = 3;
  so.start_rate = 1;
  const SearchResult capped = find_max_rate([](double rate) {
    TrialResult t;
    t.offered_rate = rate;
    t.meets_budget = true;
    return t;
  }, so);
  CHECK(capped.trials.size() == 3);
}

TEST_CASE("rate search finds the capacity of a fake server with a fixed service time") {
  // 10 ms per batch of <= 4 on one instance: at most 400 queries/s. The
  // budget (p90 <= 200 ms) is loose, so the queue's growth is what stops the
  // search: its answer must be below 400/s (plus the 5% tolerance and
  // noise) and at least half of it. Generous band: a shared 2-core machine oversleeps.
  FakeService svc(1, 0.010);
  TrialOptions o;
  o.warmup = 0.15;
  o.duration = 0.6;
  o.max_batch = 4;
  o.max_wait = 0.002;
  o.budget = 0.2;
  o.drain_limit = 0.3;
  SearchOptions so;
  so.start_rate = 200;
  so.min_rate = 20;
  so.max_trials = 7;
  const SearchResult r = find_max_rate([&](double rate) { return run_server_trial(svc, rate, 11, o); }, so);
  REQUIRE(r.best >= 0);
  MESSAGE("fake server capacity 400/s; found ", r.max_rate, "/s in ", r.trials.size(), " trials");
  CHECK(r.max_rate >= 200);
  CHECK(r.max_rate <= 460);
  // The machine may be noisy (passing need not be monotone in the rate), so
  // only the answer's own trial is checked, and that the search failed
  // somewhere above it (it bracketed the capacity).
  CHECK(r.trials[static_cast<size_t>(r.best)].meets_budget);
  CHECK(r.trials[static_cast<size_t>(r.best)].batch_max <= 4);
  CHECK(std::any_of(r.trials.begin(), r.trials.end(),
                    [&](const TrialResult& t) { return !t.meets_budget && t.offered_rate > r.max_rate; }));
}

TEST_CASE("synthetic queries: deterministic, [CLS] ... [SEP], ids from the vocabulary, lengths from the distribution") {
  TokenSpace sp;
  sp.vocab = 50;
  sp.cls = 2;
  sp.sep = 3;
  sp.excluded = {0, 1};
  LengthDist d = parse_length_dist("uniform:2-9", 128);
  CHECK(d.spec() == "uniform:2-9");
  CHECK(d.mean() == doctest::Approx(5.5));
  const auto a = synthetic_queries(d, sp, 500, 9);
  CHECK(a == synthetic_queries(d, sp, 500, 9));
  CHECK(a != synthetic_queries(d, sp, 500, 10));
  std::set<size_t> lengths;
  for (const auto& q : a) {
    lengths.insert(q.size());
    REQUIRE(q.size() >= 2);
    CHECK(q.front() == 2);
    CHECK(q.back() == 3);
    for (size_t i = 1; i + 1 < q.size(); ++i) {
      CHECK(q[i] >= 4);
      CHECK(q[i] < 50);
    }
  }
  CHECK(*lengths.begin() == 2);
  CHECK(*lengths.rbegin() == 9);
  CHECK(lengths.size() == 8);
  // Fixed; a tokenizer without [CLS]/[SEP] gets only random ids.
  d = parse_length_dist("fixed", 16);
  TokenSpace bare;
  bare.vocab = 10;
  for (const auto& q : synthetic_queries(d, bare, 20, 1)) CHECK(q.size() == 16);
  // Limits.
  CHECK_NOTHROW(d.check(2, 16));
  CHECK_THROWS_WITH_AS(d.check(2, 15), "--seq 16 tokens is beyond the model's limit of 15 tokens (its max_position)",
                       std::invalid_argument);
  CHECK_THROWS_AS(parse_length_dist("uniform:9-2", 128), std::invalid_argument);
  CHECK_THROWS_AS(parse_length_dist("uniform:x-2", 128), std::invalid_argument);
  CHECK_THROWS_AS(parse_length_dist("gauss", 128), std::invalid_argument);
  sp.vocab = 4;  // nothing but specials left
  CHECK_THROWS_AS(synthetic_queries(parse_length_dist("fixed", 5), sp, 1, 1), std::invalid_argument);
}

TEST_CASE("lengths files: comments and blanks skipped, errors name the file and line") {
  const std::string dir = spinel::testing::temp_dir("bench-lengths");
  const std::string good = dir + "/good.txt", bad = dir + "/bad.txt";
  std::ofstream(good) << "# lengths\n12\n\n  40 \n7\r\n";
  std::ofstream(bad) << "12\n40\nabc\n";
  const LengthDist d = parse_length_dist("file:" + good, 128);
  CHECK(d.lengths == std::vector<int64_t>{12, 40, 7});
  CHECK(d.lines == std::vector<int>{2, 4, 5});
  CHECK(d.min_length() == 7);
  CHECK(d.max_length() == 40);
  CHECK_THROWS_WITH_AS(d.check(2, 30),
                       ("--seq-dist file: " + good + " line 4: 40 tokens is beyond the model's limit of 30 tokens (its max_position)").c_str(),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(parse_length_dist("file:" + bad, 128),
                       ("--seq-dist file: " + bad + " line 3: 'abc' is not a length (a whole number of tokens >= 1)").c_str(),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(parse_length_dist("file:" + dir + "/missing.txt", 128),
                       ("--seq-dist: cannot open lengths file '" + dir + "/missing.txt'").c_str(), std::invalid_argument);
  std::ofstream(dir + "/empty.txt") << "# nothing\n";
  CHECK_THROWS_AS(parse_length_dist("file:" + dir + "/empty.txt", 128), std::invalid_argument);
}

TEST_CASE("the JSON writer's output parses back") {
  JsonWriter j;
  j.begin_object();
  j.field("a", 1);
  j.field("b", 2.5);
  j.field("s", "x\"y\n");
  j.field("t", true);
  j.key("n").null();
  j.field("inf", std::numeric_limits<double>::infinity());
  j.key("arr").begin_array();
  j.value(int64_t{-3});
  j.begin_object().end_object();
  j.begin_array().end_array();
  j.end_array();
  j.key("o").begin_object().field("k", "v").end_object();
  j.end_object();
  const spinel::json::Value v = spinel::json::parse(j.str(), "writer output");
  REQUIRE(v.is_object());
  CHECK(v.find("a")->num == 1);
  CHECK(v.find("b")->num == 2.5);
  CHECK(v.find("s")->str == "x\"y\n");
  CHECK(v.find("t")->b);
  CHECK(v.find("n")->is_null());
  CHECK(v.find("inf")->is_null());
  REQUIRE(v.find("arr")->arr.size() == 3);
  CHECK(v.find("arr")->arr[0].num == -3);
  CHECK(v.find("o")->find("k")->str == "v");
}
