// The C API on a small model: results equal the C++ session, and misuse is a
// status with a message, never a crash.
#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "runtime/session.h"
#include "tests/unit/reference_run.h"
#include "spinel/spinel.h"
#include "tests/unit/tiny_model.h"

TEST_CASE("C API runs a batch and reports errors") {
  spinel::SpnlWriter w;
  spinel::testing::fill_tiny_model(w, {});
  const std::string path = spinel::testing::temp_dir("capi") + "/m.spnl";
  w.write(path);

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
  CHECK(std::string(spinel_last_error()).find("needs 112") != std::string::npos);
  const int32_t bad_ids[] = {2, 99, 3};
  const int64_t bad_off[] = {0, 3};
  CHECK(spinel_session_run(s, bad_ids, nullptr, bad_off, 1, out.data(), out.size()) ==
        SPINEL_INVALID_ARGUMENT);
  CHECK(std::string(spinel_last_error()).find("id 99") != std::string::npos);
  spinel_session_t s2 = nullptr;
  CHECK(spinel_session_create(m, -3, &s2) == SPINEL_INVALID_ARGUMENT);
  CHECK(s2 == nullptr);

  spinel_model_t m2 = nullptr;
  CHECK(spinel_model_load("/nonexistent/x.spnl", &m2) == SPINEL_INVALID_MODEL);
  CHECK(std::string(spinel_last_error()).find("/nonexistent/x.spnl") != std::string::npos);
  CHECK(spinel_model_load(nullptr, &m2) == SPINEL_INVALID_ARGUMENT);

  spinel_session_free(s);
  spinel_model_free(m);
}
