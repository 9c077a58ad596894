// The C API on small models: results equal the reference backend and
// independent computations, and misuse is a status with a message naming the
// argument, never a crash; the session stays usable after every bad call.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/backend.h"
#include "runtime/session.h"
#include "runtime/spnl.h"
#include "runtime/util/json.h"
#include "spinel/spinel.h"
#include "tests/unit/reference_run.h"
#include "tests/unit/tiny_model.h"

namespace {

std::string last_error() { return spinel_last_error(); }

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// The tiny model (limit 24 tokens, vocabulary 40, hidden 16), written once.
const std::string& tiny_path() {
  static const std::string path = [] {
    spinel::SpnlWriter w;
    spinel::testing::fill_tiny_model(w, {});
    const std::string p = spinel::testing::temp_dir("capi") + "/m.spnl";
    w.write(p);
    return p;
  }();
  return path;
}

// The tiny model with a classifier: [CLS] row -> Linear -> "logits" (3 wide).
struct Classifier {
  std::string path;
  std::vector<float> w, b;  // [hidden, 3], [3]
};
const Classifier& classifier() {
  static const Classifier c = [] {
    Classifier c;
    spinel::SpnlWriter w;
    spinel::testing::TinySpec spec;
    spinel::testing::fill_tiny_model(w, spec);
    const int64_t H = spec.hidden;
    w.graph.values.push_back({"cls", H, spinel::Rows::Sequences});
    spinel::Op pool;
    pool.kind = spinel::OpKind::Pool;
    pool.pool = spinel::PoolKind::Cls;
    pool.name = "classifier.pool";
    pool.in0 = w.graph.output;
    pool.out = static_cast<int32_t>(w.graph.values.size() - 1);
    w.graph.ops.push_back(pool);
    std::mt19937 rng(5);
    c.w = spinel::testing::random_floats(static_cast<size_t>(H * 3), rng, 0.8f);
    c.b = spinel::testing::random_floats(3, rng, 0.3f);
    w.graph.values.push_back({"logits", 3, spinel::Rows::Sequences});
    spinel::Op lin;
    lin.kind = spinel::OpKind::Linear;
    lin.name = "classifier";
    lin.in0 = pool.out;
    lin.w[spinel::slot::kWeight] = w.add_tensor("classifier.weight", spinel::DType::F32, {H, 3}, c.w.data(), c.w.size() * 4);
    lin.w[spinel::slot::kBias] = w.add_tensor("classifier.bias", spinel::DType::F32, {3}, c.b.data(), c.b.size() * 4);
    lin.out = static_cast<int32_t>(w.graph.values.size() - 1);
    w.graph.ops.push_back(lin);
    w.graph.outputs.push_back({"logits", lin.out});
    c.path = spinel::testing::temp_dir("capi-cls") + "/classifier.spnl";
    w.write(c.path);
    return c;
  }();
  return c;
}

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(f), {});
}

// The outputs a test compares across runs.
struct Snapshot {
  std::vector<int64_t> offsets;
  std::vector<int32_t> ids;
  std::vector<float> hidden, mean;
  bool operator==(const Snapshot& o) const {
    return offsets == o.offsets && ids == o.ids && hidden == o.hidden && mean == o.mean;
  }
};

Snapshot snapshot(spinel_result_t r) {
  Snapshot s;
  int64_t n = 0;
  const int64_t* off = nullptr;
  REQUIRE(spinel_result_sequences(r, &n, &off) == SPINEL_OK);
  s.offsets.assign(off, off + n + 1);
  const int32_t* ids = nullptr;
  int64_t tokens = 0;
  REQUIRE(spinel_result_ids(r, &ids, &tokens) == SPINEL_OK);
  s.ids.assign(ids, ids + tokens);
  const float* data = nullptr;
  int64_t rows = 0, width = 0;
  REQUIRE(spinel_result_output(r, "last_hidden_state", &data, &rows, &width) == SPINEL_OK);
  s.hidden.assign(data, data + rows * width);
  REQUIRE(spinel_result_pooled(r, "mean", 0, nullptr, 0, &rows, &width) == SPINEL_OK);
  s.mean.resize(static_cast<size_t>(rows * width));
  REQUIRE(spinel_result_pooled(r, "mean", 0, s.mean.data(), s.mean.size(), &rows, &width) == SPINEL_OK);
  return s;
}

const char* const kTexts[] = {"tok5 tok6 tok7", "tok9", "tok10 tok11 tok12 tok13 tok5"};

Snapshot run_texts(spinel_session_t s) {
  spinel_result_t r = nullptr;
  REQUIRE(spinel_session_run_texts(s, kTexts, 3, &r) == SPINEL_OK);
  const Snapshot snap = snapshot(r);
  spinel_result_free(r);
  return snap;
}

}  // namespace

TEST_CASE("C API runs a batch and reports errors") {
  const std::string path = tiny_path();
  spinel_model_t m = nullptr;
  REQUIRE(spinel_model_load(path.c_str(), &m) == SPINEL_OK);
  int64_t hidden = 0, max_tokens = 0, vocab = 0;
  REQUIRE(spinel_model_info(m, &hidden, &max_tokens, &vocab) == SPINEL_OK);
  CHECK(hidden == 16);
  CHECK(max_tokens == 24);
  CHECK(vocab == 40);

  spinel_session_t s = nullptr;
  REQUIRE(spinel_session_create(m, 2, &s) == SPINEL_OK);
  const int32_t ids[] = {2, 10, 11, 3, 2, 12, 3};
  const int64_t offsets[] = {0, 4, 7};
  std::vector<float> out(7 * 16);
  REQUIRE(spinel_session_run(s, ids, nullptr, offsets, 2, out.data(), out.size()) == SPINEL_OK);

  auto model = spinel::Model::load(path);
  const auto ref = spinel::reference_run(model, {{{2, 10, 11, 3}, {}}, {{2, 12, 3}, {}}});
  for (size_t i = 0; i < ref.size(); ++i) CHECK(out[i] == doctest::Approx(ref[i]).epsilon(1e-4));

  CHECK(spinel_session_run(s, ids, nullptr, offsets, 2, out.data(), 10) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "needs 112"));
  const int32_t bad_ids[] = {2, 99, 3};
  const int64_t bad_off[] = {0, 3};
  CHECK(spinel_session_run(s, bad_ids, nullptr, bad_off, 1, out.data(), out.size()) ==
        SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "id 99"));
  spinel_session_t s2 = nullptr;
  CHECK(spinel_session_create(m, -3, &s2) == SPINEL_INVALID_ARGUMENT);
  CHECK(s2 == nullptr);

  spinel_model_t m2 = nullptr;
  CHECK(spinel_model_load("/nonexistent/x.spnl", &m2) == SPINEL_INVALID_MODEL);
  CHECK(has(last_error(), "/nonexistent/x.spnl"));
  CHECK(spinel_model_load(nullptr, &m2) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "path is NULL"));

  spinel_session_free(s);
  spinel_model_free(m);
}

TEST_CASE("C API: versions, status names, backends") {
  CHECK(std::string(spinel_version()) == SPINEL_PROJECT_VERSION);
  CHECK(std::string(spinel_version()) == std::to_string(SPINEL_VERSION_MAJOR) + "." +
                                             std::to_string(SPINEL_VERSION_MINOR) + "." +
                                             std::to_string(SPINEL_VERSION_PATCH));
  CHECK(spinel_format_version() == static_cast<int>(spinel::kSpnlVersion));
  CHECK(std::string(spinel_status_name(SPINEL_OK)) == "SPINEL_OK");
  CHECK(std::string(spinel_status_name(SPINEL_INVALID_MODEL)) == "SPINEL_INVALID_MODEL");
  CHECK(std::string(spinel_status_name(SPINEL_OUT_OF_MEMORY)) == "SPINEL_OUT_OF_MEMORY");
  // 7: within the C++ enum's range (well-defined here), named by no status.
  CHECK(std::string(spinel_status_name(static_cast<spinel_status_t>(7))) == "unknown status");

  size_t needed = 0;
  REQUIRE(spinel_backends(nullptr, 0, &needed) == SPINEL_OK);
  std::vector<char> names(needed);
  REQUIRE(spinel_backends(names.data(), names.size(), &needed) == SPINEL_OK);
  // This build's backends: "cuda" too in a -DSPINEL_CUDA=ON build (device or not).
  CHECK(std::string(names.data()) ==
        std::string("cpu,reference") + (spinel::find_backend("cuda") ? ",cuda" : ""));
  CHECK(std::strlen(names.data()) + 1 == needed);
  char small[4] = {'x', 'x', 'x', 'x'};
  REQUIRE(spinel_backends(small, sizeof small, &needed) == SPINEL_OK);
  CHECK(std::string(small) == "cpu");  // cut short, NUL-terminated
  CHECK(spinel_backends(nullptr, 4, &needed) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "names"));
  CHECK(spinel_backends(small, 4, nullptr) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "needed is NULL"));
  // A successful call clears the message.
  REQUIRE(spinel_backends(small, 4, &needed) == SPINEL_OK);
  CHECK(last_error().empty());
}

TEST_CASE("C API: model info, outputs and the info JSON") {
  const Classifier& c = classifier();
  spinel_model_t m = nullptr;
  REQUIRE(spinel_model_load(c.path.c_str(), &m) == SPINEL_OK);
  const char* arch = nullptr;
  REQUIRE(spinel_model_architecture(m, &arch) == SPINEL_OK);
  CHECK(std::string(arch) == "bert");
  const char* pool = nullptr;
  int norm = -5;
  REQUIRE(spinel_model_default_pooling(m, &pool, &norm) == SPINEL_OK);
  CHECK(std::string(pool) == "mean");  // ModelConfig's default; the writer left it
  CHECK(norm == 0);
  int64_t count = 0;
  REQUIRE(spinel_model_num_outputs(m, &count) == SPINEL_OK);
  REQUIRE(count == 2);
  const char* name = nullptr;
  int64_t width = 0;
  int per_token = -1;
  REQUIRE(spinel_model_output(m, 0, &name, &width, &per_token) == SPINEL_OK);
  CHECK(std::string(name) == "last_hidden_state");
  CHECK(width == 16);
  CHECK(per_token == 1);
  REQUIRE(spinel_model_output(m, 1, &name, &width, &per_token) == SPINEL_OK);
  CHECK(std::string(name) == "logits");
  CHECK(width == 3);
  CHECK(per_token == 0);
  CHECK(spinel_model_output(m, 2, &name, &width, &per_token) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "index 2 is outside [0, 2)"));
  CHECK(spinel_model_output(m, -1, nullptr, nullptr, nullptr) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "index -1"));

  size_t needed = 0;
  REQUIRE(spinel_model_info_json(m, nullptr, 0, &needed) == SPINEL_OK);
  std::vector<char> buf(needed);
  REQUIRE(spinel_model_info_json(m, buf.data(), buf.size(), &needed) == SPINEL_OK);
  CHECK(std::strlen(buf.data()) + 1 == needed);
  const auto j = spinel::json::parse(buf.data(), "info");
  CHECK(j.find("architecture")->str == "bert");
  CHECK(j.find("hidden_size")->num == 16);
  CHECK(j.find("max_tokens")->num == 24);
  CHECK(j.find("vocab_size")->num == 40);
  CHECK(j.find("type_vocab_size")->num == 2);
  CHECK(j.find("num_layers")->num == 2);
  CHECK(j.find("tokenizer")->str == "wordpiece");
  CHECK(j.find("format_version")->num == spinel_format_version());
  CHECK(j.find("default_pool")->str == "mean");
  CHECK(j.find("normalize")->b == false);
  const auto& poolings = j.find("poolings")->arr;
  REQUIRE(poolings.size() == 3);
  CHECK(poolings[2].str == "logits");
  const auto& outs = j.find("outputs")->arr;
  REQUIRE(outs.size() == 2);
  CHECK(outs[1].find("name")->str == "logits");
  CHECK(outs[1].find("width")->num == 3);
  CHECK(outs[1].find("per_token")->b == false);
  // Too small: cut short, NUL-terminated, the full size reported.
  char small[8];
  REQUIRE(spinel_model_info_json(m, small, sizeof small, &needed) == SPINEL_OK);
  CHECK(std::string(small) == std::string(buf.data(), 7));
  CHECK(needed == buf.size());

  CHECK(spinel_model_architecture(nullptr, &arch) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "model is NULL"));
  CHECK(spinel_model_architecture(m, nullptr) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "name is NULL"));
  CHECK(spinel_model_num_outputs(m, nullptr) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "count is NULL"));
  CHECK(spinel_model_info_json(m, nullptr, 10, &needed) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "json"));
  CHECK(spinel_model_kernels(m, "tpu", nullptr, 0, &needed) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "unknown backend 'tpu'"));
  CHECK(has(last_error(), "cpu, reference"));
  spinel_model_free(m);
}

TEST_CASE("C API: a model from memory is copied and equals the mapped one") {
  const std::string path = tiny_path();
  std::vector<char> bytes = read_bytes(path);
  REQUIRE(bytes.size() > 128);
  // At an odd address: the model copies into an aligned buffer of its own.
  std::vector<char> shifted(bytes.size() + 1);
  std::memcpy(shifted.data() + 1, bytes.data(), bytes.size());
  spinel_model_t mem = nullptr, mapped = nullptr;
  REQUIRE(spinel_model_load_from_memory(shifted.data() + 1, bytes.size(), "shifted bytes", &mem) == SPINEL_OK);
  std::fill(shifted.begin(), shifted.end(), 0);  // the caller's buffer is no longer needed
  shifted = std::vector<char>();
  REQUIRE(spinel_model_load(path.c_str(), &mapped) == SPINEL_OK);
  spinel_session_t a = nullptr, b = nullptr;
  REQUIRE(spinel_session_create(mem, 1, &a) == SPINEL_OK);
  REQUIRE(spinel_session_create(mapped, 1, &b) == SPINEL_OK);
  CHECK(run_texts(a) == run_texts(b));

  // Damaged bytes: INVALID_MODEL naming the caller's name for them.
  std::vector<char> bad = bytes;
  bad[0] = 'X';
  spinel_model_t m = reinterpret_cast<spinel_model_t>(&bad);  // must be reset to NULL
  CHECK(spinel_model_load_from_memory(bad.data(), bad.size(), "my-model-bytes", &m) == SPINEL_INVALID_MODEL);
  CHECK(m == nullptr);
  CHECK(has(last_error(), "my-model-bytes"));
  CHECK(has(last_error(), "bad magic"));
  CHECK(spinel_model_load_from_memory(bytes.data(), 100, nullptr, &m) == SPINEL_INVALID_MODEL);
  CHECK(has(last_error(), "<memory>"));
  CHECK(spinel_model_load_from_memory(nullptr, 100, "x", &m) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "data is NULL"));
  CHECK(spinel_model_load_from_memory(bytes.data(), 0, "x", &m) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "size is 0"));
  CHECK(spinel_model_load_from_memory(bytes.data(), bytes.size(), "x", nullptr) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "model is NULL"));
#ifndef SPINEL_SANITIZED
  // More than any machine holds: a status, not an abort. (ASan aborts on such
  // a request by design, so the sanitized build leaves this one out.)
  CHECK(spinel_model_load_from_memory(bytes.data(), size_t{1} << 50, "huge", &m) == SPINEL_OUT_OF_MEMORY);
  CHECK(has(last_error(), "out of memory"));
#else
  MESSAGE("sanitized build: the out-of-memory case is left out (ASan aborts on a 1 PiB request)");
#endif
  spinel_session_free(a);
  spinel_session_free(b);
  spinel_model_free(mem);
  spinel_model_free(mapped);
}

TEST_CASE("C API: texts and ids give the reference numbers, pooled and logits checked independently") {
  const Classifier& c = classifier();
  spinel_model_t m = nullptr;
  REQUIRE(spinel_model_load(c.path.c_str(), &m) == SPINEL_OK);
  spinel_session_t s = nullptr;
  REQUIRE(spinel_session_create(m, 2, &s) == SPINEL_OK);
  spinel_result_t r = nullptr;
  REQUIRE(spinel_session_run_texts(s, kTexts, 3, &r) == SPINEL_OK);

  // The ids are the tokenizer's, with [CLS] and [SEP].
  int64_t n = 0;
  const int64_t* off = nullptr;
  REQUIRE(spinel_result_sequences(r, &n, &off) == SPINEL_OK);
  REQUIRE(n == 3);
  const int32_t* ids = nullptr;
  int64_t tokens = 0;
  REQUIRE(spinel_result_ids(r, &ids, &tokens) == SPINEL_OK);
  CHECK(tokens == off[3]);
  std::vector<spinel::Sequence> batch;
  for (int64_t i = 0; i < 3; ++i) {
    std::vector<int32_t> want(32);
    size_t count = 0;
    REQUIRE(spinel_tokenize(m, kTexts[i], 0, want.data(), want.size(), &count) == SPINEL_OK);
    want.resize(count);
    CHECK(std::vector<int32_t>(ids + off[i], ids + off[i + 1]) == want);
    batch.push_back({want, {}});
  }
  CHECK(batch[0].ids == std::vector<int32_t>{2, 5, 6, 7, 3});

  // last_hidden_state against the reference backend.
  const auto model = spinel::Model::load(c.path);
  const auto ref = spinel::reference_run(model, batch);
  const float* hidden = nullptr;
  int64_t rows = 0, width = 0;
  REQUIRE(spinel_result_output(r, "last_hidden_state", &hidden, &rows, &width) == SPINEL_OK);
  REQUIRE(rows == tokens);
  REQUIRE(width == 16);
  for (size_t i = 0; i < ref.size(); ++i) CHECK(hidden[i] == doctest::Approx(ref[i]).epsilon(1e-4));

  // Pooled vectors from the result's own hidden states, computed here.
  std::vector<float> mean(3 * 16), cls(3 * 16), mean_n(3 * 16);
  REQUIRE(spinel_result_pooled(r, "mean", 0, mean.data(), mean.size(), &rows, &width) == SPINEL_OK);
  REQUIRE(spinel_result_pooled(r, "cls", 0, cls.data(), cls.size(), &rows, &width) == SPINEL_OK);
  REQUIRE(spinel_result_pooled(r, "mean", 1, mean_n.data(), mean_n.size(), &rows, &width) == SPINEL_OK);
  CHECK(rows == 3);
  CHECK(width == 16);
  for (int64_t i = 0; i < 3; ++i) {
    double norm = 0;
    for (int64_t j = 0; j < 16; ++j) {
      double sum = 0;
      for (int64_t t = off[i]; t < off[i + 1]; ++t) sum += hidden[t * 16 + j];
      const double want = sum / double(off[i + 1] - off[i]);
      CHECK(mean[i * 16 + j] == doctest::Approx(want).epsilon(1e-6));
      CHECK(cls[i * 16 + j] == hidden[off[i] * 16 + j]);
      norm += want * want;
    }
    for (int64_t j = 0; j < 16; ++j)
      CHECK(mean_n[i * 16 + j] == doctest::Approx(mean[i * 16 + j] / std::sqrt(norm)).epsilon(1e-5));
  }
  // NULL pool = the model's default (mean, not normalized); -1 = its default.
  std::vector<float> dflt(3 * 16);
  REQUIRE(spinel_result_pooled(r, nullptr, -1, dflt.data(), dflt.size(), &rows, &width) == SPINEL_OK);
  CHECK(dflt == mean);

  // logits = W^T h[CLS] + b, from the classifier's own weights.
  const float* logits = nullptr;
  REQUIRE(spinel_result_output(r, "logits", &logits, &rows, &width) == SPINEL_OK);
  REQUIRE(rows == 3);
  REQUIRE(width == 3);
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t k = 0; k < 3; ++k) {
      double want = c.b[k];
      for (int64_t j = 0; j < 16; ++j) want += double(hidden[off[i] * 16 + j]) * c.w[j * 3 + k];
      CHECK(logits[i * 3 + k] == doctest::Approx(want).epsilon(1e-4));
    }
  std::vector<float> pl(9);
  REQUIRE(spinel_result_pooled(r, "logits", 0, pl.data(), pl.size(), &rows, &width) == SPINEL_OK);
  CHECK(std::vector<float>(logits, logits + 9) == pl);

  // The same batch as packed ids, with explicit type ids 0: the same numbers.
  std::vector<int32_t> packed(ids, ids + tokens), types(static_cast<size_t>(tokens), 0);
  spinel_result_t r2 = nullptr;
  REQUIRE(spinel_session_run_ids(s, packed.data(), types.data(), off, 3, &r2) == SPINEL_OK);
  CHECK(snapshot(r2) == snapshot(r));
  // The legacy calls read the session's last run.
  int64_t w = 0;
  std::vector<float> legacy(9);
  REQUIRE(spinel_session_pooled(s, "logits", 0, legacy.data(), legacy.size(), &w) == SPINEL_OK);
  CHECK(legacy == pl);

  // A result outlives its session and model.
  const Snapshot before = snapshot(r);
  spinel_session_free(s);
  spinel_model_free(m);
  CHECK(snapshot(r) == before);
  spinel_result_free(r);
  spinel_result_free(r2);
}

TEST_CASE("C API: every bad argument is an error naming it, and the session stays usable") {
  spinel_model_t m = nullptr;
  REQUIRE(spinel_model_load(classifier().path.c_str(), &m) == SPINEL_OK);
  spinel_session_options_t o = nullptr;
  REQUIRE(spinel_session_options_create(&o) == SPINEL_OK);
  REQUIRE(spinel_session_options_set_threads(o, 1) == SPINEL_OK);
  REQUIRE(spinel_session_options_set_max_batch(o, 3) == SPINEL_OK);
  REQUIRE(spinel_session_options_set_max_tokens(o, 20) == SPINEL_OK);
  spinel_session_t s = nullptr;
  REQUIRE(spinel_session_create_with(m, o, &s) == SPINEL_OK);
  const Snapshot good = run_texts(s);

  spinel_result_t r = nullptr;
  REQUIRE(spinel_session_run_texts(s, kTexts, 3, &r) == SPINEL_OK);
  const int32_t ids[] = {2, 5, 6, 3, 2, 7, 3};
  const int64_t off[] = {0, 4, 7};
  std::vector<int32_t> long_ids(25, 5);
  const int64_t long_off[] = {0, 25};
  std::vector<float> buf(1024);
  int64_t rows = 0, width = 0;
  const float* data = nullptr;
  spinel_result_t out = nullptr;
  const char* null_text[] = {"tok5", nullptr};
  const char* four[] = {"tok5", "tok6", "tok7", "tok8"};
  std::string over = "tok5";
  for (int i = 0; i < 9; ++i) over += " tok5";  // 10 tokens + specials, twice: over max_tokens 20
  const char* two_long[] = {over.c_str(), over.c_str()};

  struct Case {
    const char* what;
    std::function<spinel_status_t()> call;
    std::vector<std::string> message;  // each must appear
  };
  const std::vector<Case> cases = {
      {"null session", [&] { return spinel_session_run_texts(nullptr, kTexts, 3, &out); }, {"session is NULL"}},
      {"null result", [&] { return spinel_session_run_texts(s, kTexts, 3, nullptr); }, {"result is NULL"}},
      {"null texts", [&] { return spinel_session_run_texts(s, nullptr, 3, &out); }, {"texts is NULL"}},
      {"null text", [&] { return spinel_session_run_texts(s, null_text, 2, &out); }, {"texts[1] is NULL"}},
      {"no texts", [&] { return spinel_session_run_texts(s, kTexts, 0, &out); }, {"num_texts is 0"}},
      {"negative count", [&] { return spinel_session_run_texts(s, kTexts, -2, &out); }, {"num_texts is -2"}},
      {"over max_batch", [&] { return spinel_session_run_texts(s, four, 4, &out); }, {"max_batch of 3"}},
      {"over max_tokens", [&] { return spinel_session_run_texts(s, two_long, 2, &out); },
       {"24 tokens", "max_tokens of 20"}},
      {"id past the vocabulary",
       [&] {
         const int32_t bad[] = {2, 5, 40, 3};
         const int64_t o1[] = {0, 4};
         return spinel_session_run_ids(s, bad, nullptr, o1, 1, &out);
       },
       {"sequence 0, token 2", "id 40", "[0, 40)"}},
      {"negative id",
       [&] {
         const int32_t bad[] = {2, -1, 3};
         const int64_t o1[] = {0, 3};
         return spinel_session_run_ids(s, bad, nullptr, o1, 1, &out);
       },
       {"token 1", "id -1"}},
      {"type id out of range",
       [&] {
         const int32_t types[] = {0, 0, 0, 0, 0, 2, 0};
         return spinel_session_run_ids(s, ids, types, off, 2, &out);
       },
       {"sequence 1, token 1", "token type 2"}},
      {"sequence past the limit",
       [&] { return spinel_session_run_ids(s, long_ids.data(), nullptr, long_off, 1, &out); },
       {"sequence 0 has 25 tokens", "at most 24"}},
      {"decreasing offsets",
       [&] {
         const int64_t o2[] = {0, 4, 3};
         return spinel_session_run_ids(s, ids, nullptr, o2, 2, &out);
       },
       {"seq_offsets must not decrease", "seq_offsets[2] = 3"}},
      {"offsets not from 0",
       [&] {
         const int64_t o2[] = {1, 4};
         return spinel_session_run_ids(s, ids, nullptr, o2, 1, &out);
       },
       {"seq_offsets[0] must be 0"}},
      {"empty sequence",
       [&] {
         const int64_t o2[] = {0, 0, 3};
         return spinel_session_run_ids(s, ids, nullptr, o2, 2, &out);
       },
       {"sequence 0 has no tokens"}},
      {"null ids", [&] { return spinel_session_run_ids(s, nullptr, nullptr, off, 2, &out); }, {"ids is NULL"}},
      {"null offsets", [&] { return spinel_session_run_ids(s, ids, nullptr, nullptr, 2, &out); },
       {"seq_offsets is NULL"}},
      {"no sequences", [&] { return spinel_session_run_ids(s, ids, nullptr, off, 0, &out); }, {"num_seqs is 0"}},
      {"legacy run, small buffer", [&] { return spinel_session_run(s, ids, nullptr, off, 2, buf.data(), 10); },
       {"capacity", "holds 10 floats", "needs 112"}},
      {"legacy run, null buffer", [&] { return spinel_session_run(s, ids, nullptr, off, 2, nullptr, 112); },
       {"hidden is NULL"}},
      {"pooled capacity too small",
       [&] { return spinel_result_pooled(r, "mean", 0, buf.data(), 5, &rows, &width); },
       {"capacity", "holds 5 floats", "need 48"}},
      {"pooled null out", [&] { return spinel_result_pooled(r, "mean", 0, nullptr, 48, &rows, &width); },
       {"out (with capacity > 0) is NULL"}},
      {"unknown pool", [&] { return spinel_result_pooled(r, "max", 0, buf.data(), buf.size(), &rows, &width); },
       {"pool: 'max' is not available", "cls, mean, logits"}},
      {"pool none", [&] { return spinel_result_pooled(r, "none", 0, buf.data(), buf.size(), &rows, &width); },
       {"last_hidden_state"}},
      {"bad normalize", [&] { return spinel_result_pooled(r, "mean", 2, buf.data(), buf.size(), &rows, &width); },
       {"normalize is 2"}},
      {"null result (pooled)", [&] { return spinel_result_pooled(nullptr, "mean", 0, buf.data(), 48, &rows, &width); },
       {"result is NULL"}},
      {"unknown output", [&] { return spinel_result_output(r, "pooler_output", &data, &rows, &width); },
       {"no output 'pooler_output'", "last_hidden_state, logits"}},
      {"null output name", [&] { return spinel_result_output(r, nullptr, &data, &rows, &width); },
       {"name is NULL"}},
      {"null output data", [&] { return spinel_result_output(r, "logits", nullptr, &rows, &width); },
       {"data is NULL"}},
      {"null result (sequences)", [&] { return spinel_result_sequences(nullptr, &rows, nullptr); },
       {"result is NULL"}},
      {"null result (ids)", [&] { return spinel_result_ids(nullptr, nullptr, &rows); }, {"result is NULL"}},
      {"legacy pooled small", [&] { return spinel_session_pooled(s, "mean", 0, buf.data(), 3, &width); },
       {"holds 3 floats"}},
      {"legacy pooled null width", [&] { return spinel_session_pooled(s, "mean", 0, buf.data(), 48, nullptr); },
       {"width is NULL"}},
      {"tokenize null text",
       [&] {
         size_t n = 0;
         return spinel_tokenize(m, nullptr, 0, nullptr, 0, &n);
       },
       {"text is NULL"}},
      {"tokenize null ids with capacity",
       [&] {
         size_t n = 0;
         return spinel_tokenize(m, "tok5", 0, nullptr, 4, &n);
       },
       {"ids (with capacity > 0) is NULL"}},
      {"tokenize null model",
       [&] {
         size_t n = 0;
         return spinel_tokenize(nullptr, "tok5", 0, nullptr, 0, &n);
       },
       {"model is NULL"}},
      {"info null model", [&] { return spinel_model_info(nullptr, nullptr, nullptr, nullptr); }, {"model is NULL"}},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    out = reinterpret_cast<spinel_result_t>(&buf);  // must be reset to NULL
    const spinel_status_t st = c.call();
    CHECK(st == SPINEL_INVALID_ARGUMENT);
    const std::string msg = last_error();
    CAPTURE(msg);
    CHECK(msg.rfind("spinel_", 0) == 0);  // the function's name first
    for (const std::string& part : c.message) CHECK(has(msg, part));
    if (out != reinterpret_cast<spinel_result_t>(&buf)) CHECK(out == nullptr);
    // A good run afterwards gives what it gave before.
    CHECK(run_texts(s) == good);
  }
  spinel_result_free(r);
  spinel_session_free(s);
  spinel_session_options_free(o);
  spinel_model_free(m);
}

TEST_CASE("C API: session options check their values, are copied, and set limits") {
  spinel_model_t m = nullptr;
  REQUIRE(spinel_model_load(tiny_path().c_str(), &m) == SPINEL_OK);
  spinel_session_options_t o = nullptr;
  REQUIRE(spinel_session_options_create(&o) == SPINEL_OK);

  CHECK(spinel_session_options_set_threads(o, -1) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "spinel_session_options_set_threads: threads is -1"));
  CHECK(spinel_session_options_set_threads(o, 100000) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "threads is 100000"));
  CHECK(has(last_error(), "1..1024"));
  CHECK(spinel_session_options_set_backend(o, "tpu") == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "unknown backend 'tpu'"));
  CHECK(has(last_error(), "cpu, reference"));
  // "cuda" without CUDA in the build, or without a device: a status and the
  // reason, never an abort (what CI can check without a GPU).
  {
    const spinel::Backend* cu = spinel::find_backend("cuda");
    const spinel_status_t st = spinel_session_options_set_backend(o, "cuda");
    if (!cu) {
      CHECK(st == SPINEL_INVALID_ARGUMENT);
      CHECK(has(last_error(), "spinel was built without CUDA (configure with -DSPINEL_CUDA=ON)"));
    } else if (!cu->unavailable().empty()) {
      CHECK(st == SPINEL_INVALID_ARGUMENT);
      CHECK(has(last_error(), "no CUDA device"));
      MESSAGE("cuda backend: " << last_error());
    } else {
      CHECK(st == SPINEL_OK);
      REQUIRE(spinel_session_options_set_backend(o, "cpu") == SPINEL_OK);
    }
  }
  CHECK(spinel_session_options_set_isa(o, "sse9") == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "isa: unknown instruction set 'sse9'"));
  CHECK(has(last_error(), "avx512vnni, avxvnni, avx2, scalar"));
  CHECK(spinel_set_isa_cap("avx3") == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "level: unknown instruction set 'avx3'"));
  CHECK(spinel_set_isa_cap(nullptr) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "level is NULL"));
  CHECK(spinel_session_options_set_max_batch(o, -1) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "max_batch is -1"));
  CHECK(spinel_session_options_set_max_tokens(o, -7) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "max_tokens is -7"));
  CHECK(spinel_session_options_set_threads(nullptr, 1) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "options is NULL"));
  CHECK(spinel_session_options_create(nullptr) == SPINEL_INVALID_ARGUMENT);
  spinel_session_t s = nullptr;
  CHECK(spinel_session_create_with(nullptr, o, &s) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "model is NULL"));
  CHECK(spinel_session_create_with(m, o, nullptr) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "session is NULL"));
  CHECK(spinel_session_create_on(m, 1, "tpu", &s) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "cpu, reference"));
  // Session create with "cuda": without CUDA in the build or without a
  // device, a status and the reason (what CI can check without a GPU).
  if (!spinel::find_backend("cuda")) {
    CHECK(spinel_session_create_on(m, 1, "cuda", &s) == SPINEL_INVALID_ARGUMENT);
    CHECK(has(last_error(), "spinel was built without CUDA (configure with -DSPINEL_CUDA=ON)"));
  } else if (!spinel::find_backend("cuda")->unavailable().empty()) {
    CHECK(spinel_session_create_on(m, 1, "cuda", &s) == SPINEL_INVALID_ARGUMENT);
    CHECK(has(last_error(), "no CUDA device"));
  }
  CHECK(s == nullptr);
  CHECK(spinel_session_create(m, 100000, &s) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "threads is 100000"));
  CHECK(s == nullptr);

  // A rejected value leaves the option as it was: max_batch 2 stays.
  REQUIRE(spinel_session_options_set_max_batch(o, 2) == SPINEL_OK);
  CHECK(spinel_session_options_set_max_batch(o, -3) == SPINEL_INVALID_ARGUMENT);
  REQUIRE(spinel_session_options_set_threads(o, 1) == SPINEL_OK);
  REQUIRE(spinel_session_create_with(m, o, &s) == SPINEL_OK);
  // Copied at creation: changing the options later does not reach the session.
  REQUIRE(spinel_session_options_set_max_batch(o, 1) == SPINEL_OK);
  spinel_result_t r = nullptr;
  CHECK(spinel_session_run_texts(s, kTexts, 2, &r) == SPINEL_OK);
  spinel_result_free(r);
  r = nullptr;
  CHECK(spinel_session_run_texts(s, kTexts, 3, &r) == SPINEL_INVALID_ARGUMENT);
  CHECK(has(last_error(), "num_texts is 3, more than this session's max_batch of 2"));
  spinel_session_free(s);
  // The options object is freed independently of the sessions made from it.
  spinel_session_options_free(o);

  // The reference backend through the options: the same numbers within rounding.
  REQUIRE(spinel_session_options_create(&o) == SPINEL_OK);
  REQUIRE(spinel_session_options_set_backend(o, "reference") == SPINEL_OK);
  spinel_session_t ref = nullptr, cpu = nullptr;
  REQUIRE(spinel_session_create_with(m, o, &ref) == SPINEL_OK);
  REQUIRE(spinel_session_create_with(m, nullptr, &cpu) == SPINEL_OK);
  const Snapshot a = run_texts(ref), b = run_texts(cpu);
  REQUIRE(a.hidden.size() == b.hidden.size());
  for (size_t i = 0; i < a.hidden.size(); ++i) CHECK(a.hidden[i] == doctest::Approx(b.hidden[i]).epsilon(1e-4));
  spinel_session_free(ref);
  spinel_session_free(cpu);
  spinel_session_options_free(o);
  spinel_model_free(m);
}

TEST_CASE("C API: the ISA cap is process-wide and shows in the kernel report") {
  spinel_model_t m = nullptr;
  REQUIRE(spinel_model_load(tiny_path().c_str(), &m) == SPINEL_OK);
  auto report = [&] {
    size_t needed = 0;
    REQUIRE(spinel_model_kernels(m, nullptr, nullptr, 0, &needed) == SPINEL_OK);
    std::vector<char> buf(needed);
    REQUIRE(spinel_model_kernels(m, nullptr, buf.data(), buf.size(), &needed) == SPINEL_OK);
    return spinel::json::parse(buf.data(), "kernels");
  };
  const std::vector<std::string> levels = {"scalar", "avx2", "avxvnni", "avx512vnni"};
  auto rank = [&](const std::string& l) { return std::find(levels.begin(), levels.end(), l) - levels.begin(); };
  const std::string before = report().find("cpu")->find("active_isa")->str;

  spinel_session_options_t o = nullptr;
  REQUIRE(spinel_session_options_create(&o) == SPINEL_OK);
  REQUIRE(spinel_session_options_set_isa(o, "scalar") == SPINEL_OK);
  REQUIRE(spinel_session_options_set_threads(o, 1) == SPINEL_OK);
  spinel_session_t s = nullptr, plain = nullptr;
  REQUIRE(spinel_session_create_with(m, o, &s) == SPINEL_OK);
  CHECK(report().find("cpu")->find("active_isa")->str == "scalar");
  // Process-wide: a session made without the option runs capped too.
  REQUIRE(spinel_session_create(m, 1, &plain) == SPINEL_OK);
  CHECK(report().find("cpu")->find("active_isa")->str == "scalar");
  const Snapshot low = run_texts(plain);
  REQUIRE(spinel_set_isa_cap("avx2") == SPINEL_OK);
  // `before` is the detected level, lowered by SPINEL_ISA if set.
  const std::string want = levels[static_cast<size_t>(std::min(rank("avx2"), rank(before)))];
  CHECK(report().find("cpu")->find("active_isa")->str == want);
  // Back to the level of the start (SPINEL_ISA in the environment still applies).
  REQUIRE(spinel_set_isa_cap("avx512vnni") == SPINEL_OK);
  CHECK(report().find("cpu")->find("active_isa")->str == before);
  spinel_session_t high = nullptr;
  REQUIRE(spinel_session_create(m, 1, &high) == SPINEL_OK);
  const Snapshot best = run_texts(high);
  REQUIRE(low.hidden.size() == best.hidden.size());
  for (size_t i = 0; i < low.hidden.size(); ++i) CHECK(low.hidden[i] == doctest::Approx(best.hidden[i]).epsilon(1e-4));
  spinel_session_free(s);
  spinel_session_free(plain);
  spinel_session_free(high);
  spinel_session_options_free(o);
  spinel_model_free(m);
}

TEST_CASE("C API: one model, sessions on two threads, results as when run alone") {
  spinel_model_t m = nullptr;
  REQUIRE(spinel_model_load(classifier().path.c_str(), &m) == SPINEL_OK);
  spinel_session_t alone = nullptr;
  REQUIRE(spinel_session_create(m, 1, &alone) == SPINEL_OK);
  const Snapshot want = run_texts(alone);
  spinel_session_free(alone);
  Snapshot got[2];
  bool ok[2] = {false, false};
  std::string errors[2];
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&, t] {
      spinel_session_t s = nullptr;
      if (spinel_session_create(m, 1, &s) != SPINEL_OK) {
        errors[t] = spinel_last_error();
        return;
      }
      // A bad call on this thread leaves its message here, not on the other.
      spinel_result_t r = nullptr;
      const bool bad = spinel_session_run_texts(s, kTexts, 0, &r) == SPINEL_INVALID_ARGUMENT;
      errors[t] = spinel_last_error();
      for (int i = 0; i < 20; ++i) {
        if (spinel_session_run_texts(s, kTexts, 3, &r) != SPINEL_OK) break;
        int64_t n = 0;
        const int64_t* off = nullptr;
        const int32_t* ids = nullptr;
        int64_t tokens = 0, rows = 0, width = 0;
        const float* data = nullptr;
        spinel_result_sequences(r, &n, &off);
        spinel_result_ids(r, &ids, &tokens);
        spinel_result_output(r, "last_hidden_state", &data, &rows, &width);
        got[t].offsets.assign(off, off + n + 1);
        got[t].ids.assign(ids, ids + tokens);
        got[t].hidden.assign(data, data + rows * width);
        spinel_result_pooled(r, "mean", 0, nullptr, 0, &rows, &width);
        got[t].mean.resize(static_cast<size_t>(rows * width));
        spinel_result_pooled(r, "mean", 0, got[t].mean.data(), got[t].mean.size(), &rows, &width);
        spinel_result_free(r);
        ok[t] = bad && got[t] == want;
        if (!ok[t]) break;
      }
      spinel_session_free(s);
    });
  for (auto& t : threads) t.join();
  for (int t = 0; t < 2; ++t) {
    CAPTURE(t);
    CHECK(ok[t]);
    CHECK(has(errors[t], "num_texts is 0"));
  }
  spinel_model_free(m);
}
