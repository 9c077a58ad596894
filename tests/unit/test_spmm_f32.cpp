// The block-sparse FP32 Linear (kernels/cpu/spmm_f32.h) against the plain
// reference (kernels/reference: ref::linear_f32, the product in double), on
// every kernel build this CPU runs: scalar, AVX2, AVX-512 (only where the CPU
// has it) and the AVX-512 source compiled for AVX2 (avx2_w16: the 16-lane
// tiles, tails and transposes run here even without AVX-512), at 1 and 2
// threads; also through spmm_f32's own dispatch at every ISA cap
// (set_max_isa), and the packing, the sparsity measure and the kernel choice.
//
// Shapes: odd M (1, 2, 3, 17, 129, 300 and the tile edges around 8, 16, 24,
// 64), K and N that are not multiples of 4 or of a vector (N % 4 != 0 gives a
// short last block-row), block sparsity 0%, 50%, 90% and 100% (100%: y =
// act(b) + residual), every epilogue (activation none / GELU erf / GELU tanh /
// tanh x bias or not x residual none / separate / in place in y).
// Outputs start as NaN (an element never written fails) with a row-stride
// slack that must stay untouched, and guard floats after the last row.
//
// Tolerance, per element: |got - want| <= 1e-6 sqrt(K) * A + 1e-6 |want| + 1e-7,
// A = |b| + sum_k |x[m][k] W[k][n]| (double). Float accumulation (FMA, the
// kernel's order) against the double reference has an error of about
// eps sqrt(nnz) A (eps = 6e-8), so this allows ~16x that; the |want| term
// covers the vectorized GELU/tanh (a few ulp). That is far inside the
// ~1e-5 sqrt(K) relative an FP32 path is allowed.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <tbb/task_arena.h>

#include "kernels/cpu/isa.h"
#include "kernels/cpu/select.h"
#include "kernels/cpu/spmm_f32.h"
#include "kernels/reference/reference.h"

namespace sk = spinel::kernels;
namespace sd = spinel::kernels::spmm_f32_detail;
using spinel::Activation;
using spinel::Precision;
using sk::Isa;

namespace {

#ifdef SPINEL_SANITIZED
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

struct RestoreIsa {
  Isa prev;
  explicit RestoreIsa(Isa cap) : prev(sk::set_max_isa(cap)) {}
  ~RestoreIsa() { sk::set_max_isa(prev); }
};

// Every kernel build this CPU runs.
std::vector<const sd::Kernel*> runnable_kernels() {
  std::vector<const sd::Kernel*> v{&sd::kernel_scalar()};
  if (sk::cpu_supports(Isa::Avx2)) {
    v.push_back(&sd::kernel_avx2());
    v.push_back(&sd::kernel_avx2_w16());
  } else {
    MESSAGE("skipping the AVX2 kernels: this CPU has no AVX2");
  }
  if (sk::cpu_has_avx512_core())
    v.push_back(&sd::kernel_avx512());
  else
    MESSAGE("skipping spmm_f32_4x1_64x4_avx512: this CPU has no AVX-512 (its 16-lane code runs as avx2_w16)");
  return v;
}

// W [K, N] with about `sparsity` of its 4x1 blocks zero (exactly all at 1.0,
// none at 0.0); inside nonzero blocks single weights may be 0. Block-rows
// br % 7 == 3 are left empty when some_empty_rows (whole output channels
// pruned).
std::vector<float> make_weights(int64_t K, int64_t N, double sparsity, uint32_t seed,
                                bool some_empty_rows) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  const float wr = 1.5f / std::sqrt(static_cast<float>(K));
  std::uniform_real_distribution<float> val(-wr, wr);
  std::vector<float> W(static_cast<size_t>(K * N), 0.f);
  for (int64_t n0 = 0; n0 < N; n0 += 4) {
    if (some_empty_rows && (n0 / 4) % 7 == 3) continue;
    for (int64_t k = 0; k < K; ++k) {
      if (sparsity >= 1.0 || (sparsity > 0.0 && u(rng) < sparsity)) continue;
      const int64_t n1 = std::min(N, n0 + 4);
      for (int64_t n = n0; n < n1; ++n) W[k * N + n] = u(rng) < 0.1 ? 0.f : val(rng);
      if (W[k * N + n0] == 0.f) W[k * N + n0] = wr / 2;
    }
  }
  return W;
}

std::vector<float> uniform(size_t n, float lo, float hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

enum class Res { None, Separate, InPlace };

struct Epi {
  Activation act = Activation::None;
  bool bias = false;
  Res res = Res::None;
};

std::string act_str(Activation a) { return spinel::activation_name(a); }

// Everything one case compares against.
struct Problem {
  int64_t M, K, N, ldx, ldy;
  std::vector<float> W, bias, x, residual;  // x [M, ldx]; residual [M, ldy]
  sk::PackedF32Sparse packed, packed_nobias;

  Problem(int64_t M_, int64_t K_, int64_t N_, double sparsity, uint32_t seed)
      : M(M_), K(K_), N(N_), ldx(K_ + (seed % 3)), ldy(N_ + 3) {
    W = make_weights(K, N, sparsity, seed, seed % 2 == 0);
    bias = uniform(static_cast<size_t>(N), -0.5f, 0.5f, seed + 1);
    x = uniform(static_cast<size_t>(std::max<int64_t>(M, 1) * ldx), -1.f, 1.2f, seed + 2);
    // a zero row and a row of one sign
    if (M >= 3) std::fill(x.begin() + ldx, x.begin() + 2 * ldx, 0.f);
    if (M >= 4)
      for (int64_t k = 0; k < K; ++k) x[3 * ldx + k] = std::fabs(x[3 * ldx + k]);
    residual = uniform(static_cast<size_t>(std::max<int64_t>(M, 1) * ldy), -1.f, 1.f, seed + 3);
    packed = sk::pack_f32_sparse(W.data(), K, N, bias.data());
    packed_nobias = sk::pack_f32_sparse(W.data(), K, N, nullptr);
  }

  // want [M, N] and the error scale A [M, N] of the tolerance.
  void expected(const Epi& e, std::vector<float>& want, std::vector<double>& scale) const {
    std::vector<float> xc(static_cast<size_t>(M * K)), rc(static_cast<size_t>(M * N));
    for (int64_t m = 0; m < M; ++m) {
      std::copy(x.begin() + m * ldx, x.begin() + m * ldx + K, xc.begin() + m * K);
      std::copy(residual.begin() + m * ldy, residual.begin() + m * ldy + N, rc.begin() + m * N);
    }
    want.assign(static_cast<size_t>(M * N), 0.f);
    sk::ref::linear_f32(xc.data(), W.data(), e.bias ? bias.data() : nullptr, M, K, N, e.act,
                        e.res != Res::None ? rc.data() : nullptr, want.data());
    // A = |b| + |x| |W|, row-major loops (the BERT-sized cases are large).
    std::vector<double> wa(W.size());
    for (size_t i = 0; i < W.size(); ++i) wa[i] = std::fabs(double(W[i]));
    scale.assign(static_cast<size_t>(M * N), 0.0);
    for (int64_t m = 0; m < M; ++m) {
      double* a = scale.data() + m * N;
      if (e.bias)
        for (int64_t n = 0; n < N; ++n) a[n] = std::fabs(double(bias[n]));
      for (int64_t k = 0; k < K; ++k) {
        const double xa = std::fabs(double(xc[m * K + k]));
        if (xa == 0) continue;
        const double* w = wa.data() + k * N;
        for (int64_t n = 0; n < N; ++n) a[n] += xa * w[n];
      }
    }
  }
};

constexpr int64_t kGuard = 16;
constexpr float kSlack = -777.25f, kGuardValue = -12345.5f;

// Runs one kernel on one epilogue and checks every element, the slack and the guard.
void run_and_check(const Problem& p, const Epi& e, const sd::Kernel* kern, int threads,
                   const std::vector<float>& want, const std::vector<double>& scale) {
  const int64_t M = p.M, N = p.N, ldy = p.ldy;
  const size_t n = static_cast<size_t>(std::max<int64_t>(M, 1) * ldy);
  std::vector<float> y(n + kGuard, kGuardValue);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t j = 0; j < ldy; ++j)
      y[m * ldy + j] = j < N ? std::numeric_limits<float>::quiet_NaN() : kSlack;
  sk::F32SparseEpilogue ep;
  ep.act = e.act;
  ep.ld_residual = ldy;
  if (e.res == Res::Separate) ep.residual = p.residual.data();
  if (e.res == Res::InPlace) {
    for (int64_t m = 0; m < M; ++m)
      std::copy(p.residual.begin() + m * ldy, p.residual.begin() + m * ldy + N, y.begin() + m * ldy);
    ep.residual = y.data();
  }
  const sk::PackedF32Sparse& w = e.bias ? p.packed : p.packed_nobias;
  tbb::task_arena arena(threads);
  arena.execute([&] {
    if (kern)
      sd::spmm_f32_with(*kern, w, p.x.data(), M, p.ldx, ep, y.data(), ldy);
    else
      sk::spmm_f32(w, p.x.data(), M, p.ldx, ep, y.data(), ldy);
  });
  int64_t bad = 0, slack = 0;
  double worst = 0;
  int64_t wm = -1, wn = -1;
  const double sk_ = 1e-6 * std::sqrt(double(p.K));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t j = 0; j < ldy; ++j) {
      const float g = y[m * ldy + j];
      if (j >= N) {
        slack += g != kSlack;
        continue;
      }
      const double wv = want[m * N + j];
      const double allowed = sk_ * scale[m * N + j] + 1e-6 * std::fabs(wv) + 1e-7;
      double err = std::fabs(double(g) - wv);
      if (std::isnan(err)) err = std::numeric_limits<double>::infinity();
      if (err > allowed) ++bad;
      if (err / allowed > worst) {
        worst = err / allowed;
        wm = m;
        wn = j;
      }
    }
  const bool guard_ok = std::all_of(y.begin() + static_cast<std::ptrdiff_t>(n), y.end(),
                                    [](float v) { return v == kGuardValue; });
  const std::string kname = kern ? kern->name : sk::spmm_f32_kernel_name();
  INFO(kname << " threads=" << threads << " M=" << M << " K=" << p.K << " N=" << N
             << " sparsity=" << p.packed.sparsity << " act=" << act_str(e.act) << " bias=" << e.bias
             << " residual=" << std::string(e.res == Res::None ? "none" : e.res == Res::Separate ? "separate" : "in place")
             << "; worst at [" << wm << "][" << wn << "]: "
             << (wm >= 0 ? y[wm * ldy + wn] : 0.f) << " vs " << (wm >= 0 ? want[wm * N + wn] : 0.f)
             << " (" << worst << " of the tolerance)");
  CHECK(bad == 0);
  CHECK(slack == 0);
  CHECK(guard_ok);
}

Epi epi_of(int i) {
  static const Activation acts[] = {Activation::None, Activation::GeluErf, Activation::GeluTanh,
                                    Activation::Tanh};
  Epi e;
  e.act = acts[i % 4];
  e.bias = (i / 4) % 2;
  e.res = static_cast<Res>((i / 8) % 3);
  return e;
}

void check_problem(const Problem& p, const std::vector<Epi>& epis,
                   const std::vector<const sd::Kernel*>& kernels) {
  std::vector<float> want;
  std::vector<double> scale;
  for (const Epi& e : epis) {
    p.expected(e, want, scale);
    for (const sd::Kernel* k : kernels)
      for (int threads : {1, 2}) run_and_check(p, e, k, threads, want, scale);
  }
}

}  // namespace

TEST_CASE("pack_f32_sparse: layout, short block-rows, sparsity, bad shapes") {
  const int64_t K = 5, N = 7;  // block-rows: channels 0-3 and 4-6 (short)
  std::vector<float> W(K * N, 0.f);
  W[1 * N + 2] = 1.5f;   // block-row 0, k = 1
  W[4 * N + 0] = -2.f;   // block-row 0, k = 4
  W[4 * N + 3] = 3.f;
  W[2 * N + 6] = 0.25f;  // block-row 1, k = 2
  W[3 * N + 4] = -0.f;   // a negative zero is a zero
  const std::vector<float> bias = {1, 2, 3, 4, 5, 6, 7};
  const auto p = sk::pack_f32_sparse(W.data(), K, N, bias.data());
  CHECK(p.nbr == 2);
  CHECK(p.nnz_blocks == 3);
  REQUIRE(p.row_ptr == std::vector<int32_t>{0, 2, 3});
  CHECK(p.kidx == std::vector<int32_t>{1, 4, 2});
  CHECK(p.w == std::vector<float>{0, 0, 1.5f, 0, -2.f, 0, 0, 3.f, 0, 0, 0.25f, 0});
  CHECK(p.bias == std::vector<float>{1, 2, 3, 4, 5, 6, 7, 0});
  CHECK(p.sparsity == doctest::Approx(1.0 - 3.0 / 10.0));
  CHECK(sk::block_sparsity_4x1_f32(W.data(), K, N) == doctest::Approx(p.sparsity));
  const auto nb = sk::pack_f32_sparse(W.data(), K, N, nullptr);
  CHECK(nb.bias == std::vector<float>(8, 0.f));
  const std::vector<float> zeros(12, 0.f);
  const auto z = sk::pack_f32_sparse(zeros.data(), 3, 4, nullptr);
  CHECK(z.nnz_blocks == 0);
  CHECK(z.sparsity == 1.0);
  CHECK(z.row_ptr == std::vector<int32_t>{0, 0});
  CHECK_THROWS_AS(sk::pack_f32_sparse(W.data(), 0, 7, nullptr), std::invalid_argument);
  CHECK_THROWS_AS(sk::pack_f32_sparse(W.data(), 5, 0, nullptr), std::invalid_argument);
  CHECK_THROWS_AS(sk::pack_f32_sparse(nullptr, 5, 7, nullptr), std::invalid_argument);
  CHECK_THROWS_AS(sk::block_sparsity_4x1_f32(W.data(), -1, 7), std::invalid_argument);
}

TEST_CASE("spmm_f32: every kernel build vs the reference, shapes x sparsity x epilogues") {
  const auto kernels = runnable_kernels();
  std::vector<std::string> names;
  for (const auto* k : kernels) names.push_back(k->name);
  const int64_t Ms[] = {1, 2, 3, 17, 129, 300, 7, 8, 9, 16, 23, 24, 25, 48, 63, 64, 65, 130};
  const int64_t Ks[] = {1, 3, 4, 7, 9, 16, 17, 33, 100, 255};
  const int64_t Ns[] = {1, 2, 3, 4, 5, 7, 8, 12, 13, 36, 61, 130};
  const double sps[] = {0.0, 0.5, 0.9, 1.0};
  uint32_t seed = 1;
  int checked = 0;
  int i = 0;
  for (int64_t M : Ms)
    for (int rep = 0; rep < 4; ++rep, ++i) {
      const int64_t K = Ks[(i * 7 + 3) % 10], N = Ns[(i * 5 + 1) % 12];
      if (kSanitized && M * K * N > 300 * 100 * 36) continue;
      const Problem p(M, K, N, sps[i % 4], seed++);
      // three epilogues per shape, cycling through all 24
      check_problem(p, {epi_of(3 * i), epi_of(3 * i + 1), epi_of(3 * i + 2)}, kernels);
      checked += 3 * static_cast<int>(kernels.size()) * 2;
    }
  MESSAGE(checked << " (shape, sparsity, epilogue, kernel, threads) runs checked");
}

TEST_CASE("spmm_f32: every epilogue combination on every kernel build") {
  const auto kernels = runnable_kernels();
  std::vector<Epi> all;
  for (int i = 0; i < 24; ++i) all.push_back(epi_of(i));
  for (const auto& c : std::vector<std::tuple<int64_t, int64_t, int64_t, double>>{
           {1, 36, 8, 0.5}, {17, 64, 22, 0.9}, {70, 100, 37, 0.0}, {129, 33, 64, 1.0}, {3, 7, 5, 0.5}}) {
    const auto [M, K, N, sp] = c;
    check_problem(Problem(M, K, N, sp, static_cast<uint32_t>(M * 1000 + N)), all, kernels);
  }
}

TEST_CASE("spmm_f32: BERT-sized layers") {
  const auto kernels = runnable_kernels();
  struct S {
    int64_t M, K, N;
    double sp;
  };
  std::vector<S> shapes = {{17, 768, 768, 0.9}, {129, 768, 3072, 0.9}, {33, 3072, 768, 0.95},
                           {300, 768, 768, 0.5}};
  if (kSanitized) shapes = {{17, 768, 768, 0.9}};
  int i = 0;
  for (const S& s : shapes) {
    const Problem p(s.M, s.K, s.N, s.sp, 500 + static_cast<uint32_t>(i));
    // BERT's forms: GELU + bias (intermediate), bias + residual (outputs)
    Epi gelu{Activation::GeluErf, true, Res::None}, res{Activation::None, true, Res::InPlace};
    check_problem(p, {i % 2 ? gelu : res}, kernels);
    ++i;
  }
}

TEST_CASE("spmm_f32: dispatch at every ISA cap names and runs that level's kernel") {
  const Problem p(37, 40, 21, 0.6, 77);
  const Epi e{Activation::GeluErf, true, Res::Separate};
  std::vector<float> want;
  std::vector<double> scale;
  p.expected(e, want, scale);
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx2Vnni, Isa::Avx512Vnni}) {
    if (!sk::cpu_supports(isa)) continue;
    RestoreIsa cap(isa);
    // The level in effect: the cap asked for, or lower under SPINEL_ISA.
    const Isa level = sk::active_isa();
    CHECK(level <= isa);
    const std::string name = sk::spmm_f32_kernel_name();
    CAPTURE(name);
    if (level == Isa::Scalar) CHECK(name == sd::kernel_scalar().name);
    if (level == Isa::Avx2 || level == Isa::Avx2Vnni) CHECK(name == sd::kernel_avx2().name);
    if (level == Isa::Avx512Vnni)
      CHECK(name == (sk::cpu_has_avx512_core() ? sd::kernel_avx512().name : sd::kernel_avx2().name));
    for (int threads : {1, 2}) run_and_check(p, e, nullptr, threads, want, scale);
  }
}

TEST_CASE("spmm_f32: M = 0 writes nothing; bad strides are rejected") {
  const Problem p(4, 8, 8, 0.5, 3);
  std::vector<float> y(64, 1.f);
  sk::spmm_f32(p.packed, p.x.data(), 0, p.ldx, {}, y.data(), 8);
  CHECK(std::all_of(y.begin(), y.end(), [](float v) { return v == 1.f; }));
  CHECK_THROWS_AS(sk::spmm_f32(p.packed, p.x.data(), 4, 7, {}, y.data(), 8), std::invalid_argument);
  CHECK_THROWS_AS(sk::spmm_f32(p.packed, p.x.data(), 4, p.ldx, {}, y.data(), 7), std::invalid_argument);
}

TEST_CASE("choose_linear: F32 layers by stored or measured block sparsity, SPINEL_F32_SPARSE") {
  const char* old = std::getenv("SPINEL_F32_SPARSE");
  const std::string saved = old ? old : "";
  unsetenv("SPINEL_F32_SPARSE");
  const double x = sk::kCrossoverF32.min_sparsity;
  auto pick = [](double s, const float* W = nullptr, int64_t K = 8, int64_t N = 8) {
    return sk::choose_linear(Precision::F32, s, nullptr, K, N, W);
  };
  CHECK(pick(x).impl == sk::LinearImpl::SparseF32);
  CHECK(pick(0.95).impl == sk::LinearImpl::SparseF32);
  CHECK(pick(x - 0.01).impl == sk::LinearImpl::DnnlF32);
  CHECK(pick(0.0).impl == sk::LinearImpl::DnnlF32);
  CHECK(pick(-1).impl == sk::LinearImpl::DnnlF32);  // unknown, no weight to measure
  CHECK(pick(0.95).why.find("block sparsity 0.95 >=") != std::string::npos);
  // Not stored: measured from the f32 weight.
  const auto Ws = make_weights(16, 16, 1.0, 1, false), Wd = make_weights(16, 16, 0.0, 1, false);
  CHECK(pick(-1, Ws.data(), 16, 16).impl == sk::LinearImpl::SparseF32);
  CHECK(pick(-1, Wd.data(), 16, 16).impl == sk::LinearImpl::DnnlF32);
  setenv("SPINEL_F32_SPARSE", "0", 1);
  CHECK(pick(0.95).impl == sk::LinearImpl::DnnlF32);
  CHECK(pick(0.95).why.find("SPINEL_F32_SPARSE=0") != std::string::npos);
  setenv("SPINEL_F32_SPARSE", "on", 1);
  CHECK(pick(0.0).impl == sk::LinearImpl::SparseF32);
  setenv("SPINEL_F32_SPARSE", "auto", 1);
  CHECK(pick(0.0).impl == sk::LinearImpl::DnnlF32);
  // INT8 layers are not affected.
  setenv("SPINEL_F32_SPARSE", "1", 1);
  std::vector<int8_t> w8(64, 1);
  setenv("SPINEL_DENSE_S8", "dnnl", 1);
  CHECK(sk::choose_linear(Precision::S8Dense, 0.9, w8.data(), 8, 8).impl == sk::LinearImpl::DnnlU8S8);
  unsetenv("SPINEL_DENSE_S8");
  if (old)
    setenv("SPINEL_F32_SPARSE", saved.c_str(), 1);
  else
    unsetenv("SPINEL_F32_SPARSE");
  CHECK(std::string(sk::linear_impl_name(sk::LinearImpl::SparseF32)) == "sparse-f32");
}
