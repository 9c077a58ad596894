// Sessions against the plain reference path on random BERT-shaped models:
// packed mixed-length batches, one-by-one runs, thread budgets, arena reuse,
// and bad inputs.
#include <unistd.h>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <string>

#include "runtime/error.h"
#include "kernels/cpu/isa.h"
#include "runtime/prepared.h"
#include "runtime/profile.h"
#include "runtime/session.h"
#include "tests/unit/reference_run.h"
#include "tests/unit/tiny_model.h"

using namespace spinel;

namespace {

std::shared_ptr<const Model> make_model(const testing::TinySpec& spec, const std::string& tag) {
  SpnlWriter w;
  testing::fill_tiny_model(w, spec);
  const std::string path = testing::temp_dir(tag) + "/m.spnl";
  w.write(path);
  return Model::load(path);
}

std::vector<Sequence> random_batch(const Model& m, const std::vector<int>& lengths, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(m.config().vocab_size - 1));
  std::vector<Sequence> b;
  for (int len : lengths) {
    Sequence s;
    for (int t = 0; t < len; ++t) {
      s.ids.push_back(id(rng));
      s.type_ids.push_back(t < len / 2 ? 0 : 1);
    }
    b.push_back(s);
  }
  return b;
}

double max_abs_diff(const float* a, const float* b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

}  // namespace

TEST_CASE("session matches the reference path on packed mixed-length batches") {
  for (Activation act : {Activation::GeluErf, Activation::GeluTanh}) {
    testing::TinySpec spec;
    spec.hidden = 64;
    spec.heads = 4;
    spec.intermediate = 96;
    spec.layers = 3;
    spec.positions = 80;
    spec.act = act;
    auto m = make_model(spec, "session");
    const auto batch = random_batch(*m, {1, 7, 80, 33, 2, 64}, 3);
    const auto ref = reference_run(m, batch);
    for (int threads : {1, 2}) {
      Session s(m, threads);
      const HiddenStates h = s.run(batch);
      REQUIRE(h.offsets.back() * h.width == static_cast<int64_t>(ref.size()));
      INFO("act ", activation_name(act), " threads ", threads);
      CHECK(max_abs_diff(h.data, ref.data(), ref.size()) < 1e-4);
    }
  }
}

TEST_CASE("a packed batch gives the same rows as running each sequence alone") {
  auto m = make_model({}, "session-solo");
  const auto batch = random_batch(*m, {5, 1, 24, 9}, 11);
  Session s(m, 2);
  const HiddenStates packed = s.run(batch);
  const std::vector<float> all(packed.data, packed.data + packed.offsets.back() * packed.width);
  for (size_t i = 0; i < batch.size(); ++i) {
    const HiddenStates one = s.run({batch[i]});
    const size_t n = batch[i].ids.size() * one.width;
    CHECK(max_abs_diff(one.data, all.data() + packed.offsets[i] * packed.width, n) < 1e-5);
  }
}

// The tiny model with a narrow value before the result: its output X, then
// A = X W1 (H wide), B = A W2 (2 wide), C = B W3, and last_hidden_state
// D = C W4. The memory plan puts B into a buffer that D would reuse (B is
// dead by then), where a later slice's B (rows 2 floats apart) would land on
// the rows of D that the slices before wrote (H floats apart); a result
// keeps a buffer of its own instead.
std::shared_ptr<const Model> narrow_tail_model(const std::string& tag) {
  SpnlWriter w;
  testing::TinySpec spec;
  testing::fill_tiny_model(w, spec);
  const int64_t H = spec.hidden;
  std::mt19937 rng(29);
  auto linear = [&](int32_t in, int64_t k, int64_t n, const std::string& name) {
    w.graph.values.push_back({name, n, Rows::Tokens});
    Op op;
    op.kind = OpKind::Linear;
    op.name = name;
    op.in0 = in;
    const auto wt = testing::random_floats(static_cast<size_t>(k * n), rng, 1.f / std::sqrt(float(k)));
    const auto b = testing::random_floats(static_cast<size_t>(n), rng, 0.1f);
    op.w[slot::kWeight] = w.add_tensor(name + ".weight", DType::F32, {k, n}, wt.data(), wt.size() * 4);
    op.w[slot::kBias] = w.add_tensor(name + ".bias", DType::F32, {n}, b.data(), b.size() * 4);
    op.out = static_cast<int32_t>(w.graph.values.size() - 1);
    w.graph.ops.push_back(op);
    return op.out;
  };
  const int32_t a = linear(w.graph.output, H, H, "tail.a");
  const int32_t b = linear(a, H, 2, "tail.b");
  const int32_t c = linear(b, 2, H, "tail.c");
  w.graph.output = linear(c, H, H, "tail.d");
  // And a per-sequence output: the [CLS] row through a 3-wide Linear.
  testing::add_logits_head(w, H, 3, rng);
  const std::string path = testing::temp_dir(tag) + "/m.spnl";
  w.write(path);
  return Model::load(path);
}

TEST_CASE("a batch run in slices of whole sequences gives the results of one run, bit for bit") {
  // Slices of 1 token (every sequence alone), a few sequences, and a slice
  // longer than the batch; the 24-token sequence is longer than some slices.
  testing::TinySpec spec;
  spec.intermediate = 48;
  for (const auto& m : {make_model(spec, "session-slices"), narrow_tail_model("session-slices-tail")}) {
  const auto batch = random_batch(*m, {5, 1, 24, 9, 3, 17, 2}, 13);
  const auto ref = reference_run(m, batch);
  for (int threads : {1, 2}) {
    SessionOptions whole;
    whole.threads = threads;
    whole.slice_tokens = 0;
    Session w(m, whole);
    CHECK(w.slice_tokens() == 0);
    const HiddenStates hw = w.run(batch);
    const std::vector<float> all(hw.data, hw.data + hw.offsets.back() * hw.width);
    const bool head = m->graph().find_output("logits") >= 0;
    std::vector<float> logits;
    if (head) {
      const OutputView o = w.output("logits");
      REQUIRE(o.rows == static_cast<int64_t>(batch.size()));
      logits.assign(o.data, o.data + o.rows * o.width);
    }
    CHECK(max_abs_diff(all.data(), ref.data(), ref.size()) < 1e-4);
    for (int64_t slice : {1, 6, 10, 30, 1000}) {
      SessionOptions o = whole;
      o.slice_tokens = slice;
      Session s(m, o);
      CHECK(s.slice_tokens() == slice);
      INFO("threads ", threads, " slice_tokens ", slice);
      const HiddenStates h = s.run(batch);
      REQUIRE(h.offsets == hw.offsets);
      CHECK(max_abs_diff(h.data, all.data(), all.size()) == 0.0);
      if (head) CHECK(max_abs_diff(s.output("logits").data, logits.data(), logits.size()) == 0.0);
      // A second, smaller batch on the same arena, then the first again.
      const auto small = random_batch(*m, {4, 2}, 14);
      const auto ref_small = reference_run(m, small);
      const HiddenStates hs = s.run(small);
      CHECK(max_abs_diff(hs.data, ref_small.data(), ref_small.size()) < 1e-4);
      const HiddenStates again = s.run(batch);
      CHECK(max_abs_diff(again.data, all.data(), all.size()) == 0.0);
    }
  }
  }
  auto m = make_model(spec, "session-slices");
  // The automatic rule (small weights: 128 tokens per thread per MB of a
  // core's L2, 1 to 4 MB), with the environment's override out of the way for
  // the check.
  const char* env = std::getenv("SPINEL_SLICE_TOKENS");
  const std::string saved = env ? env : "";
  unsetenv("SPINEL_SLICE_TOKENS");
  SessionOptions auto_opts;
  auto_opts.threads = 2;
  const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
  const int64_t l2_mb = l2 >= (4L << 20) ? 4 : l2 >= (3L << 20) ? 3 : l2 >= (2L << 20) ? 2 : 1;
  CAPTURE(l2);
  CHECK(Session(m, auto_opts).slice_tokens() == 2 * 128 * l2_mb);
  setenv("SPINEL_SLICE_TOKENS", "off", 1);
  CHECK(Session(m, auto_opts).slice_tokens() == 0);
  setenv("SPINEL_SLICE_TOKENS", "48", 1);
  CHECK(Session(m, auto_opts).slice_tokens() == 48);
  if (env)
    setenv("SPINEL_SLICE_TOKENS", saved.c_str(), 1);
  else
    unsetenv("SPINEL_SLICE_TOKENS");
  SessionOptions bad;
  bad.slice_tokens = -2;
  CHECK_THROWS_AS(Session(m, bad), Error);
}

TEST_CASE("profiling times every op of the runs it covers and changes no result") {
  auto m = make_model({}, "session-profile");
  const auto batch = random_batch(*m, {7, 13}, 21);
  Session s(m, 2);
  const HiddenStates plain = s.run(batch);
  const std::vector<float> before(plain.data, plain.data + plain.offsets.back() * plain.width);
  CHECK_FALSE(s.profiling());
  CHECK(s.profiled_runs() == 0);
  CHECK(profile_by_class(s).empty());

  s.set_profiling(true);
  const HiddenStates h = s.run(batch);
  CHECK(max_abs_diff(h.data, before.data(), before.size()) == 0.0);
  s.run(batch);
  const size_t n_ops = m->graph().ops.size();
  REQUIRE(s.op_seconds().size() == n_ops);
  CHECK(s.profiled_runs() == 2);
  double total = 0;
  for (double t : s.op_seconds()) {
    CHECK(t >= 0.0);
    total += t;
  }
  CHECK(total > 0.0);

  const std::vector<ProfileClass> rows = profile_by_class(s);
  int64_t ops = 0;
  double percent = 0, ms = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    ops += rows[i].ops;
    percent += rows[i].percent;
    ms += rows[i].ms_per_run;
    if (i > 0) CHECK(rows[i - 1].ms_per_run >= rows[i].ms_per_run);
    // Linear rows carry their shape (input and output widths), others none.
    if (rows[i].kind == "Linear") {
      const size_t arrow = rows[i].shape.find("->");
      REQUIRE(arrow != std::string::npos);
      CHECK(std::stoll(rows[i].shape.substr(0, arrow)) > 0);
      CHECK(std::stoll(rows[i].shape.substr(arrow + 2)) > 0);
    } else {
      CHECK(rows[i].shape.empty());
    }
  }
  CHECK(ops == static_cast<int64_t>(n_ops));
  CHECK(percent == doctest::Approx(100.0).epsilon(1e-9));
  CHECK(ms == doctest::Approx(total * 1e3 / 2).epsilon(1e-9));
  const std::string table = profile_table(rows, s.profiled_runs());
  CHECK(table.find("Linear") != std::string::npos);
  CHECK(table.find("over 2 runs") != std::string::npos);

  // Switching it on again starts over; off keeps what was gathered.
  s.set_profiling(true);
  CHECK(s.profiled_runs() == 0);
  s.run(batch);
  s.set_profiling(false);
  s.run(batch);
  CHECK(s.profiled_runs() == 1);
}

TEST_CASE("the arena grows to the largest batch and is reused") {
  auto m = make_model({}, "session-arena");
  Session s(m, 1);
  const auto big = random_batch(*m, {24, 24, 24}, 5);
  const auto small = random_batch(*m, {3}, 6);
  s.run(big);
  const size_t bytes = s.arena_bytes();
  const auto ref = reference_run(m, small);
  const HiddenStates h = s.run(small);
  CHECK(s.arena_bytes() == bytes);
  CHECK(max_abs_diff(h.data, ref.data(), ref.size()) < 1e-4);
}

TEST_CASE("pooling: cls takes the first row, mean averages the rows") {
  const float rows[] = {1, 2, 3, 4, 5, 6, 10, 20};  // two sequences: 3 rows, 1 row
  HiddenStates h;
  h.width = 2;
  h.data = rows;
  h.offsets = {0, 3, 4};
  auto cls = pool(h, Pooling::Cls);
  CHECK(cls[0] == std::vector<float>{1, 2});
  CHECK(cls[1] == std::vector<float>{10, 20});
  auto mean = pool(h, Pooling::Mean);
  CHECK(mean[0] == std::vector<float>{3, 4});
  CHECK(mean[1] == std::vector<float>{10, 20});
  std::vector<float> v{3, 4};
  l2_normalize(v);
  CHECK(v[0] == doctest::Approx(0.6));
  CHECK(v[1] == doctest::Approx(0.8));
}

TEST_CASE("bad inputs are errors that name the fault and compute nothing") {
  auto m = make_model({}, "session-bad");  // vocab 40, 24 positions, 2 token types
  Session s(m, 1);
  auto expect_error = [&](const std::vector<Sequence>& b, const std::string& needle) {
    std::string msg;
    try {
      s.run(b);
    } catch (const Error& e) {
      msg = e.what();
    }
    INFO(msg);
    CHECK(msg.find(needle) != std::string::npos);
  };
  expect_error({{{2, 5, 40, 3}, {}}}, "id 40 is outside the vocabulary");
  expect_error({{{2, -1, 3}, {}}}, "id -1 is outside the vocabulary");
  expect_error({{{2, 3}, {}}, {std::vector<int32_t>(25, 4), {}}}, "sequence 1 has 25 tokens");
  expect_error({{{2, 3}, {0, 2}}}, "token type 2");
  expect_error({{{2, 3}, {0}}}, "token type ids");
  expect_error({{{}, {}}}, "no tokens");
  expect_error({}, "empty");

  for (int bad : {-1, kMaxThreads + 1, 1 << 30}) {
    std::string msg;
    try {
      Session t(m, bad);
    } catch (const Error& e) {
      msg = e.what();
    }
    CHECK(msg.find("thread count") != std::string::npos);
  }
}

TEST_CASE("sessions over one model share one prepared state per backend and ISA level") {
  testing::TinySpec spec;
  auto m = make_model(spec, "shared");
  Session a(m, 1), b(m, 2);
  CHECK(&a.prepared() == &b.prepared());  // made once, by the first session
  SessionOptions ro;
  ro.backend = "reference";
  Session r(m, ro);
  CHECK(&r.prepared() != &a.prepared());
  CHECK(std::string(r.backend().name()) == "reference");
  // A cap set later is a different variant: prepared again, then shared too.
  const kernels::Isa prev = kernels::set_max_isa(kernels::Isa::Scalar);
  Session c(m, 1), d(m, 1);
  kernels::set_max_isa(prev);
  CHECK(&c.prepared() == &d.prepared());
  // (Unless a was made at the scalar level already: a CPU without vectors, or
  // SPINEL_ISA=scalar; then it is the same variant.)
  if (kernels::active_isa() != kernels::Isa::Scalar)
    CHECK(&c.prepared() != &a.prepared());
  else
    CHECK(&c.prepared() == &a.prepared());
  // Every session computes the same rows from the shared state.
  const auto batch = random_batch(*m, {5, 1, 9}, 11);
  const HiddenStates ha = a.run(batch);
  const std::vector<float> first(ha.data, ha.data + ha.offsets.back() * ha.width);
  const HiddenStates hb = b.run(batch);
  for (size_t i = 0; i < first.size(); ++i) REQUIRE(hb.data[i] == doctest::Approx(first[i]).epsilon(1e-5));
  // Unknown backends are named with the known ones.
  SessionOptions bad;
  bad.backend = "tpu";
  try {
    Session x(m, bad);
    FAIL("an unknown backend was accepted");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("unknown backend 'tpu'") != std::string::npos);
    CHECK(std::string(e.what()).find("reference") != std::string::npos);
  }
}

// "cuda" is a known name in every build: without -DSPINEL_CUDA=ON it names
// the configure option; with it but no device, it names the CUDA error. A
// spinel::Error either way, never an abort.
TEST_CASE("the cuda backend name: built without CUDA, or no device, is a clear error") {
  testing::TinySpec spec;
  auto m = make_model(spec, "cuda_name");
  SessionOptions o;
  o.backend = "cuda";
  const Backend* cu = find_backend("cuda");
#ifdef SPINEL_HAVE_CUDA
  REQUIRE(cu != nullptr);
  CHECK(backend_missing_reason("cuda").empty());
#else
  CHECK(cu == nullptr);
  CHECK(backend_missing_reason("cuda") ==
        "spinel was built without CUDA (configure with -DSPINEL_CUDA=ON)");
#endif
  if (cu && cu->unavailable().empty()) {
    MESSAGE("a CUDA device is present: " << cu->describe());
    Session s(m, o);
    CHECK(std::string(s.backend().name()) == "cuda");
    return;
  }
  try {
    Session x(m, o);
    FAIL("the cuda backend was accepted without CUDA or a device");
  } catch (const Error& e) {
    const std::string what = e.what();
    MESSAGE(what);
    if (!cu) {
      CHECK(what.find("spinel was built without CUDA (configure with -DSPINEL_CUDA=ON)") != std::string::npos);
    } else {
      CHECK(what.find("no CUDA device") != std::string::npos);
    }
  }
  CHECK_THROWS_AS(backend_or_fail("cuda"), Error);
}
