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

TEST_CASE("a cpu session runs every batch on its own thread, whichever thread calls it") {
  // Why: oneDNN's OpenMP pool belongs to the thread that runs it; runs from
  // several caller threads must not create several pools (CpuExecutor).
  auto m = Model::load(write_model("threads-executor", true));
  Session s(m, session_threads());
  std::mutex mu;
  std::vector<std::thread::id> seen;  // the thread of every observed Linear
  bool fail = false;
  s.set_linear_observer([&](size_t, const float*, int64_t, int64_t) {
    std::lock_guard<std::mutex> lock(mu);
    seen.push_back(std::this_thread::get_id());
    if (fail) throw std::runtime_error("observer failed on purpose");
  });
  std::mt19937 rng(5);
  const auto batch = random_batch(rng, m->config().vocab_size, m->config().max_position);
  const HiddenStates h0 = s.run(batch);
  const std::vector<float> want(h0.data, h0.data + h0.offsets.back() * h0.width);
  std::vector<std::thread::id> callers{std::this_thread::get_id()};
  for (int t = 0; t < 3; ++t) {
    std::thread th([&] {
      const HiddenStates h = s.run(batch);
      CHECK(std::memcmp(h.data, want.data(), want.size() * sizeof(float)) == 0);
    });
    callers.push_back(th.get_id());
    th.join();
  }
  REQUIRE(!seen.empty());
  for (const auto& id : seen) {
    CHECK(id == seen.front());
    for (const auto& c : callers) CHECK(id != c);
  }
  // An exception inside a run reaches the caller, and the session still works.
  fail = true;
  CHECK_THROWS_WITH_AS(s.run(batch), "observer failed on purpose", std::runtime_error);
  fail = false;
  const HiddenStates h1 = s.run(batch);
  CHECK(std::memcmp(h1.data, want.data(), want.size() * sizeof(float)) == 0);
}
