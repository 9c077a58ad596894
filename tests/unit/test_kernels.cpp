// FP32 CPU kernels against their plain references (kernels/cpu/ops.h).
//
// Tolerances (stated once, used below): a value v is accepted against the
// reference r when |v - r| <= rtol * |r| + atol, with
//   layernorm / embedding:  rtol 1e-5, atol 1e-5   (outputs are O(1))
//   attention:              rtol 1e-5, atol 1e-5   (averages of V in [-1, 1])
//   GELU (our kernels):     rtol 1e-5, atol 1e-6 * |x| + 1e-30
//   linear (oneDNN):        rtol 1e-5, atol 2e-6 * sqrt(K)  (x, W, b in [-1, 1];
//                           float dot products of K terms round by ~sqrt(K) ulp)
// The references accumulate in double. Inputs come from a seeded mt19937.
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <tbb/task_arena.h>

#include "kernels/cpu/f32_isa.h"
#include "kernels/cpu/isa.h"
#include "kernels/reference/reference.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/dnnl_engine.h"
#include "kernels/cpu/parallel_util.h"

namespace k = spinel::kernels;
namespace f32 = spinel::kernels::f32;
using spinel::Activation;

namespace {

std::vector<float> random_vec(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(g);
  return v;
}

struct Mismatch {
  size_t count = 0;
  size_t first = 0;
  double worst = 0;  // largest |v - r| / (rtol |r| + atol)
};

Mismatch compare(const std::vector<float>& got, const std::vector<float>& want, double rtol,
                 double atol) {
  // No doctest assertion here: this also runs on plain std::threads.
  Mismatch m;
  if (got.size() != want.size()) {
    m.count = want.size() + 1;
    return m;
  }
  for (size_t i = 0; i < got.size(); ++i) {
    const double r = want[i], v = got[i];
    const double allowed = rtol * std::fabs(r) + atol;
    const double err = std::fabs(v - r);
    const double ratio = err / allowed;
    if (!(err <= allowed)) {  // also catches NaN
      if (m.count++ == 0) m.first = i;
    }
    if (ratio > m.worst || std::isnan(ratio)) m.worst = ratio;
  }
  return m;
}

#define CHECK_CLOSE(got, want, rtol, atol, what)                                    \
  do {                                                                              \
    const Mismatch mm_ = compare(got, want, rtol, atol);                            \
    INFO(what << ": " << mm_.count << " of " << (want).size()                       \
              << " outside tolerance, first at " << mm_.first << " (got "           \
              << ((want).empty() ? 0.f : (got)[mm_.first]) << " want "             \
              << ((want).empty() ? 0.f : (want)[mm_.first]) << "), worst/allowed " \
              << mm_.worst);                                                        \
    CHECK(mm_.count == 0);                                                          \
  } while (0)

// Runs fn inside an arena of n threads, with oneDNN's OpenMP budget matched,
// the way a session does.
template <class F>
void in_arena(int threads, F&& fn) {
  omp_set_num_threads(threads);
  tbb::task_arena arena(threads);
  arena.execute(fn);
}

// Every ISA build this CPU runs, so each path is checked here regardless of
// which one kernel_table() picked.
std::vector<const f32::KernelTable*> runnable_tables() {
  std::vector<const f32::KernelTable*> t;
  for (const char* name : {"scalar", "avx2", "avx512"})
    if (const auto* table = f32::kernel_table_for(name)) t.push_back(table);
  return t;
}

std::vector<int64_t> offsets_of(const std::vector<int64_t>& lens) {
  std::vector<int64_t> off{0};
  for (int64_t l : lens) off.push_back(off.back() + l);
  return off;
}

std::string lens_str(const std::vector<int64_t>& lens) {
  std::string s;
  for (int64_t l : lens) s += std::to_string(l) + ",";
  return s;
}

}  // namespace

// ---------------------------------------------------------------- GELU ----

TEST_CASE("gelu reference matches the formulas at known points") {
  CHECK(k::ref::gelu_erf(0.f) == 0.f);
  CHECK(k::ref::gelu_erf(1.f) == doctest::Approx(0.8413447461).epsilon(1e-7));
  CHECK(k::ref::gelu_erf(-1.f) == doctest::Approx(-0.1586552539).epsilon(1e-7));
  CHECK(k::ref::gelu_tanh(1.f) == doctest::Approx(0.8411919906).epsilon(1e-7));
  CHECK(k::ref::gelu_tanh(-2.f) == doctest::Approx(-0.0454023).epsilon(1e-5));
}

TEST_CASE("gelu kernels match the reference over the whole input range") {
  // A dense grid over [-12, 12] plus wide random values and extremes.
  std::vector<float> x;
  for (int i = -120000; i <= 120000; ++i) x.push_back(static_cast<float>(i) * 1e-4f);
  auto wide = random_vec(5001, 7, -1e4f, 1e4f);
  x.insert(x.end(), wide.begin(), wide.end());
  for (float v : {0.f, -0.f, 1e-30f, -1e-30f, 1e-8f, -1e-8f, 30.f, -30.f, 100.f, -100.f, 3e38f,
                  -3e38f})
    x.push_back(v);

  std::vector<double> exact_erf(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    exact_erf[i] = 0.5 * double(x[i]) * std::erfc(-double(x[i]) / std::sqrt(2.0));
  std::vector<float> want_erf(x.size()), want_tanh(x.size()), atol_ok(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    want_erf[i] = k::ref::gelu_erf(x[i]);
    want_tanh[i] = k::ref::gelu_tanh(x[i]);
  }
  auto check = [&](const char* what, void (*erf_fn)(float*, int64_t),
                   void (*tanh_fn)(float*, int64_t)) {
    std::vector<float> a = x, b = x;
    erf_fn(a.data(), static_cast<int64_t>(a.size()));
    tanh_fn(b.data(), static_cast<int64_t>(b.size()));
    size_t bad_erf = 0, bad_tanh = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double atol = 1e-6 * std::fabs(x[i]) + 1e-30;
      if (!(std::fabs(a[i] - want_erf[i]) <= 1e-5 * std::fabs(want_erf[i]) + atol)) {
        if (bad_erf++ < 3) MESSAGE(what << " erf x=" << x[i] << " got " << a[i] << " want " << want_erf[i]);
      }
      if (!(std::fabs(b[i] - want_tanh[i]) <= 1e-5 * std::fabs(want_tanh[i]) + atol)) {
        if (bad_tanh++ < 3) MESSAGE(what << " tanh x=" << x[i] << " got " << b[i] << " want " << want_tanh[i]);
      }
    }
    // Tighter, on every input: |error| <= 3e-7 max(1, |x|) against GELU in
    // double (measured over every float in [-12, 12]: 2.4e-7 with FMA, 2.9e-7
    // on SSE2 without it; see gelu_erf_v in kernels/cpu/f32_body.inc).
    double worst_erf = 0;
    float worst_at = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double e = std::fabs(a[i] - exact_erf[i]) / std::max(1.0, std::fabs(double(x[i])));
      if (e > worst_erf) worst_erf = e, worst_at = x[i];
    }
    const std::string who = what;  // INFO would print a const char* as a pointer
    INFO(who << ": worst erf error " << worst_erf << " max(1, |x|) at x=" << worst_at);
    CHECK(bad_erf == 0);
    CHECK(bad_tanh == 0);
    CHECK(worst_erf <= 3e-7);
    // NaN stays NaN; the infinities give their limits (-inf: GELU(-5.4) ~ -2e-7).
    float special[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                       -std::numeric_limits<float>::infinity()};
    erf_fn(special, 3);
    CHECK(std::isnan(special[0]));
    CHECK(special[1] == std::numeric_limits<float>::infinity());
    CHECK((special[2] <= 0.f && special[2] >= -1e-6f));
  };
  for (const auto* t : runnable_tables()) check(t->name, t->gelu_erf, t->gelu_tanh);
  for (int threads : {1, 2})
    in_arena(threads, [&] { check("public", k::gelu_erf_f32, k::gelu_tanh_f32); });

  // Odd lengths and an empty one must touch exactly [0, n).
  for (int64_t n : {0, 1, 3, 17, 33, 100003}) {
    auto v = random_vec(static_cast<size_t>(n) + 1, 3, -4.f, 4.f);
    const float sentinel = v[static_cast<size_t>(n)];
    k::gelu_erf_f32(v.data(), n);
    CHECK(v[static_cast<size_t>(n)] == sentinel);
  }
}

// The coarse GELU (gelu_erf_q, for values quantized to 8 bits next): within
// 2e-5 max(1, |x|) of GELU in double on every table (tools/fit_gelu_erf.py
// --poly: 1.3e-5 for Phi on [-4.25, 4.25], Phi(-4.25) = 1.1e-5 outside), and
// the exact form's behaviour at the edges.
TEST_CASE("coarse gelu stays within 2e-5 max(1, |x|) of GELU over the whole input range") {
  std::vector<float> x;
  for (int i = -120000; i <= 120000; ++i) x.push_back(static_cast<float>(i) * 1e-4f);
  auto wide = random_vec(5001, 8, -1e4f, 1e4f);
  x.insert(x.end(), wide.begin(), wide.end());
  for (float v : {0.f, -0.f, 1e-30f, -1e-30f, 4.25f, -4.25f, 30.f, -30.f, 3e38f, -3e38f}) x.push_back(v);
  for (const auto* t : runnable_tables()) {
    std::vector<float> a = x;
    t->gelu_erf_q(a.data(), static_cast<int64_t>(a.size()));
    double worst = 0;
    float worst_at = 0;
    size_t wrong_sign = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double exact = 0.5 * double(x[i]) * std::erfc(-double(x[i]) / std::sqrt(2.0));
      const double e = std::fabs(a[i] - exact) / std::max(1.0, std::fabs(double(x[i])));
      if (!(e <= worst)) worst = e, worst_at = x[i];  // a NaN becomes the worst
      wrong_sign += x[i] > 0 ? a[i] < 0 : a[i] > 0;
    }
    const std::string who = t->name;
    INFO(who << ": worst coarse GELU error " << worst << " max(1, |x|) at x=" << worst_at);
    CHECK(worst <= 2e-5);
    CHECK(worst > 1e-7);  // it is the polynomial, not the exact form
    CHECK(wrong_sign == 0);
    float special[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                       -std::numeric_limits<float>::infinity()};
    t->gelu_erf_q(special, 3);
    CHECK(std::isnan(special[0]));
    CHECK(special[1] == std::numeric_limits<float>::infinity());
    CHECK((special[2] <= 0.f && special[2] >= -1e-4f));
    // Odd lengths touch exactly [0, n).
    for (int64_t n : {0, 1, 3, 17, 33, 1001}) {
      auto v = random_vec(static_cast<size_t>(n) + 1, 4, -6.f, 6.f);
      const float sentinel = v[static_cast<size_t>(n)];
      t->gelu_erf_q(v.data(), n);
      CHECK(v[static_cast<size_t>(n)] == sentinel);
    }
  }
}

// ----------------------------------------------------------- LayerNorm ----

TEST_CASE("layernorm matches the reference, with and without residual, aliased or not") {
  const int64_t rows_list[] = {1, 2, 3, 17, 64, 129, 385};
  const int64_t cols_list[] = {1, 7, 31, 37, 384, 768, 1001};
  const float eps = 1e-12f;
  for (int threads : {1, 2}) {
    in_arena(threads, [&] {
      for (int64_t rows : rows_list)
        for (int64_t cols : cols_list) {
          const size_t n = static_cast<size_t>(rows * cols);
          // Offset the input so mean subtraction matters.
          auto x = random_vec(n, 11, 2.f, 4.f);
          auto res = random_vec(n, 12);
          auto gamma = random_vec(static_cast<size_t>(cols), 13, 0.5f, 1.5f);
          auto beta = random_vec(static_cast<size_t>(cols), 14);
          for (bool with_res : {false, true})
            for (bool alias : {false, true}) {
              const float* r = with_res ? res.data() : nullptr;
              std::vector<float> want(n);
              k::ref::layernorm_f32(x.data(), r, gamma.data(), beta.data(), eps, rows, cols,
                                    want.data());
              std::vector<float> got = x;
              std::vector<float> y(n, std::nanf(""));
              float* dst = alias ? got.data() : y.data();
              k::layernorm_f32(got.data(), r, gamma.data(), beta.data(), eps, rows, cols, dst);
              CHECK_CLOSE(alias ? got : y, want, 1e-5, 1e-5,
                          "threads=" << threads << " rows=" << rows << " cols=" << cols
                                     << " residual=" << with_res << " alias=" << alias);
            }
        }
    });
  }
}

TEST_CASE("layernorm rows of every ISA build match the reference") {
  for (const auto* t : runnable_tables())
    for (int64_t cols : {1, 5, 16, 17, 63, 768, 1025}) {
      const int64_t rows = 5;
      const size_t n = static_cast<size_t>(rows * cols);
      auto x = random_vec(n, 21, -3.f, 5.f);
      auto res = random_vec(n, 22);
      auto gamma = random_vec(static_cast<size_t>(cols), 23);
      auto beta = random_vec(static_cast<size_t>(cols), 24);
      for (bool with_res : {false, true}) {
        const float* r = with_res ? res.data() : nullptr;
        std::vector<float> want(n), got(n);
        k::ref::layernorm_f32(x.data(), r, gamma.data(), beta.data(), 1e-5f, rows, cols,
                              want.data());
        t->layernorm_rows(x.data(), r, gamma.data(), beta.data(), 1e-5f, rows, cols, got.data());
        CHECK_CLOSE(got, want, 1e-5, 1e-5,
                    t->name << " cols=" << cols << " residual=" << with_res);
      }
    }
}

TEST_CASE("layernorm of a constant row gives beta") {
  const int64_t cols = 37;
  std::vector<float> x(cols, 3.25f), gamma(cols, 2.f), y(cols);
  auto beta = random_vec(cols, 5);
  k::layernorm_f32(x.data(), nullptr, gamma.data(), beta.data(), 1e-12f, 1, cols, y.data());
  for (int64_t c = 0; c < cols; ++c) CHECK(y[c] == doctest::Approx(beta[c]).epsilon(1e-6));
}

// ----------------------------------------------------------- Embedding ----

TEST_CASE("embedding matches the reference") {
  const int64_t vocab = 53, max_pos = 400, types = 2;
  for (int threads : {1, 2})
    in_arena(threads, [&] {
      for (int64_t hidden : {1, 13, 37, 384, 768})
        for (int64_t tokens : {1, 2, 3, 17, 64, 129, 385}) {
          auto word = random_vec(static_cast<size_t>(vocab * hidden), 31);
          auto pos = random_vec(static_cast<size_t>(max_pos * hidden), 32);
          auto type = random_vec(static_cast<size_t>(types * hidden), 33);
          auto gamma = random_vec(static_cast<size_t>(hidden), 34, 0.5f, 1.5f);
          auto beta = random_vec(static_cast<size_t>(hidden), 35);
          std::mt19937 g(36);
          std::vector<int32_t> ids(tokens), tids(tokens), positions(tokens);
          for (int64_t t = 0; t < tokens; ++t) {
            ids[t] = static_cast<int32_t>(g() % vocab);
            tids[t] = static_cast<int32_t>(g() % types);
            positions[t] = static_cast<int32_t>(g() % max_pos);
          }
          // (pos table, positions, type table, type ids) variants.
          struct Variant {
            bool pos, positions, type, type_ids;
          };
          for (Variant v : {Variant{true, true, true, true}, Variant{true, false, true, false},
                            Variant{false, false, false, false},
                            Variant{false, false, true, true}}) {
            const size_t n = static_cast<size_t>(tokens * hidden);
            std::vector<float> want(n), got(n, std::nanf(""));
            const int32_t* tp = v.type_ids ? tids.data() : nullptr;
            const int32_t* pp = v.positions ? positions.data() : nullptr;
            const float* pt = v.pos ? pos.data() : nullptr;
            const float* tt = v.type ? type.data() : nullptr;
            k::ref::embedding_f32(ids.data(), tp, pp, tokens, hidden, word.data(), pt, tt,
                                  gamma.data(), beta.data(), 1e-12f, want.data());
            k::embedding_f32(ids.data(), tp, pp, tokens, hidden, word.data(), pt, tt,
                             gamma.data(), beta.data(), 1e-12f, got.data());
            CHECK_CLOSE(got, want, 1e-5, 1e-5,
                        "threads=" << threads << " hidden=" << hidden << " tokens=" << tokens
                                   << " pos=" << v.pos << " positions=" << v.positions
                                   << " type=" << v.type << " type_ids=" << v.type_ids);
          }
        }
    });
}

// ----------------------------------------------------------- Attention ----

namespace {

struct AttnShape {
  std::vector<int64_t> lens;
  int64_t heads, head_dim;
};

const std::vector<AttnShape>& attention_shapes() {
  static const std::vector<AttnShape> shapes = {
      {{1}, 1, 32},          {{2}, 2, 64},           {{3}, 3, 33},
      {{17}, 2, 64},         {{64}, 4, 32},          {{129}, 2, 64},
      {{385}, 2, 64},        {{1, 17, 64, 3}, 3, 7}, {{5, 1, 129, 2, 1}, 2, 32},
      {{16, 48, 100}, 12, 64}, {{33, 1}, 5, 1},      {{70, 7}, 2, 17},
      {{200}, 1, 65},        {{5, 20, 9}, 4, 32},  // one token block of 4 heads: split by heads on 2 threads
  };
  return shapes;
}

}  // namespace

TEST_CASE("attention matches the reference on packed variable-length batches") {
  for (int threads : {1, 2})
    in_arena(threads, [&] {
      for (const auto& sh : attention_shapes()) {
        const auto off = offsets_of(sh.lens);
        const int64_t T = off.back(), H = sh.heads * sh.head_dim;
        const int64_t max_len = *std::max_element(sh.lens.begin(), sh.lens.end());
        auto qkv = random_vec(static_cast<size_t>(T * 3 * H), 41);
        const float scale = 1.0f / std::sqrt(static_cast<float>(sh.head_dim));
        std::vector<float> want(static_cast<size_t>(T * H));
        k::ref::attention_f32(qkv.data(), off.data(), static_cast<int64_t>(sh.lens.size()),
                              sh.heads, sh.head_dim, scale, want.data());

        // Scratch pre-filled with NaN (must not be read before written) and
        // followed by guard values (must not be written).
        const size_t scratch_n = k::attention_scratch_floats(max_len, sh.heads, sh.head_dim);
        const size_t guard = 64;
        std::vector<float> scratch(scratch_n + guard, std::nanf(""));
        for (size_t i = scratch_n; i < scratch.size(); ++i) scratch[i] = 12345.f;
        std::vector<float> got(want.size(), std::nanf(""));
        k::attention_f32(qkv.data(), off.data(), static_cast<int64_t>(sh.lens.size()), sh.heads,
                         sh.head_dim, scale, got.data(), scratch.data());
        CHECK_CLOSE(got, want, 1e-5, 1e-5,
                    "threads=" << threads << " lens=" << lens_str(sh.lens)
                               << " heads=" << sh.heads << " head_dim=" << sh.head_dim);
        bool guard_intact = true;
        for (size_t i = scratch_n; i < scratch.size(); ++i) guard_intact &= scratch[i] == 12345.f;
        CHECK(guard_intact);
      }
    });
}

namespace {
// x rounded to BF16 (nearest even; x finite), as its 16 bits.
uint16_t bf16_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// BF16 head panels [3 heads][T][hd] (16-bit elements) with K's panels as
// pair words (QEpilogue::k_pairs: word (p, t) = (k[t][2p], k[t][2p + 1]))
// and, with v, V's as pair words of two tokens (QEpilogue::v_pairs: word
// (g, d) = (v[2g][d], v[2g + 1][d]); T even).
std::vector<uint16_t> bf16_panels_as_pairs(const std::vector<uint16_t>& pan_h, int64_t heads, int64_t T,
                                           int64_t hd, bool v) {
  std::vector<uint16_t> out = pan_h;
  for (int64_t h = 0; h < heads; ++h) {
    const int64_t base = (heads + h) * T * hd;  // K's panel of head h
    for (int64_t t = 0; t < T; ++t)
      for (int64_t p = 0; p < hd / 2; ++p)
        for (int64_t half = 0; half < 2; ++half)
          out[static_cast<size_t>(base + 2 * (p * T + t) + half)] =
              pan_h[static_cast<size_t>(base + t * hd + 2 * p + half)];
  }
  for (int64_t h = 0; h < heads && v; ++h) {
    const int64_t base = (2 * heads + h) * T * hd;  // V's panel of head h
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < hd; ++d)
        out[static_cast<size_t>(base + 2 * ((t / 2) * hd + d) + t % 2)] = pan_h[static_cast<size_t>(base + t * hd + d)];
  }
  return out;
}

// The BF16 attention kinds this CPU runs.
std::vector<k::AttentionProducts> bf16_kinds_here() {
  std::vector<k::AttentionProducts> kinds;
  if (k::cpu_has_amx_bf16()) kinds.push_back(k::AttentionProducts::AmxBf16);
  if (k::cpu_has_avx512_bf16()) kinds.push_back(k::AttentionProducts::Avx512Bf16);
  return kinds;
}
}  // namespace

TEST_CASE("attention from head panels gives the token-row layout's bits, every kind this CPU has") {
  std::vector<k::AttentionProducts> kinds = bf16_kinds_here();
  kinds.insert(kinds.begin(), k::AttentionProducts::F32);
  for (const auto kind : kinds)
    for (int threads : {1, 2})
      in_arena(threads, [&] {
        for (const auto& sh : attention_shapes()) {
          const auto off = offsets_of(sh.lens);
          const int64_t T = off.back(), hd = sh.head_dim, H = sh.heads * hd;
          const auto nseq = static_cast<int64_t>(sh.lens.size());
          const int64_t max_len = *std::max_element(sh.lens.begin(), sh.lens.end());
          const auto qkv = random_vec(static_cast<size_t>(T * 3 * H), 44);
          // The same values in [3 H][T][hd]: column c of token t at panel c / hd.
          std::vector<float> pan(qkv.size());
          for (int64_t t = 0; t < T; ++t)
            for (int64_t c = 0; c < 3 * H; ++c)
              pan[static_cast<size_t>((c / hd) * T * hd + t * hd + c % hd)] = qkv[static_cast<size_t>(t * 3 * H + c)];
          std::vector<float> slopes(static_cast<size_t>(sh.heads));
          for (int64_t h = 0; h < sh.heads; ++h) slopes[static_cast<size_t>(h)] = 0.05f * float(h + 1);
          for (const float* alibi : {static_cast<const float*>(nullptr), static_cast<const float*>(slopes.data())}) {
            std::vector<float> scratch(k::attention_scratch_floats(max_len, sh.heads, hd));
            std::vector<float> rows_out(static_cast<size_t>(T * H), std::nanf(""));
            std::vector<float> pan_out(rows_out.size(), std::nanf(""));
            k::attention_f32(qkv.data(), off.data(), nseq, sh.heads, hd, 0.125f, rows_out.data(),
                             scratch.data(), alibi, kind, false);
            k::attention_f32(pan.data(), off.data(), nseq, sh.heads, hd, 0.125f, pan_out.data(),
                             scratch.data(), alibi, kind, true);
            CAPTURE(k::attention_products_name(kind));
            CAPTURE(threads);
            CAPTURE(lens_str(sh.lens));
            CAPTURE(hd);
            CAPTURE(alibi != nullptr);
            CHECK(std::memcmp(rows_out.data(), pan_out.data(), rows_out.size() * sizeof(float)) == 0);
            bool finite = true;
            for (float v : pan_out) finite &= std::isfinite(v);
            CHECK(finite);
            if (kind == k::AttentionProducts::F32) continue;
            // The panels as BF16 (qkv_bf16, as the sparse Linear writes them
            // with QEpilogue::out_bf16): the same bits again.
            std::vector<uint16_t> pan_h(pan.size());
            for (size_t i = 0; i < pan.size(); ++i) pan_h[i] = bf16_bits(pan[i]);
            std::vector<float> pan_h_out(rows_out.size(), std::nanf(""));
            k::attention_f32(reinterpret_cast<const float*>(pan_h.data()), off.data(), nseq, sh.heads, hd, 0.125f,
                             pan_h_out.data(), scratch.data(), alibi, kind, true, true);
            CHECK(std::memcmp(rows_out.data(), pan_h_out.data(), rows_out.size() * sizeof(float)) == 0);
            // K's panels as pair words (k_pairs, QEpilogue::k_pairs): the BF16
            // blocks multiply them in place; the same bits again. Heads not a
            // multiple of 32 wide refused.
            const bool pairs_ok = hd % 32 == 0;
            const std::vector<uint16_t> pan_k2 = bf16_panels_as_pairs(pan_h, sh.heads, T, hd, false);
            std::vector<float> k2_out(rows_out.size(), std::nanf(""));
            auto with_pairs = [&] {
              k::attention_f32(reinterpret_cast<const float*>(pan_k2.data()), off.data(), nseq, sh.heads, hd, 0.125f,
                               k2_out.data(), scratch.data(), alibi, kind, true, true, true);
            };
            if (!pairs_ok) {
              CHECK_THROWS_AS(with_pairs(), std::logic_error);
              continue;
            }
            with_pairs();
            CHECK(std::memcmp(rows_out.data(), k2_out.data(), rows_out.size() * sizeof(float)) == 0);
            // And V's panels as pair words of two tokens (v_pairs, for an even
            // token count: sequences starting on odd tokens take their words
            // apart): the same bits again; an odd count refused.
            const std::vector<uint16_t> pan_kv = bf16_panels_as_pairs(pan_h, sh.heads, T, hd, T % 2 == 0);
            std::vector<float> v2_out(rows_out.size(), std::nanf(""));
            auto with_v = [&] {
              k::attention_f32(reinterpret_cast<const float*>(pan_kv.data()), off.data(), nseq, sh.heads, hd, 0.125f,
                               v2_out.data(), scratch.data(), alibi, kind, true, true, true, true);
            };
            if (T % 2 != 0) {
              CHECK_THROWS_AS(with_v(), std::logic_error);
            } else {
              with_v();
              CHECK(std::memcmp(rows_out.data(), v2_out.data(), rows_out.size() * sizeof(float)) == 0);
            }
            CHECK_THROWS_AS(k::attention_f32(reinterpret_cast<const float*>(pan_k2.data()), off.data(), nseq,
                                             sh.heads, hd, 0.125f, k2_out.data(), scratch.data(), alibi, kind,
                                             false, true, true),
                            std::logic_error);
          }
        }
      });
}

TEST_CASE("attention with a larger score scale stays stable (softmax subtracts the max)") {
  const std::vector<int64_t> lens{40, 9};
  const auto off = offsets_of(lens);
  const int64_t heads = 2, hd = 16, T = off.back(), H = heads * hd;
  // Scores up to ~16 * 8 * 8 * 10 = 10240: exp would overflow without the max.
  auto qkv = random_vec(static_cast<size_t>(T * 3 * H), 42, -8.f, 8.f);
  const float scale = 10.f;
  std::vector<float> want(static_cast<size_t>(T * H)), got(want.size());
  k::ref::attention_f32(qkv.data(), off.data(), 2, heads, hd, scale, want.data());
  std::vector<float> scratch(k::attention_scratch_floats(40, heads, hd));
  k::attention_f32(qkv.data(), off.data(), 2, heads, hd, scale, got.data(), scratch.data());
  // Values are V entries in [-8, 8]; scores of this size are only accurate to
  // float rounding of the dot products (~1e-6 relative of 1e4), which moves
  // near-tied softmax weights: allow 1e-3 absolute.
  CHECK_CLOSE(got, want, 1e-5, 1e-3, "large scale");
  for (float v : got) CHECK(std::isfinite(v));
}

TEST_CASE("attention blocks of every ISA build match the reference") {
  for (const auto* t : runnable_tables())
    for (const auto& sh : attention_shapes()) {
      const auto off = offsets_of(sh.lens);
      const int64_t T = off.back(), H = sh.heads * sh.head_dim;
      auto qkv = random_vec(static_cast<size_t>(T * 3 * H), 43);
      const float scale = 0.125f;
      std::vector<float> want(static_cast<size_t>(T * H)), got(want.size(), std::nanf(""));
      k::ref::attention_f32(qkv.data(), off.data(), static_cast<int64_t>(sh.lens.size()),
                            sh.heads, sh.head_dim, scale, want.data());
      const int64_t max_len = *std::max_element(sh.lens.begin(), sh.lens.end());
      std::vector<float> scratch(f32::attention_slot_floats(max_len, sh.head_dim) + f32::kPad);
      float* slot = scratch.data();
      while (reinterpret_cast<uintptr_t>(slot) % 64) ++slot;
      for (size_t s = 0; s < sh.lens.size(); ++s)
        for (int64_t h = 0; h < sh.heads; ++h) {
          f32::AttentionBlock b{};
          b.qkv = qkv.data() + off[s] * 3 * H;
          b.seq_len = sh.lens[s];
          b.qkv_stride = 3 * H;
          b.q_col = h * sh.head_dim;
          b.k_col = H + h * sh.head_dim;
          b.v_col = 2 * H + h * sh.head_dim;
          b.head_dim = sh.head_dim;
          b.q_begin = 0;
          b.q_end = sh.lens[s];
          b.scale = scale;
          b.out = got.data() + off[s] * H + h * sh.head_dim;
          b.out_stride = H;
          t->attention_block(b, slot);
        }
      CHECK_CLOSE(got, want, 1e-5, 1e-5,
                  t->name << " lens=" << lens_str(sh.lens) << " heads=" << sh.heads
                          << " head_dim=" << sh.head_dim);
    }
}

// BF16 attention: AMX-BF16 (attention_amx.cpp) and AVX512_BF16
// (attention_bf16.cpp), each where the CPU has it. Two comparisons per shape:
// - against the reference run on Q, K and V already rounded to BF16: what is
//   left is the rounding of the probabilities P to BF16 (2^-9 relative, so at
//   most 2^-9 max|v| = 0.002 here) and FP32 accumulation order: 4e-3 absolute
//   catches any layout or tail mistake, which gives errors of order 1;
// - against the FP32 reference: the rounding of Q and K moves each score by
//   at most ~2^-8 scale sum_d |q_d k_d| (0.125 x 64 x 2^-8 = 0.03 in the worst
//   case here, ~0.004 typically); 2e-2 absolute.
namespace {
float bf16_round(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);  // nearest even (inputs are finite)
  u &= 0xFFFF0000u;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}
}  // namespace

namespace {
// attention_f32 refuses a products kind it cannot run here (a logic error,
// never a wrong result).
void check_refused(k::AttentionProducts kind) {
  std::vector<int64_t> off{0, 4};
  std::vector<float> qkv(4 * 3 * 64, 0.5f), out(4 * 64);
  std::vector<float> scratch(k::attention_scratch_floats(4, 1, 64) + 16);
  CHECK_THROWS_AS(k::attention_f32(qkv.data(), off.data(), 1, 1, 64, 0.125f, out.data(), scratch.data(),
                                   nullptr, kind),
                  std::logic_error);
}
}  // namespace

TEST_CASE("BF16 attention matches the reference within BF16 rounding") {
  const std::vector<k::AttentionProducts> kinds = bf16_kinds_here();
  if (kinds.empty()) {
    MESSAGE("not run: this CPU has neither AMX-BF16 nor AVX512_BF16 (the FP32 attention tests cover it)");
    return;
  }
  // A BF16 kind this CPU lacks is refused, never run.
  if (!k::cpu_has_amx_bf16() || !k::cpu_has_avx512_bf16())
    check_refused(k::cpu_has_amx_bf16() ? k::AttentionProducts::Avx512Bf16 : k::AttentionProducts::AmxBf16);
  {
    // BF16 rows are read by the BF16 and INT8 Q.K^T blocks only.
    std::vector<int64_t> off{0, 4};
    std::vector<float> qkv(4 * 3 * 64, 0.5f), out(4 * 64);
    std::vector<float> scratch(k::attention_scratch_floats(4, 1, 64) + 16);
    for (const auto kind : {k::AttentionProducts::F32})
      CHECK_THROWS_AS(k::attention_f32(qkv.data(), off.data(), 1, 1, 64, 0.125f, out.data(), scratch.data(), nullptr,
                                       kind, false, true),
                      std::logic_error);
  }
  for (const auto kind : kinds)
  for (int threads : {1, 2})
    in_arena(threads, [&] {
      for (const auto& sh : attention_shapes())
        for (const bool alibi : {false, true}) {
          const auto off = offsets_of(sh.lens);
          const int64_t T = off.back(), H = sh.heads * sh.head_dim;
          const int64_t max_len = *std::max_element(sh.lens.begin(), sh.lens.end());
          auto qkv = random_vec(static_cast<size_t>(T * 3 * H), 47);
          auto rounded = qkv;
          for (auto& v : rounded) v = bf16_round(v);
          std::vector<float> slopes;
          for (int64_t h = 0; h < sh.heads; ++h) slopes.push_back(0.5f / static_cast<float>(h + 1));
          const float* sl = alibi ? slopes.data() : nullptr;
          const float scale = 0.125f;
          const auto nseq = static_cast<int64_t>(sh.lens.size());
          std::vector<float> want(static_cast<size_t>(T * H)), want_r(want.size());
          k::ref::attention_f32(qkv.data(), off.data(), nseq, sh.heads, sh.head_dim, scale,
                                want.data(), sl);
          k::ref::attention_f32(rounded.data(), off.data(), nseq, sh.heads, sh.head_dim, scale,
                                want_r.data(), sl);
          const size_t scratch_n = k::attention_scratch_floats(max_len, sh.heads, sh.head_dim);
          std::vector<float> scratch(scratch_n + 64, std::nanf(""));
          for (size_t i = scratch_n; i < scratch.size(); ++i) scratch[i] = 12345.f;
          std::vector<float> got(want.size(), std::nanf(""));
          k::attention_f32(qkv.data(), off.data(), nseq, sh.heads, sh.head_dim, scale, got.data(),
                           scratch.data(), sl, kind);
          const std::string what = std::string(k::attention_products_name(kind)) +
                                   " threads=" + std::to_string(threads) + " lens=" +
                                   lens_str(sh.lens) + " heads=" + std::to_string(sh.heads) +
                                   " head_dim=" + std::to_string(sh.head_dim) +
                                   (alibi ? " alibi" : "");
          CHECK_CLOSE(got, want_r, 0.0, 4e-3, what << " vs reference on BF16 inputs");
          CHECK_CLOSE(got, want, 0.0, 2e-2, what << " vs FP32 reference");
          // The same rows given as BF16 (qkv_bf16, as the dense AMX Linear
          // writes them): the blocks round f32 Q, K and V to nearest even
          // themselves, so the same bits.
          std::vector<uint16_t> h(qkv.size());
          for (size_t i = 0; i < qkv.size(); ++i) h[i] = bf16_bits(qkv[i]);
          std::vector<float> got_h(want.size(), std::nanf(""));
          k::attention_f32(reinterpret_cast<const float*>(h.data()), off.data(), nseq, sh.heads, sh.head_dim, scale,
                           got_h.data(), scratch.data(), sl, kind, false, true);
          CHECK_MESSAGE(std::memcmp(got_h.data(), got.data(), got.size() * sizeof(float)) == 0,
                        what << ": BF16 rows differ from the f32 rows they were rounded from");
          bool guard_intact = true;
          for (size_t i = scratch_n; i < scratch.size(); ++i) guard_intact &= scratch[i] == 12345.f;
          CHECK(guard_intact);
        }
    });
}

// The softmax's probabilities themselves: with V the identity (key j's row
// is e_j, head_dim = keys), each output row is the row of P, normalized.
// Against the exact softmax of the BF16-rounded Q and K, within BF16's
// rounding of P (2^-8 relative at most: 8 significant bits) and the
// exponential's error (exp2_softmax: 7.5e-5 relative, twice through the
// normalization): rtol 4.5e-3. The averages of the test above hide an
// exponential off by half a percent; this does not.
TEST_CASE("BF16 attention's softmax: P within BF16 rounding of the exact softmax") {
  const std::vector<k::AttentionProducts> kinds = bf16_kinds_here();
  if (kinds.empty()) {
    MESSAGE("not run: this CPU has neither AMX-BF16 nor AVX512_BF16");
    return;
  }
  for (const int64_t len : {32, 64, 96})
    for (const float spread : {1.f, 8.f}) {
      const int64_t hd = len, H = hd;
      auto qkv = random_vec(static_cast<size_t>(len * 3 * H), static_cast<uint32_t>(len) + 5);
      for (int64_t t = 0; t < len; ++t)
        for (int64_t d = 0; d < hd; ++d) {
          float* row = qkv.data() + t * 3 * H;
          row[d] = bf16_round(spread * row[d]);  // Q: wider scores with spread
          row[H + d] = bf16_round(row[H + d]);
          row[2 * H + d] = t == d ? 1.f : 0.f;  // V = identity
        }
      const float scale = 0.125f;
      std::vector<float> want(static_cast<size_t>(len * H));
      for (int64_t i = 0; i < len; ++i) {
        std::vector<double> sc(static_cast<size_t>(len));
        double mx = -1e300, sum = 0;
        for (int64_t j = 0; j < len; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < hd; ++d)
            dot += double(qkv[i * 3 * H + d]) * double(qkv[j * 3 * H + H + d]);
          sc[static_cast<size_t>(j)] = dot * scale;
          mx = std::max(mx, sc[static_cast<size_t>(j)]);
        }
        for (auto& v : sc) sum += (v = std::exp(v - mx));
        for (int64_t j = 0; j < len; ++j) want[i * H + j] = static_cast<float>(sc[static_cast<size_t>(j)] / sum);
      }
      const std::vector<int64_t> off{0, len};
      for (const auto kind : kinds) {
        std::vector<float> scratch(k::attention_scratch_floats(len, 1, hd) + 64);
        std::vector<float> got(want.size(), std::nanf(""));
        k::attention_f32(qkv.data(), off.data(), 1, 1, hd, scale, got.data(), scratch.data(), nullptr, kind);
        CHECK_CLOSE(got, want, 4.5e-3, 1e-7,
                    std::string(k::attention_products_name(kind)) << " len=" << len << " spread=" << spread);
      }
    }
}

// The INT8 Q·K^T contract of ops.h Avx512S8Qk, in scalar form: each head's
// row of Q or K replaced by its 8-bit values times the row's scale.
void s8qk_round_rows(std::vector<float>& qkv, int64_t T, int64_t heads, int64_t hd) {
  const int64_t H = heads * hd;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t part = 0; part < 2; ++part)  // Q, then K (V stays; BF16 rounds it)
      for (int64_t h = 0; h < heads; ++h) {
        float* x = qkv.data() + t * 3 * H + part * H + h * hd;
        float amax = 0.f;
        for (int64_t d = 0; d < hd; ++d) amax = std::max(amax, std::fabs(x[d]));
        const float scale = amax / 127.0f, inv = 127.0f / amax;
        for (int64_t d = 0; d < hd; ++d) x[d] = amax > 0.f ? std::nearbyint(x[d] * inv) * scale : 0.f;
      }
}

TEST_CASE("INT8 Q.K^T attention matches the reference on 8-bit Q and K within BF16 rounding") {
  const auto kind = k::AttentionProducts::Avx512S8Qk;
  const bool runs = k::cpu_has_avx512_bf16() && k::active_isa() == k::Isa::Avx512Vnni;
  if (!runs) {
    check_refused(kind);  // no AVX512_BF16, or SPINEL_ISA capped
    MESSAGE("INT8 Q.K^T attention not run: needs AVX512_BF16 and the avx512vnni level (refusal checked)");
    return;
  }
  for (int threads : {1, 2})
    in_arena(threads, [&] {
      for (const auto& sh : attention_shapes())
        for (const bool alibi : {false, true}) {
          const auto off = offsets_of(sh.lens);
          const int64_t T = off.back(), H = sh.heads * sh.head_dim;
          const int64_t max_len = *std::max_element(sh.lens.begin(), sh.lens.end());
          // Q and K rows of different sizes (the per-row scales matter).
          auto qkv = random_vec(static_cast<size_t>(T * 3 * H), 48);
          for (size_t i = 0; i < qkv.size(); ++i) qkv[i] *= 0.25f + 0.25f * static_cast<float>((i / 7) % 9);
          auto rounded = qkv;
          s8qk_round_rows(rounded, T, sh.heads, sh.head_dim);
          for (int64_t t = 0; t < T; ++t)
            for (int64_t c = 2 * H; c < 3 * H; ++c) rounded[t * 3 * H + c] = bf16_round(rounded[t * 3 * H + c]);
          std::vector<float> slopes;
          for (int64_t h = 0; h < sh.heads; ++h) slopes.push_back(0.5f / static_cast<float>(h + 1));
          const float* sl = alibi ? slopes.data() : nullptr;
          const float scale = 0.125f;
          const auto nseq = static_cast<int64_t>(sh.lens.size());
          std::vector<float> want(static_cast<size_t>(T * H)), want_r(want.size());
          k::ref::attention_f32(qkv.data(), off.data(), nseq, sh.heads, sh.head_dim, scale, want.data(), sl);
          k::ref::attention_f32(rounded.data(), off.data(), nseq, sh.heads, sh.head_dim, scale,
                                want_r.data(), sl);
          const size_t scratch_n = k::attention_scratch_floats(max_len, sh.heads, sh.head_dim);
          std::vector<float> scratch(scratch_n + 64, std::nanf(""));
          for (size_t i = scratch_n; i < scratch.size(); ++i) scratch[i] = 12345.f;
          std::vector<float> got(want.size(), std::nanf(""));
          k::attention_f32(qkv.data(), off.data(), nseq, sh.heads, sh.head_dim, scale, got.data(),
                           scratch.data(), sl, kind);
          const std::string what = "threads=" + std::to_string(threads) + " lens=" + lens_str(sh.lens) +
                                   " heads=" + std::to_string(sh.heads) + " head_dim=" +
                                   std::to_string(sh.head_dim) + (alibi ? " alibi" : "");
          // |V| reaches 2.25: P's BF16 rounding (2^-9 relative; V is rounded
          // in the reference too) moves an output by up to 2.25 / 512 = 4.4e-3
          // (measured worst 1.8e-3; a shift correction off by one key sum
          // gave 1.05e-2).
          CHECK_CLOSE(got, want_r, 0.0, 5e-3, what << " vs reference on 8-bit Q, K and BF16 V");
          // Against FP32 Q and K: each score moves by up to ~(|q|_1 max|k| +
          // |k|_1 max|q|) / 254 times the scale.
          CHECK_CLOSE(got, want, 0.0, 0.1, what << " vs FP32 reference");
          bool guard_intact = true;
          for (size_t i = scratch_n; i < scratch.size(); ++i) guard_intact &= scratch[i] == 12345.f;
          CHECK(guard_intact);
        }
    });
  // A NaN in one key's K: every output of that head is NaN (as in FP32),
  // the other head's stay finite; a row of zeros is fine.
  const int64_t heads = 2, hd = 64, len = 40, H = heads * hd;
  auto qkv = random_vec(static_cast<size_t>(len * 3 * H), 49);
  qkv[5 * 3 * H + H + 3] = std::nanf("");                 // key 5, head 0
  for (int64_t d = 0; d < hd; ++d) qkv[7 * 3 * H + hd + d] = 0.f;  // query 7, head 1: zeros
  std::vector<int64_t> off{0, len};
  std::vector<float> out(static_cast<size_t>(len * H));
  std::vector<float> scratch(k::attention_scratch_floats(len, heads, hd));
  k::attention_f32(qkv.data(), off.data(), 1, heads, hd, 0.125f, out.data(), scratch.data(), nullptr, kind);
  bool head0_nan = true, head1_finite = true;
  for (int64_t t = 0; t < len; ++t)
    for (int64_t d = 0; d < hd; ++d) {
      head0_nan &= std::isnan(out[t * H + d]);
      head1_finite &= std::isfinite(out[t * H + hd + d]);
    }
  CHECK(head0_nan);
  CHECK(head1_finite);
}

// What the sparse QKV Linear writes for an INT8 Q.K^T attention (select.h
// qkv_bf16_rows, qkv_k_pairs, qkv_v_pairs): BF16 head panels, then K's panels
// as pair words, then V's too. Quantizing Q and K from BF16 values gives the
// bits of f32 panels holding the same values (K's pair words quantized with
// the keys as lanes, no transposes: the same bytes, scales and key sums),
// with and without ALiBi, on 1 and 2 threads; keys with a NaN, an infinity
// or all zeros agree too, and a key past the sequence is never read.
TEST_CASE("INT8 Q.K^T attention from BF16 panels and K, V pair words: the bits of f32 panels of the same values") {
  const auto kind = k::AttentionProducts::Avx512S8Qk;
  if (!(k::cpu_has_avx512_bf16() && k::active_isa() == k::Isa::Avx512Vnni)) {
    MESSAGE("not run: needs AVX512_BF16 and the avx512vnni level (the refusal is checked above)");
    return;
  }
  std::vector<AttnShape> shapes;
  for (const auto& sh : attention_shapes())
    if (sh.head_dim % 32 == 0) shapes.push_back(sh);
  shapes.push_back({{40, 18}, 2, 64});  // specials below
  for (int threads : {1, 2})
    in_arena(threads, [&] {
      for (const auto& sh : shapes) {
        const auto off = offsets_of(sh.lens);
        const int64_t T = off.back(), hd = sh.head_dim, H = sh.heads * hd;
        const auto nseq = static_cast<int64_t>(sh.lens.size());
        const int64_t max_len = *std::max_element(sh.lens.begin(), sh.lens.end());
        auto qkv = random_vec(static_cast<size_t>(T * 3 * H), 52);
        for (size_t i = 0; i < qkv.size(); ++i) qkv[i] *= 0.25f + 0.25f * static_cast<float>((i / 5) % 7);
        if (sh.lens == std::vector<int64_t>{40, 18}) {
          qkv[static_cast<size_t>(5 * 3 * H + H + 3)] = std::nanf("");        // K of key 5, head 0: NaN
          qkv[static_cast<size_t>(9 * 3 * H + H + hd + 7)] = INFINITY;         // K of key 9, head 1: inf
          for (int64_t d = 0; d < hd; ++d) qkv[static_cast<size_t>(11 * 3 * H + H + d)] = 0.f;  // key 11: zeros
          for (int64_t d = 0; d < hd; ++d) qkv[static_cast<size_t>(44 * 3 * H + H + hd + d)] = 0.f;
        }
        // Panels [3 H][T][hd] of the BF16-rounded values: f32, and their bits.
        std::vector<float> pan(qkv.size());
        std::vector<uint16_t> pan_h(qkv.size());
        for (int64_t t = 0; t < T; ++t)
          for (int64_t c = 0; c < 3 * H; ++c) {
            const auto i = static_cast<size_t>((c / hd) * T * hd + t * hd + c % hd);
            const float v = qkv[static_cast<size_t>(t * 3 * H + c)];
            pan_h[i] = bf16_bits(v);
            pan[i] = std::isfinite(v) ? bf16_round(v) : v;
          }
        const std::vector<uint16_t> pan_k2 = bf16_panels_as_pairs(pan_h, sh.heads, T, hd, false);
        const std::vector<uint16_t> pan_kv = bf16_panels_as_pairs(pan_h, sh.heads, T, hd, T % 2 == 0);
        std::vector<float> slopes;
        for (int64_t h = 0; h < sh.heads; ++h) slopes.push_back(0.5f / static_cast<float>(h + 1));
        for (const float* sl : {static_cast<const float*>(nullptr), static_cast<const float*>(slopes.data())}) {
          const size_t scratch_n = k::attention_scratch_floats(max_len, sh.heads, hd);
          std::vector<float> scratch(scratch_n + 64, std::nanf(""));
          for (size_t i = scratch_n; i < scratch.size(); ++i) scratch[i] = 12345.f;
          auto run = [&](const void* in, bool bf16, bool k2, bool v2) {
            std::vector<float> out(static_cast<size_t>(T * H), std::nanf(""));
            k::attention_f32(static_cast<const float*>(in), off.data(), nseq, sh.heads, hd, 0.125f, out.data(),
                             scratch.data(), sl, kind, true, bf16, k2, v2);
            return out;
          };
          CAPTURE(threads);
          CAPTURE(lens_str(sh.lens));
          CAPTURE(hd);
          CAPTURE(sl != nullptr);
          const auto want = run(pan.data(), false, false, false);
          const size_t bytes = want.size() * sizeof(float);
          CHECK(std::memcmp(run(pan_h.data(), true, false, false).data(), want.data(), bytes) == 0);
          CHECK(std::memcmp(run(pan_k2.data(), true, true, false).data(), want.data(), bytes) == 0);
          if (T % 2 == 0) CHECK(std::memcmp(run(pan_kv.data(), true, true, true).data(), want.data(), bytes) == 0);
          bool guard_intact = true;
          for (size_t i = scratch_n; i < scratch.size(); ++i) guard_intact &= scratch[i] == 12345.f;
          CHECK(guard_intact);
          if (sh.lens == std::vector<int64_t>{40, 18}) {
            // The NaN key's head is NaN throughout its sequence, the other
            // head finite except where the infinite key makes it NaN.
            bool head0_nan = true, rest_finite = true;
            for (int64_t t = 0; t < 40; ++t)
              for (int64_t d = 0; d < hd; ++d) head0_nan &= std::isnan(want[static_cast<size_t>(t * H + d)]);
            for (int64_t t = 40; t < T; ++t)
              for (int64_t c = 0; c < H; ++c) rest_finite &= std::isfinite(want[static_cast<size_t>(t * H + c)]);
            CHECK(head0_nan);
            CHECK(rest_finite);
          }
        }
      }
    });
}

// -------------------------------------------------------------- Linear ----

namespace {

enum class Res { None, Separate, InPlace };

void check_linear(int64_t M, int64_t K, int64_t N, Activation act, Res res, bool with_bias,
                  int threads, const k::DenseLinearF32* shared = nullptr,
                  const std::vector<float>* shared_w = nullptr,
                  const std::vector<float>* shared_b = nullptr) {
  const auto w_own = shared_w ? std::vector<float>{} : random_vec(static_cast<size_t>(K * N), 51);
  const auto b_own = shared_b ? std::vector<float>{} : random_vec(static_cast<size_t>(N), 52);
  const auto& w = shared_w ? *shared_w : w_own;
  const auto& b = shared_b ? *shared_b : b_own;
  const auto x = random_vec(static_cast<size_t>(M * K), 53 + static_cast<uint32_t>(M));
  const auto r = random_vec(static_cast<size_t>(M * N), 54);
  const float* bias = with_bias ? b.data() : nullptr;
  const float* resid = res == Res::None ? nullptr : r.data();
  std::vector<float> want(static_cast<size_t>(M * N));
  k::ref::linear_f32(x.data(), w.data(), bias, M, K, N, act, resid, want.data());

  std::unique_ptr<k::DenseLinearF32> own;
  if (!shared) own = std::make_unique<k::DenseLinearF32>(w.data(), bias, K, N, act);
  const k::DenseLinearF32& op = shared ? *shared : *own;
  std::vector<float> y;
  if (res == Res::InPlace) {
    y = r;
    op.run(x.data(), M, y.data(), y.data());
  } else {
    y.assign(want.size(), std::nanf(""));
    op.run(x.data(), M, resid, y.data());
  }
  CHECK_CLOSE(y, want, 1e-5, 2e-6 * std::sqrt(static_cast<double>(K)),
              "threads=" << threads << " M=" << M << " K=" << K << " N=" << N
                         << " act=" << static_cast<int>(act) << " residual=" << static_cast<int>(res)
                         << " bias=" << with_bias);
}

// The threads a DenseLinearF32 made in its scope runs oneDNN on
// (SPINEL_DENSE_POOL, SPINEL_DENSE_SPLIT, read at construction): OpenMP, or
// TBB tasks over rows or over column parts of W (layers of N >= 256).
const char* const kDensePools[] = {"omp", "tbb-rows", "tbb-cols"};
struct DensePoolEnv {
  explicit DensePoolEnv(const std::string& v) {
    setenv("SPINEL_DENSE_POOL", v == "omp" ? "omp" : "tbb", 1);
    if (v != "omp") setenv("SPINEL_DENSE_SPLIT", v == "tbb-rows" ? "rows" : "cols", 1);
  }
  ~DensePoolEnv() {
    unsetenv("SPINEL_DENSE_POOL");
    unsetenv("SPINEL_DENSE_SPLIT");
  }
};

}  // namespace

TEST_CASE("dense split: column parts for short inputs to wide layers, rows once every part's thread has 128") {
  // (M, K, N, element bytes, parts, forced) -> by column parts?
  // Narrow or small W (<= 1 MiB): rows whatever M.
  CHECK_FALSE(k::dense_split_by_columns(128, 384, 1536, 1, 2, 0));
  CHECK_FALSE(k::dense_split_by_columns(64, 768, 768, 1, 2, 0));
  // One part: nothing to split by.
  CHECK_FALSE(k::dense_split_by_columns(128, 768, 3072, 1, 1, 0));
  // Wide u8 layers: column parts while a part's thread would get fewer than
  // kDenseRowsPerThread rows, rows from there on (BERT-base's 768 x 3072 at
  // 1, 2 and 8 x 128 tokens on 2 threads).
  CHECK(k::kDenseRowsPerThread == 128);
  CHECK(k::dense_split_by_columns(128, 768, 3072, 1, 2, 0));
  CHECK(k::dense_split_by_columns(255, 768, 2304, 1, 2, 0));
  CHECK_FALSE(k::dense_split_by_columns(256, 768, 3072, 1, 2, 0));
  CHECK_FALSE(k::dense_split_by_columns(1024, 768, 3072, 1, 2, 0));
  CHECK(k::dense_split_by_columns(1024, 768, 3072, 1, 16, 0));  // 64 rows per part's thread
  // f32 layers keep the M < N rule.
  CHECK(k::dense_split_by_columns(1024, 384, 1536, 4, 2, 0));
  CHECK_FALSE(k::dense_split_by_columns(2048, 384, 1536, 4, 2, 0));
  // SPINEL_DENSE_SPLIT decides when set (1 rows, 2 column parts).
  CHECK_FALSE(k::dense_split_by_columns(128, 768, 3072, 1, 2, 1));
  CHECK(k::dense_split_by_columns(1024, 768, 3072, 1, 2, 2));
}

TEST_CASE("linear: every activation x residual x bias combination on odd shapes") {
  for (const char* pool : kDensePools) {
    DensePoolEnv env(pool);
    CAPTURE(pool);
    for (int threads : {1, 2, 3})
      in_arena(threads, [&] {
        for (Activation act : {Activation::None, Activation::GeluErf, Activation::GeluTanh})
          for (Res res : {Res::None, Res::Separate, Res::InPlace})
            for (bool bias : {false, true})
              for (auto [M, K, N] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1},
                                     {3, 37, 53}, {17, 129, 7}, {64, 33, 100}, {50, 20, 30},
                                     {19, 40, 300}})
                check_linear(M, K, N, act, res, bias, threads);
      });
  }
}

TEST_CASE("linear: M from 1 to 300 through one cached operator, large K and N") {
  for (const char* pool : kDensePools)
  for (const auto& kn : {std::pair<int64_t, int64_t>{384, 1536}, {1536, 384}, {385, 771}}) {
    DensePoolEnv env(pool);
    CAPTURE(pool);
    const int64_t K = kn.first, N = kn.second;  // lambdas below capture them (not bindings: C++17)
    const auto w = random_vec(static_cast<size_t>(K * N), 61);
    const auto b = random_vec(static_cast<size_t>(N), 62);
    for (Activation act : {Activation::None, Activation::GeluErf}) {
      k::DenseLinearF32 op(w.data(), b.data(), K, N, act);
      CHECK(op.K() == K);
      CHECK(op.N() == N);
      for (int threads : {1, 2})
        in_arena(threads, [&] {
#ifdef SPINEL_SANITIZED
          for (int64_t M : {1, 3, 129})
#else
          for (int64_t M : {1, 2, 3, 17, 64, 129, 300})
#endif
            check_linear(M, K, N, act, act == Activation::None ? Res::Separate : Res::InPlace,
                         true, threads, &op, &w, &b);
        });
    }
  }
  // Every M from 1 to 300 on a small shape, so that all tails are covered.
  const int64_t K = 45, N = 67;
  const auto w = random_vec(static_cast<size_t>(K * N), 63);
  const auto b = random_vec(static_cast<size_t>(N), 64);
  k::DenseLinearF32 op(w.data(), b.data(), K, N, Activation::GeluTanh);
  in_arena(2, [&] {
    for (int64_t M = 1; M <= 300; ++M)
      check_linear(M, K, N, Activation::GeluTanh, Res::Separate, true, 2, &op, &w, &b);
  });
}

TEST_CASE("linear: BERT shapes with all epilogues") {
#ifdef SPINEL_SANITIZED
  for (const auto& kn : {std::pair<int64_t, int64_t>{768, 3072}})
#else
  for (const auto& kn : {std::pair<int64_t, int64_t>{768, 3072}, {3072, 768}})
#endif
    for (Activation act : {Activation::None, Activation::GeluErf, Activation::GeluTanh})
      in_arena(2, [&] { check_linear(128, kn.first, kn.second, act, Res::Separate, true, 2); });
}

TEST_CASE("linear: no epilogue falls back to oneDNN's reference loops") {
  // An eltwise post-op followed by a sum ran on "ref:any", ~1000x slower; so
  // did the in-place residual (a sum post-op) once a layer had seen more
  // token counts than it keeps fixed-M primitives for (32) and took the
  // run-time-M one. M runs past that count here, in every mode.
  const int64_t K = 96, N = 160;
  const auto w = random_vec(static_cast<size_t>(K * N), 81);
  const auto b = random_vec(static_cast<size_t>(N), 82);
  std::vector<int64_t> ms;
#ifdef SPINEL_SANITIZED
  for (int64_t M = 1; M <= 40; M += 3) ms.push_back(M);  // 45 token counts in all, past the 32
  for (int64_t M = 100; M <= 130; ++M) ms.push_back(M);
#else
  for (int64_t M = 1; M <= 48; ++M) ms.push_back(M);
  ms.push_back(128);
#endif
  for (Activation act : {Activation::None, Activation::GeluErf, Activation::GeluTanh, Activation::Tanh}) {
    k::DenseLinearF32 op(w.data(), b.data(), K, N, act);
    for (int64_t M : ms)
      for (const auto& mode : {std::pair<bool, bool>{false, false}, {true, false}, {true, true}}) {
        // Plain names, not structured bindings: clang 14 cannot capture those in INFO.
        const bool res = mode.first, in_place = mode.second;
        const std::string impl = op.implementation(M, res, in_place);
        INFO("act=" << static_cast<int>(act) << " M=" << M << " residual=" << res << " in_place=" << in_place);
        CHECK(!impl.empty());
        CHECK(impl.find("ref") == std::string::npos);
      }
  }
  // And the results past the fixed-M primitives: every M of the list on
  // one operator, each residual mode, against the reference.
  k::DenseLinearF32 op(w.data(), b.data(), K, N, Activation::None);
  in_arena(2, [&] {
    for (int64_t M : ms)
      for (Res res : {Res::InPlace, Res::Separate, Res::None})
        check_linear(M, K, N, Activation::None, res, true, 2, &op, &w, &b);
  });
}

TEST_CASE("linear: M = 0 is a no-op") {
  const auto w = random_vec(12, 1);
  k::DenseLinearF32 op(w.data(), nullptr, 3, 4, Activation::None);
  float y = 7.f;
  op.run(nullptr, 0, nullptr, &y);
  CHECK(y == 7.f);
}

TEST_CASE("linear: concurrent run() from two arenas agrees with the reference") {
  const int64_t K = 200, N = 300;
  const auto w = random_vec(static_cast<size_t>(K * N), 71);
  const auto b = random_vec(static_cast<size_t>(N), 72);
  k::DenseLinearF32 op(w.data(), b.data(), K, N, Activation::GeluErf);
  std::vector<std::thread> pool;
  std::vector<int> failures(2, 0);
  for (int t = 0; t < 2; ++t)
    pool.emplace_back([&, t] {
      omp_set_num_threads(1);
      for (int64_t M : {5, 77, 5, 130, 77}) {
        const auto x = random_vec(static_cast<size_t>(M * K), 73 + static_cast<uint32_t>(t));
        std::vector<float> want(static_cast<size_t>(M * N)), y(want.size());
        k::ref::linear_f32(x.data(), w.data(), b.data(), M, K, N, Activation::GeluErf, nullptr,
                           want.data());
        op.run(x.data(), M, nullptr, y.data());
        if (compare(y, want, 1e-5, 2e-6 * std::sqrt(double(K))).count) ++failures[t];
      }
    });
  for (auto& th : pool) th.join();
  CHECK(failures[0] == 0);
  CHECK(failures[1] == 0);
}

TEST_CASE("DnnlArgs: a call after another M runs with its own shapes; same shapes reuse the memories") {
  // A matmul made for any M (DNNL_RUNTIME_DIM_VAL) reads a call's M from the
  // descriptors of its source and destination memories: if DnnlArgs kept a
  // memory whose descriptor had changed, M = 7 after M = 3 would compute 3
  // rows (and M = 3 after 7 would write 7). y is guarded past its end.
  using dnnl::memory;
  using dt = memory::data_type;
  using tag = memory::format_tag;
  const int64_t K = 5, N = 3;
  const memory::desc src_any({DNNL_RUNTIME_DIM_VAL, K}, dt::f32, memory::dims{K, 1});
  const memory::desc w_md({K, N}, dt::f32, tag::ab);
  const memory::desc dst_any({DNNL_RUNTIME_DIM_VAL, N}, dt::f32, memory::dims{N, 1});
  const dnnl::matmul mm(dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_any, w_md, dst_any), k::dnnl_engine()));
  std::vector<float> w(static_cast<size_t>(K * N));
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.25f * static_cast<float>(i % 7) - 0.5f;
  k::DnnlArgs args;
  int call = 0;
  for (int64_t M : {3, 7, 3, 3, 1, 7}) {
    CAPTURE(M);
    CAPTURE(call);
    std::vector<float> x(static_cast<size_t>(M * K));
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 3 + static_cast<size_t>(call)) % 11) - 5.f;
    std::vector<float> y(static_cast<size_t>((M + 2) * N), -999.f);  // 2 guard rows
    args.set(DNNL_ARG_SRC, memory::desc({M, K}, dt::f32, tag::ab), x.data());
    args.set(DNNL_ARG_WEIGHTS, w_md, w.data());
    args.set(DNNL_ARG_DST, memory::desc({M, N}, dt::f32, tag::ab), y.data());
    args.execute(mm);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        float want = 0.f;
        for (int64_t kk = 0; kk < K; ++kk) want += x[static_cast<size_t>(m * K + kk)] * w[static_cast<size_t>(kk * N + n)];
        CHECK(y[static_cast<size_t>(m * N + n)] == doctest::Approx(want).epsilon(1e-5));
      }
    for (int64_t i = M * N; i < (M + 2) * N; ++i) CHECK(y[static_cast<size_t>(i)] == -999.f);
    ++call;
  }
}
