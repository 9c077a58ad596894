// One model shared by many threads: 8 threads x N runs of mixed-length
// batches (N = SPINEL_TEST_RUNS: 250 by default, 1000 in the TSan run of
// tools/test.sh), each thread with its own session, give exactly the results
// of the same runs made one after another. CI runs it under ThreadSanitizer too
// (build-tsan), where it checks that the shared model and its prepared state
// are only read.
//
// Under TSan every session has one thread and OMP_NUM_THREADS=1 is set (see
// tools/test.sh): TBB's and OpenMP's runtimes are not instrumented, so work
// they hand between their own threads would look like races to TSan (their
// barriers are invisible to it). With one thread per session the only
// concurrency is ours — application threads sharing one Model — which is
// what this test is about. The thread count can be raised with
// SPINEL_TEST_SESSION_THREADS for a native run.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "converters/quantize.h"
#include "runtime/session.h"
#include "tests/unit/tiny_model.h"

using namespace spinel;

namespace {

int session_threads() {
  const char* v = std::getenv("SPINEL_TEST_SESSION_THREADS");
  return v ? std::atoi(v) : 1;
}

// 250 in the plain ctest run; tools/test.sh asks 1000 of the TSan run.
int runs_per_thread() {
  const char* v = std::getenv("SPINEL_TEST_RUNS");
  return v ? std::atoi(v) : 250;
}

std::vector<Sequence> random_batch(std::mt19937& rng, int64_t vocab, int64_t max_len) {
  std::uniform_int_distribution<int> nseq(1, 4), len(1, static_cast<int>(max_len));
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(vocab - 1));
  std::vector<Sequence> b(static_cast<size_t>(nseq(rng)));
  for (Sequence& s : b) {
    s.ids.resize(static_cast<size_t>(len(rng)));
    for (int32_t& t : s.ids) t = id(rng);
  }
  return b;
}

// Results of thread t's runs, computed alone on one session.
std::vector<std::vector<float>> expected_runs(const std::shared_ptr<const Model>& m, unsigned seed,
                                              int runs) {
  Session s(m, session_threads());
  std::mt19937 rng(seed);
  std::vector<std::vector<float>> out;
  for (int r = 0; r < runs; ++r) {
    const HiddenStates h = s.run(random_batch(rng, m->config().vocab_size, m->config().max_position));
    out.emplace_back(h.data, h.data + h.offsets.back() * h.width);
  }
  return out;
}

void shared_by_threads(const std::shared_ptr<const Model>& m) {
  constexpr int kThreads = 8;
  const int runs = runs_per_thread();
  std::vector<std::vector<std::vector<float>>> expect;
  for (int t = 0; t < kThreads; ++t) expect.push_back(expected_runs(m, 100 + t, runs));

  std::atomic<int> mismatches{0}, errors{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t) {
    pool.emplace_back([&, t] {
      try {
        Session s(m, session_threads());
        std::mt19937 rng(100 + t);
        for (int r = 0; r < runs; ++r) {
          const HiddenStates h =
              s.run(random_batch(rng, m->config().vocab_size, m->config().max_position));
          const auto& e = expect[t][r];
          if (static_cast<size_t>(h.offsets.back() * h.width) != e.size() ||
              std::memcmp(h.data, e.data(), e.size() * sizeof(float)) != 0)
            ++mismatches;
        }
      } catch (...) {
        ++errors;
      }
    });
  }
  for (auto& th : pool) th.join();
  CHECK(errors == 0);
  CHECK(mismatches == 0);
}

std::string write_model(const std::string& tag, bool int8) {
  SpnlWriter w;
  testing::TinySpec spec;
  spec.hidden = 32;
  spec.heads = 4;
  spec.intermediate = 64;
  spec.positions = 40;
  testing::fill_tiny_model(w, spec);
  if (int8) {
    // Prune one layer's MLP so that both the sparse and the dense INT8 kernels run.
    for (const Op& op : w.graph.ops) {
      if (op.kind != OpKind::Linear || op.name != "layer0.intermediate") continue;
      const int32_t wid = op.w[slot::kWeight];
      const TensorInfo& t = w.tensors()[static_cast<size_t>(wid)];
      std::vector<float> v(static_cast<const float*>(w.tensor_data(wid)),
                           static_cast<const float*>(w.tensor_data(wid)) + t.numel());
      for (size_t i = 0; i < v.size(); ++i)
        if ((i / static_cast<size_t>(t.shape[1])) % 5 != 0) v[i] = 0.f;  // 80% of the K rows
      w.set_tensor(wid, DType::F32, t.shape, v.data(), v.size() * sizeof(float));
    }
    quantize_linears_int8(w, QuantOptions{});
  }
  const std::string path = testing::temp_dir(tag) + "/m.spnl";
  w.write(path);
  return path;
}

}  // namespace

TEST_CASE("one f32 model shared by 8 threads: results equal single-threaded runs") {
  shared_by_threads(Model::load(write_model("threads-f32", false)));
}

TEST_CASE("one INT8 model (sparse and dense layers) shared by 8 threads") {
  auto m = Model::load(write_model("threads-s8", true));
  int sparse = 0;
  for (const Op& op : m->graph().ops) sparse += op.precision == Precision::S8Sparse;
  REQUIRE(sparse >= 1);
  shared_by_threads(m);
}

namespace {
// Runs the same batch on s from the calling thread and from three new
// threads (one at a time); returns the thread ids the Linear observer saw in
// each of the runs (from: 0 this thread's first run, 1 its second, 2-4 the
// new threads'), and the callers' ids. Every run must give the first's bits.
struct Seen {
  std::vector<std::vector<std::thread::id>> runs;
  std::vector<std::thread::id> callers;
};
Seen run_from_threads(Session& s, const Model& m) {
  std::mutex mu;
  Seen out;
  std::vector<std::thread::id>* cur = nullptr;
  s.set_linear_observer([&](size_t, const float*, int64_t, int64_t) {
    std::lock_guard<std::mutex> lock(mu);
    cur->push_back(std::this_thread::get_id());
  });
  std::mt19937 rng(5);
  const auto batch = random_batch(rng, m.config().vocab_size, m.config().max_position);
  out.runs.resize(5);
  cur = &out.runs[0];
  const HiddenStates h0 = s.run(batch);
  const std::vector<float> want(h0.data, h0.data + h0.offsets.back() * h0.width);
  cur = &out.runs[1];
  const HiddenStates h1 = s.run(batch);
  CHECK(std::memcmp(h1.data, want.data(), want.size() * sizeof(float)) == 0);
  out.callers.push_back(std::this_thread::get_id());
  for (int t = 0; t < 3; ++t) {
    cur = &out.runs[static_cast<size_t>(2 + t)];
    std::thread th([&] {
      const HiddenStates h = s.run(batch);
      CHECK(std::memcmp(h.data, want.data(), want.size() * sizeof(float)) == 0);
    });
    out.callers.push_back(th.get_id());
    th.join();
  }
  for (const auto& r : out.runs) REQUIRE(!r.empty());
  return out;
}
// Every op of run r on one thread, and that thread's id.
std::thread::id one_thread(const Seen& seen, size_t r) {
  for (const auto& id : seen.runs[r]) CHECK(id == seen.runs[r].front());
  return seen.runs[r].front();
}
}  // namespace

TEST_CASE("a cpu session runs on its own thread, or on its owner's once no job has used OpenMP") {
  // Why its own thread: oneDNN's OpenMP pool belongs to the thread that runs
  // it; runs from several caller threads must not create several pools
  // (CpuExecutor). An INT8 model (its dense layers on TBB) uses no OpenMP:
  // after the first job, the jobs of the first thread that calls again run
  // on that thread; other threads' still go to the session's thread.
  auto m = Model::load(write_model("threads-executor", true));
  {
    Session s(m, session_threads());
    const Seen seen = run_from_threads(s, *m);
    const std::thread::id own = one_thread(seen, 0);
    for (const auto& c : seen.callers) CHECK(own != c);
    CHECK(one_thread(seen, 1) == seen.callers[0]);  // the owner, on its own thread
    for (size_t r = 2; r < 5; ++r) CHECK(one_thread(seen, r) == own);
  }
  {
    // SPINEL_RUN_ON=executor: every job on the session's thread, as before.
    setenv("SPINEL_RUN_ON", "executor", 1);
    Session s(m, session_threads());
    unsetenv("SPINEL_RUN_ON");
    const Seen seen = run_from_threads(s, *m);
    const std::thread::id own = one_thread(seen, 0);
    for (size_t r = 1; r < 5; ++r) CHECK(one_thread(seen, r) == own);
    for (const auto& c : seen.callers) CHECK(own != c);
  }
  {
    // An FP32 model's dense layers run on oneDNN's OpenMP threads: all of its
    // jobs stay on the session's thread.
    auto f = Model::load(write_model("threads-executor-f32", false));
    Session s(f, session_threads());
    const Seen seen = run_from_threads(s, *f);
    const std::thread::id own = one_thread(seen, 0);
    for (size_t r = 1; r < 5; ++r) CHECK(one_thread(seen, r) == own);
    for (const auto& c : seen.callers) CHECK(own != c);
  }
}

TEST_CASE("an exception inside a run reaches the caller, on either thread, and the session still works") {
  auto m = Model::load(write_model("threads-executor-err", true));
  Session s(m, session_threads());
  bool fail = false;
  s.set_linear_observer([&](size_t, const float*, int64_t, int64_t) {
    if (fail) throw std::runtime_error("observer failed on purpose");
  });
  std::mt19937 rng(5);
  const auto batch = random_batch(rng, m->config().vocab_size, m->config().max_position);
  const HiddenStates h0 = s.run(batch);  // the session's thread
  const std::vector<float> want(h0.data, h0.data + h0.offsets.back() * h0.width);
  for (int round = 0; round < 2; ++round) {  // the second runs on this thread
    fail = true;
    CHECK_THROWS_WITH_AS(s.run(batch), "observer failed on purpose", std::runtime_error);
    fail = false;
    const HiddenStates h1 = s.run(batch);
    CHECK(std::memcmp(h1.data, want.data(), want.size() * sizeof(float)) == 0);
  }
}
