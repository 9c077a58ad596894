// INT8 kernels against their plain references: block-sparse u8 x s8 SpMM on
// every ISA level this CPU runs (forced with set_max_isa), the dense u8 x s8
// path on both of its kernels (our AMX-INT8 one, oneDNN's), quantize_rows_u8,
// and the ISA detection/capping API.
//
// Integer accumulators must match exactly; floats without GELU bit-exactly
// (the contract fixes the operation order); with GELU within 1e-5 relative
// (+1e-6 absolute, the vectorized erf); requantized u8 exactly without GELU
// and within 1 with it. Output buffers carry guard bytes before and after,
// and row strides with slack, to catch out-of-bounds writes.
#include <doctest/doctest.h>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#include <tbb/task_arena.h>

#include <Eigen/Core>

#include "kernels/cpu/huge_slab.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/ops.h"
#include "kernels/reference/reference.h"
#include "kernels/cpu/qgemm.h"
#include "kernels/cpu/select.h"

namespace sk = spinel::kernels;
using sk::Isa;

namespace {

constexpr size_t kGuard = 256;
constexpr uint8_t kGuardByte = 0xA5;

// A byte buffer with guard regions on both sides.
struct Guarded {
  std::vector<uint8_t> mem;
  size_t bytes;
  explicit Guarded(size_t n, uint8_t fill = 0) : mem(n + 2 * kGuard, kGuardByte), bytes(n) {
    std::fill(mem.begin() + kGuard, mem.begin() + kGuard + n, fill);
  }
  uint8_t* data() { return mem.data() + kGuard; }
  template <typename T>
  T* as() { return reinterpret_cast<T*>(data()); }
  bool guards_intact() const {
    for (size_t i = 0; i < kGuard; ++i)
      if (mem[i] != kGuardByte || mem[kGuard + bytes + i] != kGuardByte) return false;
    return true;
  }
};

struct RestoreIsa {
  Isa prev;
  explicit RestoreIsa(Isa cap) : prev(sk::set_max_isa(cap)) {}
  ~RestoreIsa() { sk::set_max_isa(prev); }
};

// Every level this CPU runs. The ymm VNNI level runs here either as VEX
// AVX-VNNI or in its EVEX build on AVX-512 VNNI CPUs.
std::vector<Isa> runnable_isas() {
  std::vector<Isa> v;
  for (Isa i : {Isa::Scalar, Isa::Avx2, Isa::Avx2Vnni, Isa::Avx512Vnni}) {
    if (sk::cpu_supports(i)) {
      v.push_back(i);
    } else {
      MESSAGE("skipping ISA " << sk::isa_name(i) << ": this CPU does not run it");
    }
  }
  return v;
}

// W [K, N] with about `sparsity` of its 4x1 blocks zero; nonzero blocks
// random in [-127, 127] (some elements inside them 0, one forced nonzero so
// the block really is nonzero). Block-rows listed in empty_brs are all zero.
std::vector<int8_t> make_weights(int64_t K, int64_t N, double sparsity, uint32_t seed,
                                 bool some_empty_block_rows) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::uniform_int_distribution<int> val(-127, 127);
  std::vector<int8_t> W(static_cast<size_t>(K * N), 0);
  const int64_t nbr = N / 4;
  for (int64_t br = 0; br < nbr; ++br) {
    const bool empty = some_empty_block_rows && (br % 5 == 1);
    for (int64_t k = 0; k < K; ++k) {
      if (empty || u(rng) < sparsity) continue;
      for (int c = 0; c < 4; ++c) {
        int v = val(rng);
        if (u(rng) < 0.1) v = 0;
        // extremes exercise the int16 overflow of u8*s8 pair sums
        if (u(rng) < 0.05) v = (u(rng) < 0.5) ? 127 : -127;
        W[k * N + 4 * br + c] = static_cast<int8_t>(v);
      }
      if (W[k * N + 4 * br] == 0) W[k * N + 4 * br] = 1;
    }
  }
  return W;
}

std::vector<uint8_t> make_input(int64_t M, int64_t ldx, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(0, 255);
  std::vector<uint8_t> x(static_cast<size_t>(std::max<int64_t>(M, 1) * ldx));
  for (auto& v : x) v = static_cast<uint8_t>(d(rng) < 40 ? 255 : d(rng));  // many 255s
  return x;
}

struct Case {
  int64_t M, K, N;
  double sparsity;
};

std::vector<Case> shape_cases() {
  std::vector<Case> cs;
  const int64_t Ms[] = {1, 2, 3, 4, 15, 16, 17, 63, 64, 65, 127, 128, 129, 384};
  const int64_t Ks[] = {4, 8, 12, 16, 20, 28, 32, 36, 64, 100, 256, 260, 768};
  const int64_t Ns[] = {4, 8, 12, 16, 20, 32, 36, 64, 128, 260};
  const double sps[] = {0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0};
  int i = 0;
  for (int64_t M : Ms)
    for (int rep = 0; rep < 3; ++rep, ++i) {
      const int64_t K = Ks[(i * 7 + 3) % 13], N = Ns[(i * 3 + 1) % 10];
      cs.push_back({M, K, N, sps[i % 7]});
    }
  // BERT-sized layers at a few M, and the extremes of K and N.
  for (int64_t M : {1, 17, 128}) {
    cs.push_back({M, 768, 768, 0.8});
    cs.push_back({M, 768, 3072, 0.9});
    cs.push_back({M, 3072, 768, 0.7});
  }
  cs.push_back({65, 768, 768, 0.0});
  cs.push_back({33, 4096, 4, 0.5});
  cs.push_back({33, 4, 4096, 0.5});
  cs.push_back({16, 4096, 64, 0.95});
  // The AVX-512 kernel's row offsets: 16-bit up to K = 8192, 32-bit past it.
  cs.push_back({33, 8192, 8, 0.9});
  cs.push_back({70, 8196, 8, 0.95});
  return cs;
}

template <typename F>
void in_arena(int threads, F&& f) {
  tbb::task_arena arena(threads);
  arena.execute(f);
}

bool close_f(float a, float b, double rel) {
  return std::fabs(double(a) - double(b)) <= rel * std::fabs(double(b)) + 1e-6;
}

}  // namespace

TEST_CASE("isa: detection, names, caps") {
  const Isa d = sk::detected_isa();
  MESSAGE("detected ISA: " << sk::isa_name(d) << ", AVX-VNNI (VEX): " << sk::cpu_has_avxvnni());
  CHECK(sk::cpu_supports(Isa::Scalar));
  CHECK(sk::cpu_supports(d));
  Isa parsed;
  for (Isa i : {Isa::Scalar, Isa::Avx2, Isa::Avx2Vnni, Isa::Avx512Vnni}) {
    REQUIRE(sk::parse_isa(sk::isa_name(i), &parsed));
    CHECK(parsed == i);
  }
  CHECK(sk::parse_isa("avx512", &parsed));
  CHECK(parsed == Isa::Avx512Vnni);
  CHECK_FALSE(sk::parse_isa("avx1024", &parsed));
  CHECK_FALSE(sk::parse_isa(nullptr, &parsed));
  {
    RestoreIsa cap(Isa::Scalar);
    CHECK(sk::active_isa() == Isa::Scalar);
    CHECK(std::string(sk::spmm_u8s8_kernel_name()).find("scalar") != std::string::npos);
  }
  {
    RestoreIsa cap(Isa::Avx512Vnni);  // a cap above the CPU changes nothing
    CHECK(static_cast<int>(sk::active_isa()) <= static_cast<int>(d));
  }
}

TEST_CASE("pack_s8_sparse: layout, counts and rejected shapes") {
  const int64_t K = 12, N = 8;
  std::vector<int8_t> W(K * N, 0);
  // block-row 0: k = 1, 5, 6, 7, 11 nonzero -> 2 groups (second padded)
  for (int64_t k : {1, 5, 6, 7, 11}) W[k * N + 2] = static_cast<int8_t>(k);
  // block-row 1: empty
  std::vector<float> sw(N, 0.5f);
  const auto p = sk::pack_s8_sparse(W.data(), K, N, sw.data(), nullptr);
  CHECK(p.nnz_blocks == 5);
  CHECK(p.groups == 2);
  REQUIRE(p.group_ptr.size() == 3);
  CHECK(p.group_ptr[0] == 0);
  CHECK(p.group_ptr[1] == 2);
  CHECK(p.group_ptr[2] == 2);
  CHECK(p.kidx[0] == 1);
  CHECK(p.kidx[3] == 7);
  CHECK(p.kidx[4] == 11);
  CHECK(p.kidx[5] == 11);  // padding repeats the last valid index
  // the AVX-512 kernel's offsets: kidx * 8 in 16 bits (K <= 8192), no 32-bit copy
  REQUIRE(p.koff8.size() == p.kidx.size());
  for (size_t i = 0; i < p.kidx.size(); ++i) CHECK(p.koff8[i] == p.kidx[i] * 8);
  CHECK(p.koff64.empty());
  CHECK(p.w[16 + 4 * 2 + 0] == 11);
  CHECK(p.w[16 + 4 * 2 + 1] == 0);  // padding weight
  CHECK(p.w[4 * 2 + 1] == 5);
  CHECK(p.wsum[2] == 1 + 5 + 6 + 7 + 11);
  // The bounds the blocked output's NaN test uses: max |scale_w|, max |bias|
  // (0 without one), +inf when one is not finite.
  CHECK(p.scale_w_max == 0.5);
  CHECK(p.bias_max == 0.0);
  {
    std::vector<float> sw2(sw), b2(N, -0.25f);
    b2[3] = -3.f;
    CHECK(sk::pack_s8_sparse(W.data(), K, N, sw2.data(), b2.data()).bias_max == 3.0);
    b2[5] = std::nanf("");
    CHECK(std::isinf(sk::pack_s8_sparse(W.data(), K, N, sw2.data(), b2.data()).bias_max));
    sw2[7] = -INFINITY;
    CHECK(std::isinf(sk::pack_s8_sparse(W.data(), K, N, sw2.data(), nullptr).scale_w_max));
  }
  // The zero-point correction's int16 words: lo + 128 hi = -wsum, lo in [0, 128).
  REQUIRE(p.wsum_pairs.size() == static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) {
    const uint32_t pw = static_cast<uint32_t>(p.wsum_pairs[n]);
    const int32_t lo = static_cast<int16_t>(pw & 0xFFFF), hi = static_cast<int16_t>(pw >> 16);
    CAPTURE(n);
    CHECK(lo >= 0);
    CHECK(lo < 128);
    CHECK(lo + 128 * hi == -p.wsum[n]);
  }
  CHECK(p.sparsity == doctest::Approx(1.0 - 5.0 / 24.0));
  CHECK(sk::block_sparsity_4x1(W.data(), K, N) == doctest::Approx(p.sparsity));
  CHECK_THROWS_AS(sk::pack_s8_sparse(W.data(), 10, 8, sw.data(), nullptr), std::invalid_argument);
  CHECK_THROWS_AS(sk::pack_s8_sparse(W.data(), 12, 6, sw.data(), nullptr), std::invalid_argument);
  CHECK_THROWS_AS(sk::pack_s8_sparse(W.data(), 0, 8, sw.data(), nullptr), std::invalid_argument);
}

TEST_CASE("interleave_block_u8_zmm: the generic interleave's bytes, short blocks included") {
  if (!sk::cpu_supports(Isa::Avx512Vnni)) {
    MESSAGE("no AVX-512 VNNI here: the zmm interleave cannot run (the generic one is the path)");
    return;
  }
  uint32_t seed = 7;
  // Blocks of 1..16 tokens take the one-vector path; 17+ the general one.
  for (int64_t M : {1, 3, 4, 5, 15, 16, 17, 31, 64, 65, 80, 100, 129})
    for (int64_t K : {1, 4, 15, 16, 63, 64, 65, 130, 300}) {
      const int64_t ldx = K + (seed++ % 3) * 7;
      const auto x = make_input(M, ldx, seed * 13);
      for (int64_t m_begin = 0; m_begin < M; m_begin += 64) {
        CAPTURE(M);
        CAPTURE(K);
        CAPTURE(m_begin);
        std::vector<uint8_t> ref(static_cast<size_t>(K * 64), 0xEE), got(static_cast<size_t>(K * 64 + 64), 0xEE);
        uint8_t* g = got.data() + (64 - reinterpret_cast<uintptr_t>(got.data()) % 64) % 64;
        sk::qgemm_detail::interleave_block_u8(x.data(), M, K, ldx, m_begin, 4, ref.data());
        sk::qgemm_detail::interleave_block_u8_zmm(x.data(), M, K, ldx, m_begin, 4, g);
        CHECK(std::memcmp(ref.data(), g, ref.size()) == 0);
      }
    }
}

TEST_CASE("spmm_u8s8_acc: exact int32 on every ISA, 1 and 2 threads") {
  const auto isas = runnable_isas();
  uint32_t seed = 1;
  int checked = 0;
  for (const Case& c : shape_cases()) {
    ++seed;
    const int64_t ldx = c.K + (seed % 3) * 5;  // odd strides too
    const auto W = make_weights(c.K, c.N, c.sparsity, seed, seed % 2 == 0);
    const auto x = make_input(c.M, ldx, seed * 31);
    std::vector<float> sw(c.N, 1.f);
    const auto p = sk::pack_s8_sparse(W.data(), c.K, c.N, sw.data(), nullptr);
    std::vector<int32_t> ref(static_cast<size_t>(c.M * c.N));
    sk::ref::gemm_u8s8_acc(x.data(), c.M, c.K, ldx, W.data(), c.N, ref.data());
    const int64_t ldy = c.N + 3;
    for (Isa isa : isas) {
      RestoreIsa cap(isa);
      for (int threads : {1, 2}) {
        const std::string kname = sk::spmm_u8s8_kernel_name();
        CAPTURE(kname);
        CAPTURE(threads);
        CAPTURE(c.M);
        CAPTURE(c.K);
        CAPTURE(c.N);
        CAPTURE(c.sparsity);
        Guarded out(sizeof(int32_t) * std::max<int64_t>(c.M, 1) * ldy, 0x5A);
        in_arena(threads, [&] { sk::spmm_u8s8_acc(p, x.data(), c.M, ldx, out.as<int32_t>(), ldy); });
        CHECK(out.guards_intact());
        int64_t bad = 0;
        for (int64_t m = 0; m < c.M; ++m)
          for (int64_t n = 0; n < c.N; ++n) bad += out.as<int32_t>()[m * ldy + n] != ref[m * c.N + n];
        CHECK(bad == 0);
        // the row-stride slack is never written
        int64_t slack = 0;
        for (int64_t m = 0; m < c.M; ++m)
          for (int64_t n = c.N; n < ldy; ++n) slack += out.as<int32_t>()[m * ldy + n] != 0x5A5A5A5A;
        CHECK(slack == 0);
        ++checked;
      }
    }
  }
  MESSAGE(checked << " (shape, sparsity, ISA, threads) combinations checked");
}

namespace {

// The dense INT8 kernels DenseLinearU8S8 chooses between (SPINEL_DENSE_S8,
// read at construction): ours on AMX-INT8 where this CPU has it, oneDNN's;
// oneDNN's on OpenMP and on TBB tasks over rows or over column parts of W
// (SPINEL_DENSE_POOL, SPINEL_DENSE_SPLIT, read at construction).
std::vector<const char*> dense_kernels() {
  std::vector<const char*> v;
  if (sk::cpu_has_amx_int8() && sk::active_isa() == Isa::Avx512Vnni)
    v.push_back("amx");
  else
    MESSAGE("the AMX-INT8 dense kernel is not tested here: this CPU has no usable AMX-INT8");
  for (const char* k : {"dnnl-omp", "dnnl-tbb-rows", "dnnl-tbb-cols"}) v.push_back(k);
  return v;
}
struct DenseKernelEnv {
  explicit DenseKernelEnv(const std::string& k) {
    setenv("SPINEL_DENSE_S8", k == "amx" ? "amx" : "dnnl", 1);
    if (k == "dnnl-omp") setenv("SPINEL_DENSE_POOL", "omp", 1);
    if (k == "dnnl-tbb-rows" || k == "dnnl-tbb-cols") setenv("SPINEL_DENSE_POOL", "tbb", 1);
    if (k == "dnnl-tbb-rows") setenv("SPINEL_DENSE_SPLIT", "rows", 1);
    if (k == "dnnl-tbb-cols") setenv("SPINEL_DENSE_SPLIT", "cols", 1);
  }
  ~DenseKernelEnv() {
    unsetenv("SPINEL_DENSE_S8");
    unsetenv("SPINEL_DENSE_POOL");
    unsetenv("SPINEL_DENSE_SPLIT");
  }
};

// Bytes that end exactly where an inaccessible page begins: a kernel that
// reads past them faults instead of passing by luck (the AMX tile loads are
// not instrumented by ASan).
struct PageEnd {
  size_t len = 0, total = 0;
  uint8_t* base = nullptr;
  explicit PageEnd(size_t n) : len(n) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    total = (n + page - 1) / page * page + page;
    void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED);
    base = static_cast<uint8_t*>(p);
    REQUIRE(mprotect(base + total - page, page, PROT_NONE) == 0);
  }
  ~PageEnd() { munmap(base, total); }
  uint8_t* data() { return base + (total - static_cast<size_t>(sysconf(_SC_PAGESIZE))) - len; }
};

void check_epilogue(int64_t M, int64_t K, int64_t N, double sparsity, uint32_t seed, bool dense_path) {
  const int64_t ldx = K + 1;
  const auto W = make_weights(K, N, sparsity, seed, true);
  const auto x = make_input(M, ldx, seed + 7);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uf(-1.f, 1.f);
  std::vector<float> sw(N), bias(N), xs(M);
  std::vector<int32_t> zp(M);
  for (auto& v : sw) v = 0.002f + 0.001f * std::fabs(uf(rng));
  for (auto& v : bias) v = uf(rng);
  for (auto& v : xs) v = 0.01f + 0.01f * std::fabs(uf(rng));
  for (auto& v : zp) v = static_cast<int32_t>(rng() % 256);
  const int64_t ldr = N + 2;
  std::vector<float> residual(static_cast<size_t>(M * ldr));
  for (auto& v : residual) v = 2.f * uf(rng);
  const auto isas = dense_path ? std::vector<Isa>{Isa::Scalar, sk::detected_isa()} : runnable_isas();

  for (int combo = 0; combo < 32; ++combo) {
    const bool gelu = combo & 1, use_res = combo & 2, use_bias = combo & 4, requant = combo & 8;
    // The coarse GELU (only with GELU): within 2e-5 max(1, |y|) of the exact
    // one, so against the reference 1e-4 + 3e-5 |r| on floats (a layout or
    // channel mistake is off by far more), one step on requantized bytes.
    const bool coarse = combo & 16;
    if (coarse && !gelu) continue;
    sk::QEpilogue ep;
    ep.gelu = gelu;
    ep.gelu_coarse = coarse;
    ep.residual = use_res ? residual.data() : nullptr;
    ep.ld_residual = ldr;
    ep.requantize = requant;
    ep.out_scale = 0.05f;
    ep.out_zp = 100;
    const float* b = use_bias ? bias.data() : nullptr;
    const int64_t ldy = N + 5;
    const size_t esz = requant ? 1 : 4;
    std::vector<uint8_t> ref(static_cast<size_t>(M * ldy) * esz);
    sk::ref::linear_u8s8(x.data(), M, K, ldx, xs.data(), zp.data(), W.data(), N, sw.data(), b, ep,
                         ref.data(), ldy);
    std::unique_ptr<sk::PackedS8Sparse> p;  // (the dense path's N need not be a multiple of 4)
    if (!dense_path) p = std::make_unique<sk::PackedS8Sparse>(sk::pack_s8_sparse(W.data(), K, N, sw.data(), b));
    // The dense layer on each of its kernels (our AMX one where it runs, oneDNN).
    std::vector<std::unique_ptr<sk::DenseLinearU8S8>> denses;
    if (dense_path)
      for (const char* k : dense_kernels()) {
        DenseKernelEnv env(k);
        denses.push_back(std::make_unique<sk::DenseLinearU8S8>(W.data(), K, N, sw.data(), b));
        CHECK(std::string(denses.back()->kernel_name()) ==
              (std::string(k) == "amx" ? "amx_u8s8_dense" : "dnnl_matmul_u8s8"));
      }
    for (Isa isa : isas) {
      RestoreIsa cap(isa);
      for (size_t di = 0; di < (dense_path ? denses.size() : 1); ++di)
      for (int threads : {1, 2}) {
        const std::string kern = dense_path ? denses[di]->kernel_name() : "sparse";
        CAPTURE(kern);
        CAPTURE(combo);
        CAPTURE(dense_path);
        const std::string isa_s = sk::isa_name(isa);
        CAPTURE(isa_s);
        CAPTURE(threads);
        CAPTURE(M);
        CAPTURE(K);
        CAPTURE(N);
        Guarded out(static_cast<size_t>(M * ldy) * esz);
        if (dense_path) {
          omp_set_num_threads(threads);
          in_arena(threads, [&] { denses[di]->run(x.data(), M, ldx, xs.data(), zp.data(), ep, out.data(), ldy); });
        } else {
          in_arena(threads, [&] {
            sk::spmm_u8s8(*p, x.data(), M, ldx, xs.data(), zp.data(), ep, out.data(), ldy);
          });
        }
        CHECK(out.guards_intact());
        int64_t bad = 0;
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < N; ++n) {
            if (requant) {
              const int a = out.data()[m * ldy + n], r = ref[m * ldy + n];
              bad += gelu ? std::abs(a - r) > 1 : a != r;
            } else {
              const float a = out.as<float>()[m * ldy + n];
              const float r = reinterpret_cast<const float*>(ref.data())[m * ldy + n];
              if (coarse)
                bad += !(std::fabs(double(a) - double(r)) <= 1e-4 + 3e-5 * std::fabs(double(r)));
              else
                bad += gelu ? !close_f(a, r, 1e-5) : std::memcmp(&a, &r, 4) != 0;
            }
          }
        CHECK(bad == 0);
      }
    }
  }
}

}  // namespace

TEST_CASE("spmm_u8s8: every epilogue combination on every ISA") {
  check_epilogue(1, 36, 8, 0.5, 11, false);
  check_epilogue(17, 64, 20, 0.7, 12, false);
  check_epilogue(70, 100, 36, 0.9, 13, false);
  check_epilogue(129, 256, 64, 0.0, 14, false);
  check_epilogue(40, 768, 128, 0.95, 15, false);
  // One block split by tokens on two threads (17..32 and 49..64 tokens, with
  // a residual): blocks of 16 + 13 and 32 + 21 tokens.
  check_epilogue(29, 200, 44, 0.8, 16, false);
  check_epilogue(53, 768, 96, 0.9, 17, false);
}

// The AVX-512 kernel corrects for the zero points with int16 words (zp, 128 zp)
// and the weights' (lo, hi) (PackedS8Sparse::wsum_pairs). Where they do not
// fit, a token tile with a zero point outside [0, 255] or a layer with a
// column sum past 128 * 2^15 in magnitude, it multiplies in 32 bits: the
// reference's bits either way.
TEST_CASE("spmm_u8s8: zero points outside [0, 255] and huge column sums keep the exact correction") {
  struct Case {
    int64_t M, K, N;
    bool big_column;
  };
  for (const Case c : {Case{37, 64, 16, false}, Case{70, 33280, 8, true}}) {
    auto W = make_weights(c.K, c.N, 0.5, 41, true);
    if (c.big_column)  // column 1: every weight 127, so wsum = 127 K > 128 * 32767
      for (int64_t k = 0; k < c.K; ++k) W[k * c.N + 1] = 127;
    const auto x = make_input(c.M, c.K, 43);
    std::vector<float> sw(c.N), bias(c.N), xs(c.M);
    for (int64_t n = 0; n < c.N; ++n) {
      sw[n] = 1e-4f * static_cast<float>(1 + n % 5);
      bias[n] = 0.1f * static_cast<float>(n % 3) - 0.1f;
    }
    std::vector<int32_t> zp(c.M);
    for (int64_t m = 0; m < c.M; ++m) {
      xs[m] = 0.01f + 0.001f * static_cast<float>(m % 7);
      // Tokens 0..15 in range (that tile may pair), then 300, -9, 256, -1...
      zp[m] = c.big_column || m < 16 ? static_cast<int32_t>((m * 37) % 256) : (m % 2 ? 256 + m : -m);
    }
    const auto p = sk::pack_s8_sparse(W.data(), c.K, c.N, sw.data(), bias.data());
    CHECK(p.wsum_pairs.empty() == c.big_column);
    CHECK(p.koff8.empty() == (c.K > 8192));
    sk::QEpilogue ep;
    std::vector<uint8_t> ref(static_cast<size_t>(c.M * c.N) * 4);
    sk::ref::linear_u8s8(x.data(), c.M, c.K, c.K, xs.data(), zp.data(), W.data(), c.N, sw.data(), bias.data(), ep,
                         ref.data(), c.N);
    for (Isa isa : runnable_isas()) {
      RestoreIsa cap(isa);
      for (int threads : {1, 2}) {
        const std::string isa_s = sk::isa_name(isa);
        CAPTURE(isa_s);
        CAPTURE(threads);
        CAPTURE(c.K);
        std::vector<float> y(static_cast<size_t>(c.M * c.N), -1.f);
        in_arena(threads, [&] { sk::spmm_u8s8(p, x.data(), c.M, c.K, xs.data(), zp.data(), ep, y.data(), c.N); });
        CHECK(std::memcmp(y.data(), ref.data(), ref.size()) == 0);
      }
    }
  }
}

namespace {
// A shape of the head-panel tests (panel 0: token rows).
struct PanelCase {
  int64_t M, K, N, panel;
  double sparsity;
  bool gelu;
};
// Their per-channel weight scales and biases and per-token input scales and
// zero points.
void panel_case_inputs(const PanelCase& c, std::vector<float>& sw, std::vector<float>& bias, std::vector<float>& xs,
                       std::vector<int32_t>& zp) {
  sw.resize(static_cast<size_t>(c.N));
  bias.resize(static_cast<size_t>(c.N));
  xs.resize(static_cast<size_t>(c.M));
  zp.resize(static_cast<size_t>(c.M));
  for (int64_t n = 0; n < c.N; ++n) {
    sw[n] = 0.001f * float(1 + n % 13);
    bias[n] = 0.1f * float(n % 7) - 0.3f;
  }
  for (int64_t m = 0; m < c.M; ++m) {
    xs[m] = 0.01f + 0.001f * float(m % 5);
    zp[m] = static_cast<int32_t>((m * 37) % 256);
  }
}
}  // namespace

TEST_CASE("spmm_u8s8_panels: spmm_u8s8's bits in head panels, every ISA, 1 and 2 threads") {
  using P = PanelCase;
  const P cases[] = {{1, 64, 64, 16, 0.5, false},    {17, 100, 96, 32, 0.0, true},
                     {63, 36, 192, 64, 0.9, false},  {65, 768, 2304, 64, 0.9, false},
                     {128, 256, 384, 32, 1.0, true}, {129, 768, 768, 64, 0.7, false},
                     {200, 64, 48, 48, 0.8, false},  {384, 128, 2304, 64, 0.95, true},
                     // Q, K and V of 2, 8 and 12 heads in one token block:
                     // split by heads on 2 threads (qkv_head_pieces).
                     {40, 128, 384, 64, 0.8, false}, {5, 64, 768, 32, 0.5, true},
                     {64, 768, 2304, 64, 0.9, true}};
  for (const P& c : cases) {
    const auto W = make_weights(c.K, c.N, c.sparsity, static_cast<uint32_t>(c.M * 7 + c.N), true);
    const auto x = make_input(c.M, c.K, static_cast<uint32_t>(c.K + 3));
    std::vector<float> sw, bias, xs;
    std::vector<int32_t> zp;
    panel_case_inputs(c, sw, bias, xs, zp);
    const auto p = sk::pack_s8_sparse(W.data(), c.K, c.N, sw.data(), bias.data());
    sk::QEpilogue ep;
    ep.gelu = c.gelu;
    for (Isa isa : runnable_isas()) {
      RestoreIsa cap(isa);
      for (int threads : {1, 2}) {
        std::vector<float> rows(static_cast<size_t>(c.M * c.N));
        Guarded pan(rows.size() * sizeof(float), 0xFF);
        in_arena(threads, [&] {
          sk::spmm_u8s8(p, x.data(), c.M, c.K, xs.data(), zp.data(), ep, rows.data(), c.N);
          sk::spmm_u8s8_panels(p, x.data(), c.M, c.K, xs.data(), zp.data(), ep, pan.as<float>(), c.panel);
        });
        const std::string isa_s = sk::isa_name(isa);
        CAPTURE(isa_s);
        CAPTURE(threads);
        CAPTURE(c.M);
        CAPTURE(c.N);
        CAPTURE(c.panel);
        CHECK(pan.guards_intact());
        // Every value where the layout puts it, bit for bit (0xFF bytes, a
        // NaN, mark a value never written).
        int64_t wrong = 0;
        const float* y = pan.as<float>();
        for (int64_t m = 0; m < c.M; ++m)
          for (int64_t n = 0; n < c.N; ++n) {
            const float got = y[(n / c.panel) * c.M * c.panel + m * c.panel + n % c.panel];
            const float want = rows[static_cast<size_t>(m * c.N + n)];
            if (std::memcmp(&got, &want, 4) != 0) ++wrong;
          }
        CHECK(wrong == 0);
      }
    }
  }
}

TEST_CASE("qkv_head_pieces: the fused Q, K, V panels of one token block split by heads") {
  const char* old = std::getenv("SPINEL_QKV_HEADS");
  const std::string saved = old ? old : "";
  unsetenv("SPINEL_QKV_HEADS");
  {
    RestoreIsa native(Isa::Avx512Vnni);
    if (sk::active_isa() != Isa::Avx512Vnni) {
      MESSAGE("qkv_head_pieces with 64-token blocks not checked: the ISA level is "
              << sk::isa_name(sk::active_isa()));
    } else {
      CHECK(sk::spmm_u8s8_token_block() == 64);
      in_arena(2, [&] {
        CHECK(sk::qkv_head_pieces(2304, 64, 64) == 2);  // BERT-base's 12 heads, 64 tokens
        CHECK(sk::qkv_head_pieces(2304, 64, 1) == 2);
        CHECK(sk::qkv_head_pieces(2304, 64, 65) == 0);  // two token blocks: by blocks
        CHECK(sk::qkv_head_pieces(2304, 64, 0) == 0);
        CHECK(sk::qkv_head_pieces(192, 64, 16) == 0);   // one head: nothing to split
        CHECK(sk::qkv_head_pieces(2304, 0, 16) == 0);   // token rows, not panels
        CHECK(sk::qkv_head_pieces(2048, 64, 16) == 0);  // not 3 H panels
        CHECK(sk::qkv_head_pieces(960, 64, 16) == 0);   // 5 heads on 2 threads
        setenv("SPINEL_QKV_HEADS", "off", 1);
        CHECK(sk::qkv_head_pieces(2304, 64, 64) == 0);
        setenv("SPINEL_QKV_HEADS", "on", 1);
        CHECK(sk::qkv_head_pieces(2304, 64, 64) == 2);
        unsetenv("SPINEL_QKV_HEADS");
      });
      in_arena(1, [&] { CHECK(sk::qkv_head_pieces(2304, 64, 64) == 0); });
      in_arena(3, [&] { CHECK(sk::qkv_head_pieces(2304, 64, 64) == 3); });
    }
  }
  {
    // One block of the active kernel only: the ymm kernels' blocks are 32
    // tokens (64 would be two blocks, each thread building both).
    RestoreIsa ymm(Isa::Avx2);
    if (sk::active_isa() == Isa::Avx2) {
      CHECK(sk::spmm_u8s8_token_block() == 32);
      in_arena(2, [&] {
        CHECK(sk::qkv_head_pieces(2304, 64, 32) == 2);
        CHECK(sk::qkv_head_pieces(2304, 64, 33) == 0);
      });
    }
  }
  if (old)
    setenv("SPINEL_QKV_HEADS", saved.c_str(), 1);
  else
    unsetenv("SPINEL_QKV_HEADS");
}

TEST_CASE("QEpilogue::out_bf16: spmm_u8s8's f32 values rounded to BF16, in token rows or head panels") {
  // Where spmm_u8s8_bf16_available() (the 64-token kernel on a CPU with
  // AVX512_BF16): the bits of the f32 output rounded to nearest even (here
  // by Eigen::bfloat16), from u8 input (spmm_u8s8, _panels) and from f32
  // input (spmm_u8s8_f32in), token tails and odd N included; under a capped
  // ISA, or with a residual, requantization or RowsDone, refused.
  using P = PanelCase;
  const P cases[] = {{1, 64, 64, 16, 0.5, false}, {17, 100, 96, 32, 0.0, true}, {65, 768, 2304, 64, 0.9, false},
                     {129, 768, 768, 64, 0.7, false}, {200, 64, 48, 48, 0.8, false}, {384, 128, 2304, 64, 0.95, true},
                     {70, 64, 52, 0, 0.5, false}, {40, 64, 384, 64, 0.9, false}};
  for (const P& c : cases) {
    const auto W = make_weights(c.K, c.N, c.sparsity, static_cast<uint32_t>(c.M * 5 + c.N), true);
    const auto x = make_input(c.M, c.K, static_cast<uint32_t>(c.K + 9));
    std::vector<float> sw, bias, xs;
    std::vector<int32_t> zp;
    panel_case_inputs(c, sw, bias, xs, zp);
    std::vector<float> xf(static_cast<size_t>(c.M * c.K));
    for (size_t i = 0; i < xf.size(); ++i) xf[i] = 0.01f * float(static_cast<int>(i * 7919 % 401) - 200);
    const auto p = sk::pack_s8_sparse(W.data(), c.K, c.N, sw.data(), bias.data());
    sk::QEpilogue ep;
    ep.gelu = c.gelu;
    sk::QEpilogue eb = ep;
    eb.out_bf16 = true;
    CAPTURE(c.M);
    CAPTURE(c.N);
    CAPTURE(c.panel);
    if (!sk::spmm_u8s8_bf16_available()) {
      std::vector<uint16_t> h(static_cast<size_t>(c.M * c.N));
      CHECK_THROWS_AS(sk::spmm_u8s8(p, x.data(), c.M, c.K, xs.data(), zp.data(), eb, h.data(), c.N),
                      std::invalid_argument);
      MESSAGE("BF16 output not run: needs the 64-token AVX-512 VNNI kernel and AVX512_BF16 (refusal checked)");
      return;
    }
    // Where value (m, n) sits: token rows of ld c.N + 3, or the panels.
    const int64_t ld = c.N + 3;
    auto at = [&](int64_t m, int64_t n) {
      return c.panel > 0 ? (n / c.panel) * c.M * c.panel + m * c.panel + n % c.panel : m * ld + n;
    };
    const size_t count = static_cast<size_t>(c.panel > 0 ? c.M * c.N : c.M * ld);
    for (bool f32_in : {false, true})
      for (int threads : {1, 2}) {
        std::vector<float> rows(static_cast<size_t>(c.M * c.N));
        Guarded h(count * 2, 0xFF);
        in_arena(threads, [&] {
          if (f32_in) {
            sk::spmm_u8s8_f32in(p, xf.data(), c.M, c.K, nullptr, ep, rows.data(), c.N);
            sk::spmm_u8s8_f32in(p, xf.data(), c.M, c.K, nullptr, eb, h.data(), ld, c.panel);
          } else {
            sk::spmm_u8s8(p, x.data(), c.M, c.K, xs.data(), zp.data(), ep, rows.data(), c.N);
            if (c.panel > 0)
              sk::spmm_u8s8_panels(p, x.data(), c.M, c.K, xs.data(), zp.data(), eb, h.data(), c.panel);
            else
              sk::spmm_u8s8(p, x.data(), c.M, c.K, xs.data(), zp.data(), eb, h.data(), ld);
          }
        });
        CAPTURE(f32_in);
        CAPTURE(threads);
        CHECK(h.guards_intact());
        const uint16_t* y = h.as<uint16_t>();
        int64_t wrong = 0, untouched = 0;
        for (int64_t m = 0; m < c.M; ++m) {
          for (int64_t n = 0; n < c.N; ++n) {
            const Eigen::bfloat16 e(rows[static_cast<size_t>(m * c.N + n)]);
            uint16_t want;
            std::memcpy(&want, &e, 2);
            wrong += y[at(m, n)] != want;
          }
          if (c.panel == 0)
            for (int64_t n = c.N; n < ld; ++n) untouched += y[m * ld + n] != 0xFFFF;
        }
        CHECK(wrong == 0);
        CHECK(untouched == 0);
        // QEpilogue::k_pairs (panels of a fused Q, K, V output): K's panels
        // as pair words of the same BF16 values, Q's and V's as above; with
        // v_pairs (even M only) V's as pair words of two tokens too.
        for (bool vp : {false, true}) {
        CAPTURE(vp);
        sk::QEpilogue ek = eb;
        ek.k_pairs = true;
        ek.v_pairs = vp;
        Guarded hk(static_cast<size_t>(c.M * c.N) * 2, 0xFF);
        auto run_pairs = [&] {
          in_arena(threads, [&] {
            if (f32_in)
              sk::spmm_u8s8_f32in(p, xf.data(), c.M, c.K, nullptr, ek, hk.data(), ld, c.panel);
            else
              sk::spmm_u8s8_panels(p, x.data(), c.M, c.K, xs.data(), zp.data(), ek, hk.data(), c.panel);
          });
        };
        if (c.panel <= 0 || c.N % (3 * c.panel) != 0 || (vp && c.M % 2 != 0)) {
          CHECK_THROWS_AS(run_pairs(), std::invalid_argument);
          continue;
        }
        run_pairs();
        CHECK(hk.guards_intact());
        const uint16_t* yk = hk.as<uint16_t>();
        const int64_t heads = c.N / c.panel / 3;
        int64_t wrong_k = 0;
        for (int64_t m = 0; m < c.M; ++m)
          for (int64_t n = 0; n < c.N; ++n) {
            const int64_t pnl = n / c.panel, j = n % c.panel;
            const bool in_k = pnl >= heads && pnl < 2 * heads, in_v = vp && pnl >= 2 * heads;
            // K: pair word (j / 2, m) of the panel, the lower channel in its
            // low half; V: pair word (m / 2, j), the earlier token in it.
            const int64_t base = pnl * c.M * c.panel;
            const int64_t where = in_k   ? base + 2 * ((j / 2) * c.M + m) + j % 2
                                  : in_v ? base + 2 * ((m / 2) * c.panel + j) + m % 2
                                         : at(m, n);
            wrong_k += yk[where] != y[at(m, n)];
          }
        CHECK(wrong_k == 0);
        }
      }
    // What it cannot be combined with.
    std::vector<uint16_t> h(static_cast<size_t>(c.M * ld));
    std::vector<float> res(static_cast<size_t>(c.M * c.N));
    sk::QEpilogue with_res = eb;
    with_res.residual = res.data();
    CHECK_THROWS_AS(sk::spmm_u8s8(p, x.data(), c.M, c.K, xs.data(), zp.data(), with_res, h.data(), ld),
                    std::invalid_argument);
    sk::QEpilogue req = eb;
    req.requantize = true;
    CHECK_THROWS_AS(sk::spmm_u8s8(p, x.data(), c.M, c.K, xs.data(), zp.data(), req, h.data(), ld),
                    std::invalid_argument);
    const sk::RowsDone done{[](const void*, int64_t, int64_t) {}, nullptr, 16};
    CHECK_THROWS_AS(sk::spmm_u8s8(p, x.data(), c.M, c.K, xs.data(), zp.data(), eb, h.data(), ld, &done),
                    std::invalid_argument);
    {
      RestoreIsa cap(Isa::Avx2);
      CHECK(!sk::spmm_u8s8_bf16_available());
      CHECK_THROWS_AS(sk::spmm_u8s8(p, x.data(), c.M, c.K, xs.data(), zp.data(), eb, h.data(), ld),
                      std::invalid_argument);
    }
  }
}

TEST_CASE("spmm_u8s8_panels: bad panels and epilogues are refused") {
  const int64_t M = 8, K = 16, N = 64;
  const auto W = make_weights(K, N, 0.5, 3, false);
  const auto x = make_input(M, K, 4);
  std::vector<float> sw(N, 0.01f), xs(M, 0.02f), y(M * N), res(M * N);
  std::vector<int32_t> zp(M, 3);
  const auto p = sk::pack_s8_sparse(W.data(), K, N, sw.data(), nullptr);
  sk::QEpilogue ep;
  for (int64_t panel : {0, -16, 8, 24, 48, 128}) {
    CAPTURE(panel);
    CHECK_THROWS_AS(sk::spmm_u8s8_panels(p, x.data(), M, K, xs.data(), zp.data(), ep, y.data(), panel),
                    std::invalid_argument);
  }
  sk::QEpilogue with_res;
  with_res.residual = res.data();
  CHECK_THROWS_AS(sk::spmm_u8s8_panels(p, x.data(), M, K, xs.data(), zp.data(), with_res, y.data(), 16),
                  std::invalid_argument);
  sk::QEpilogue req;
  req.requantize = true;
  req.out_scale = 0.1f;
  CHECK_THROWS_AS(sk::spmm_u8s8_panels(p, x.data(), M, K, xs.data(), zp.data(), req, y.data(), 16),
                  std::invalid_argument);
}

TEST_CASE("layernorm_quantize_f32: layernorm_f32 then quantize_rows_u8, bit for bit, every ISA") {
  for (Isa isa : runnable_isas()) {
    RestoreIsa cap(isa);
    for (int threads : {1, 2})
      for (int64_t rows : {1, 3, 17, 64, 129, 300})
        for (int64_t cols : {5, 64, 100, 768}) {
          std::mt19937 rng(static_cast<uint32_t>(rows * 131 + cols));
          std::uniform_real_distribution<float> u(-3.f, 5.f);
          const auto n = static_cast<size_t>(rows * cols);
          std::vector<float> x(n), res(n), gamma(static_cast<size_t>(cols)), beta(gamma.size()), mul(gamma.size());
          for (auto& v : x) v = u(rng);
          for (auto& v : res) v = 0.3f * u(rng);
          for (size_t c = 0; c < gamma.size(); ++c) {
            gamma[c] = 0.5f + 0.1f * float(c % 11);
            beta[c] = 0.05f * float(c % 7) - 0.1f;
            mul[c] = 0.25f + 0.125f * float(c % 13);
          }
          if (rows > 3) std::fill(x.begin() + cols, x.begin() + 2 * cols, 1.5f);  // a constant row
          for (bool with_mul : {false, true})
            for (bool with_res : {false, true})
              for (bool alias : {false, true}) {
                const float* m = with_mul ? mul.data() : nullptr;
                const float* r = with_res ? res.data() : nullptr;
                std::vector<float> want_y = x, got_y = x, y1(n), y2(n);
                std::vector<uint8_t> want_q(n), got_q(n);
                std::vector<float> want_s(static_cast<size_t>(rows)), got_s(want_s.size());
                std::vector<int32_t> want_z(want_s.size()), got_z(want_s.size());
                in_arena(threads, [&] {
                  float* d1 = alias ? want_y.data() : y1.data();
                  float* d2 = alias ? got_y.data() : y2.data();
                  sk::layernorm_f32(want_y.data(), r, gamma.data(), beta.data(), 1e-12f, rows, cols, d1);
                  sk::quantize_rows_u8(d1, rows, cols, want_q.data(), want_s.data(), want_z.data(), -1, -1, m);
                  sk::layernorm_quantize_f32(got_y.data(), r, gamma.data(), beta.data(), 1e-12f, rows, cols, d2,
                                             m, got_q.data(), got_s.data(), got_z.data());
                });
                const std::string isa_s = sk::isa_name(isa);
                CAPTURE(isa_s);
                CAPTURE(threads);
                CAPTURE(rows);
                CAPTURE(cols);
                CAPTURE(with_mul);
                CAPTURE(with_res);
                CAPTURE(alias);
                const auto& wy = alias ? want_y : y1;
                const auto& gy = alias ? got_y : y2;
                CHECK(std::memcmp(wy.data(), gy.data(), n * sizeof(float)) == 0);
                CHECK(want_q == got_q);
                CHECK(std::memcmp(want_s.data(), got_s.data(), want_s.size() * sizeof(float)) == 0);
                CHECK(want_z == got_z);
              }
        }
  }
}

TEST_CASE("spmm_u8s8_f32in: quantize_rows_u8 then spmm_u8s8 (or _panels), bit for bit, every ISA") {
  struct C {
    int64_t M, K, N;
    double sparsity;
    int ep;  // 0 none, 1 GELU + bias, 2 residual, 3 requantize, 4 head panels of 64
  };
  const C cases[] = {{1, 64, 64, 0.5, 0},   {5, 36, 20, 0.0, 1},    {17, 100, 36, 0.9, 2},
                     {31, 3072, 64, 0.9, 0}, {48, 768, 192, 0.8, 4},
                     {63, 256, 64, 1.0, 3}, {64, 768, 128, 0.9, 4}, {65, 768, 768, 0.9, 2},
                     {128, 768, 2304, 0.9, 4}, {130, 260, 68, 0.7, 1}, {200, 64, 192, 0.95, 4},
                     {24, 768, 64, 0.9, 2},   {58, 768, 768, 0.9, 2}};
  for (const C& c : cases) {
    const auto W = make_weights(c.K, c.N, c.sparsity, static_cast<uint32_t>(c.M + c.N), true);
    std::mt19937 rng(static_cast<uint32_t>(c.M * 3 + c.K));
    std::uniform_real_distribution<float> uf(-2.f, 3.f);
    const int64_t ldx = c.K + 3;  // a row stride past K
    std::vector<float> x(static_cast<size_t>(c.M * ldx)), mul(static_cast<size_t>(c.K)), sw(static_cast<size_t>(c.N)),
        bias(static_cast<size_t>(c.N)), res(static_cast<size_t>(c.M * c.N));
    for (auto& v : x) v = uf(rng);
    for (auto& v : mul) v = std::exp2(uf(rng));
    for (auto& v : sw) v = 0.002f + 0.001f * std::fabs(uf(rng));
    for (auto& v : bias) v = uf(rng);
    for (auto& v : res) v = uf(rng);
    if (c.M > 3) {
      for (int64_t k = 0; k < c.K; ++k) x[static_cast<size_t>(1 * ldx + k)] = 0.f;  // an all-zero row
      x[static_cast<size_t>(2 * ldx + 1)] = std::nanf("");                       // a NaN row
      x[static_cast<size_t>(3 * ldx + c.K - 1)] = INFINITY;                      // an infinite value, last column
    }
    const auto p = sk::pack_s8_sparse(W.data(), c.K, c.N, sw.data(), c.ep == 1 ? bias.data() : nullptr);
    sk::QEpilogue ep;
    ep.gelu = c.ep == 1;
    if (c.ep == 2) ep.residual = res.data();
    if (c.ep == 3) {
      ep.requantize = true;
      ep.out_scale = 0.05f;
      ep.out_zp = 7;
    }
    const size_t esz = c.ep == 3 ? 1 : 4;
    for (Isa isa : runnable_isas()) {
      RestoreIsa cap(isa);
      for (int threads : {1, 2})
        for (const float* m : {static_cast<const float*>(nullptr), static_cast<const float*>(mul.data())}) {
          std::vector<uint8_t> xq(static_cast<size_t>(c.M * c.K));
          std::vector<float> xs(static_cast<size_t>(c.M));
          std::vector<int32_t> zp(static_cast<size_t>(c.M));
          Guarded want(static_cast<size_t>(c.M * c.N) * esz), got(static_cast<size_t>(c.M * c.N) * esz);
          in_arena(threads, [&] {
            sk::quantize_rows_u8(x.data(), c.M, c.K, xq.data(), xs.data(), zp.data(), ldx, c.K, m);
            if (c.ep == 4)
              sk::spmm_u8s8_panels(p, xq.data(), c.M, c.K, xs.data(), zp.data(), ep, want.as<float>(), 64);
            else
              sk::spmm_u8s8(p, xq.data(), c.M, c.K, xs.data(), zp.data(), ep, want.data(), c.N);
            sk::spmm_u8s8_f32in(p, x.data(), c.M, ldx, m, ep, got.data(), c.N, c.ep == 4 ? 64 : 0);
          });
          const std::string isa_s = sk::isa_name(isa);
          CAPTURE(isa_s);
          CAPTURE(threads);
          CAPTURE(c.M);
          CAPTURE(c.K);
          CAPTURE(c.N);
          CAPTURE(c.ep);
          CAPTURE(m != nullptr);
          CHECK(got.guards_intact());
          CHECK(std::memcmp(got.data(), want.data(), want.bytes) == 0);
        }
    }
  }
}

namespace {

// A RowsDone function that records, per row, how often it was handed over
// and the row's values at that moment.
struct RowsSeen {
  const float* y = nullptr;
  int64_t n = 0;
  std::vector<int> count;     // each row is in one call's range only: no two writers
  std::vector<float> values;  // y's rows as they were when handed over
  static void fn(const void* c, int64_t m0, int64_t rows) {
    auto& r = *const_cast<RowsSeen*>(static_cast<const RowsSeen*>(c));
    for (int64_t m = m0; m < m0 + rows; ++m) {
      ++r.count[static_cast<size_t>(m)];
      std::memcpy(&r.values[static_cast<size_t>(m * r.n)], r.y + m * r.n, sizeof(float) * r.n);
    }
  }
};

}  // namespace

TEST_CASE("RowsDone: every row handed over once, with its final values, every entry point and ISA") {
  const int64_t K = 96, N = 128;
  const auto W1 = make_weights(K, K, 0.7, 21, true), W2 = make_weights(K, N, 0.8, 22, true);
  std::vector<float> sw1(static_cast<size_t>(K), 0.004f), sw2(static_cast<size_t>(N), 0.003f),
      bias(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) bias[static_cast<size_t>(n)] = 0.01f * float(n % 13) - 0.05f;
  const auto p1 = sk::pack_s8_sparse(W1.data(), K, K, sw1.data(), nullptr);
  const auto p2 = sk::pack_s8_sparse(W2.data(), K, N, sw2.data(), bias.data());
  for (Isa isa : runnable_isas()) {
    RestoreIsa cap(isa);
    const bool chain = sk::spmm_u8s8_chain_available();
    // One token block (both threads split its channels: handed over after
    // the region), whole blocks per thread, and blocks split at a piece
    // boundary among whole ones (300 tokens, 3 threads).
    for (int64_t M : {1, 16, 40, 64, 65, 96, 100, 128, 200, 300})
      for (int threads : {1, 2, 3}) {
        const auto xq = make_input(M, K, static_cast<uint32_t>(M + 7));
        std::mt19937 rng(static_cast<uint32_t>(M * 5 + threads));
        std::uniform_real_distribution<float> uf(-2.f, 2.f);
        std::vector<float> xf(static_cast<size_t>(M * K)), res(static_cast<size_t>(M * N)),
            xs(static_cast<size_t>(M));
        for (auto& v : xf) v = uf(rng);
        for (auto& v : res) v = uf(rng);
        for (auto& v : xs) v = 0.01f + 0.001f * std::fabs(uf(rng));
        std::vector<int32_t> zp(static_cast<size_t>(M));
        for (int64_t m = 0; m < M; ++m) zp[static_cast<size_t>(m)] = static_cast<int32_t>(m % 200);
        sk::QEpilogue ep;
        ep.gelu = M % 2 == 1;
        ep.residual = res.data();
        // The chain's first Linear's output, for the two blocked entry points.
        const size_t nb = static_cast<size_t>((M + 63) / 64);
        std::vector<float> y_blk(nb * 64 * static_cast<size_t>(K));
        std::vector<uint8_t> x_blk_mem(nb * 64 * static_cast<size_t>(K) + 64);
        uint8_t* x_blk = x_blk_mem.data() + (64 - reinterpret_cast<uintptr_t>(x_blk_mem.data()) % 64) % 64;
        std::vector<float> bs(static_cast<size_t>(M));
        std::vector<int32_t> bz(static_cast<size_t>(M));
        std::vector<sk::BlockedRange> ranges;
        if (chain)
          in_arena(threads, [&] {
            ranges.resize(static_cast<size_t>(sk::spmm_u8s8_blocked_ranges(K, M)));
            sk::spmm_u8s8_to_blocked(p1, xq.data(), M, K, xs.data(), zp.data(), true, y_blk.data(), ranges.data());
            sk::quantize_blocked_u8(y_blk.data(), M, K, ranges.data(), x_blk, bs.data(), bz.data());
          });
        for (int entry = 0; entry < (chain ? 4 : 2); ++entry)
          for (int64_t min_rows : {int64_t{1}, int64_t{24}}) {
          auto call = [&](float* y, const sk::RowsDone* done) {
            switch (entry) {
              case 0: sk::spmm_u8s8(p2, xq.data(), M, K, xs.data(), zp.data(), ep, y, N, done); break;
              case 1: sk::spmm_u8s8_f32in(p2, xf.data(), M, K, nullptr, ep, y, N, 0, done); break;
              case 2: sk::spmm_u8s8_from_blocked_f32(p2, y_blk.data(), ranges.data(), M, ep, y, N, done); break;
              default: sk::spmm_u8s8_from_blocked(p2, x_blk, M, bs.data(), bz.data(), ep, y, N, done);
            }
          };
          std::vector<float> want(static_cast<size_t>(M * N)), got(static_cast<size_t>(M * N));
          RowsSeen seen;
          seen.y = got.data();
          seen.n = N;
          seen.count.assign(static_cast<size_t>(M), 0);
          seen.values.assign(static_cast<size_t>(M * N), std::nanf(""));
          const sk::RowsDone done{&RowsSeen::fn, &seen, min_rows};
          in_arena(threads, [&] {
            call(want.data(), nullptr);
            call(got.data(), &done);
          });
          const std::string isa_s = sk::isa_name(isa);
          CAPTURE(isa_s);
          CAPTURE(M);
          CAPTURE(threads);
          CAPTURE(entry);
          CAPTURE(min_rows);
          CHECK(std::memcmp(got.data(), want.data(), sizeof(float) * got.size()) == 0);
          int64_t once = 0;
          for (int c : seen.count) once += c == 1;
          CHECK(once == M);
          CHECK(std::memcmp(seen.values.data(), want.data(), sizeof(float) * want.size()) == 0);
        }
      }
  }
  // Finished rows are f32 token rows: not requantized u8, not head panels,
  // and a RowsDone needs its function.
  const auto xq = make_input(8, K, 3);
  std::vector<float> xf(static_cast<size_t>(8 * K), 0.5f), xs(8, 0.01f), y(static_cast<size_t>(8 * N));
  std::vector<int32_t> zp(8, 3);
  RowsSeen seen;
  const sk::RowsDone done{&RowsSeen::fn, &seen}, no_fn{};
  sk::QEpilogue req;
  req.requantize = true;
  req.out_scale = 0.1f;
  CHECK_THROWS_AS(sk::spmm_u8s8(p2, xq.data(), 8, K, xs.data(), zp.data(), req, y.data(), N, &done),
                  std::invalid_argument);
  CHECK_THROWS_AS(sk::spmm_u8s8_f32in(p2, xf.data(), 8, K, nullptr, sk::QEpilogue{}, y.data(), N, 64, &done),
                  std::invalid_argument);
  CHECK_THROWS_AS(sk::spmm_u8s8(p2, xq.data(), 8, K, xs.data(), zp.data(), sk::QEpilogue{}, y.data(), N, &no_fn),
                  std::invalid_argument);
}

TEST_CASE("DenseLinearU8S8 RowsDone: every row handed over once, with the reference's values, every kernel") {
  // The AMX kernel splits rows between threads where it adds a residual or
  // hands rows over (each thread all columns of its 16-row tiles): 17..300
  // tokens on 2 and 3 threads, with and without the residual.
  const int64_t K = 96, N = 80;
  const auto W = make_weights(K, N, 0.0, 31, false);
  std::vector<float> sw(static_cast<size_t>(N), 0.003f), bias(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) bias[static_cast<size_t>(n)] = 0.01f * float(n % 11) - 0.04f;
  for (const char* kern : dense_kernels()) {
    DenseKernelEnv env(kern);
    const sk::DenseLinearU8S8 dense(W.data(), K, N, sw.data(), bias.data());
    for (int64_t M : {1, 17, 33, 64, 100, 300})
      for (int threads : {1, 2, 3})
        for (bool res : {false, true}) {
          const auto x = make_input(M, K, static_cast<uint32_t>(M + 3));
          std::vector<float> xs(static_cast<size_t>(M)), residual(static_cast<size_t>(M * N));
          std::vector<int32_t> zp(static_cast<size_t>(M));
          for (int64_t m = 0; m < M; ++m) {
            xs[static_cast<size_t>(m)] = 0.01f + 0.0001f * float(m % 7);
            zp[static_cast<size_t>(m)] = static_cast<int32_t>((m * 29) % 256);
          }
          for (size_t i = 0; i < residual.size(); ++i) residual[i] = 0.5f - 0.01f * float(i % 97);
          sk::QEpilogue ep;
          ep.residual = res ? residual.data() : nullptr;
          std::vector<float> want(static_cast<size_t>(M * N));
          sk::ref::linear_u8s8(x.data(), M, K, K, xs.data(), zp.data(), W.data(), N, sw.data(), bias.data(), ep,
                               want.data(), N);
          Guarded got(sizeof(float) * static_cast<size_t>(M * N));
          RowsSeen seen;
          seen.y = got.as<float>();
          seen.n = N;
          seen.count.assign(static_cast<size_t>(M), 0);
          seen.values.assign(static_cast<size_t>(M * N), std::nanf(""));
          const sk::RowsDone done{&RowsSeen::fn, &seen, 1};
          omp_set_num_threads(threads);
          in_arena(threads, [&] {
            dense.run(x.data(), M, K, xs.data(), zp.data(), ep, got.data(), N, &done);
          });
          CAPTURE(kern);
          CAPTURE(M);
          CAPTURE(threads);
          CAPTURE(res);
          CHECK(got.guards_intact());
          int64_t once = 0, bad = 0, bad_seen = 0;
          for (int c : seen.count) once += c == 1;
          for (size_t i = 0; i < want.size(); ++i) {
            bad += std::memcmp(&got.as<float>()[i], &want[i], 4) != 0;
            bad_seen += std::memcmp(&seen.values[i], &want[i], 4) != 0;
          }
          CHECK(once == M);
          CHECK(bad == 0);
          CHECK(bad_seen == 0);
        }
  }
}

TEST_CASE("spmm_u8s8: residual may alias the f32 output") {
  const int64_t M = 37, K = 64, N = 24;
  const auto W = make_weights(K, N, 0.6, 5, false);
  const auto x = make_input(M, K, 6);
  std::vector<float> sw(N, 0.01f), xs(M, 0.02f);
  std::vector<int32_t> zp(M, 17);
  std::vector<float> res(M * N);
  for (size_t i = 0; i < res.size(); ++i) res[i] = 0.01f * float(i % 97);
  sk::QEpilogue ep;
  ep.residual = res.data();
  ep.ld_residual = N;
  std::vector<float> ref(M * N);
  sk::ref::linear_u8s8(x.data(), M, K, K, xs.data(), zp.data(), W.data(), N, sw.data(), nullptr,
                       ep, ref.data(), N);
  const auto p = sk::pack_s8_sparse(W.data(), K, N, sw.data(), nullptr);
  const sk::DenseLinearU8S8 dense(W.data(), K, N, sw.data(), nullptr);
  for (Isa isa : runnable_isas()) {
    RestoreIsa cap(isa);
    for (int path = 0; path < 2; ++path) {
      std::vector<float> y = res;
      sk::QEpilogue e = ep;
      e.residual = y.data();
      if (path == 0)
        sk::spmm_u8s8(p, x.data(), M, K, xs.data(), zp.data(), e, y.data(), N);
      else
        dense.run(x.data(), M, K, xs.data(), zp.data(), e, y.data(), N);
      CAPTURE(path);
      const std::string isa_s = sk::isa_name(isa);
        CAPTURE(isa_s);
      CHECK(std::memcmp(y.data(), ref.data(), sizeof(float) * M * N) == 0);
    }
  }
}

TEST_CASE("DenseLinearU8S8 (AMX kernel, oneDNN): exact int32 and every epilogue combination") {
  // shape_cases() (N a multiple of 4) plus shapes the dense path alone takes:
  // any N, token counts around the AMX kernel's 16- and 32-token blocks, K
  // around its 64-channel tiles, an odd number of 16-channel tiles.
  std::vector<Case> cases = shape_cases();
  for (const Case& c : std::vector<Case>{{1, 64, 32, 0},    {17, 768, 768, 0},  {128, 768, 3072, 0.5},
                                         {129, 3072, 768, 0}, {3, 20, 12, 0},    {16, 64, 16, 0},
                                         {31, 128, 48, 0},   {32, 192, 17, 0},  {33, 63, 1, 0},
                                         {48, 65, 33, 0},    {47, 1, 80, 0},    {300, 2048, 40, 0.3},
                                         {2000, 768, 48, 0}})
    cases.push_back(c);
  for (const char* kern : dense_kernels()) {
    CAPTURE(kern);
    for (const Case& c : cases) {
      for (int64_t ldx : {c.K, c.K + 3}) {
        const auto W = make_weights(c.K, c.N, c.sparsity, 99, false);
        const auto xv = make_input(c.M, ldx, 98);
        // x flush against an inaccessible page, its last row only K bytes long.
        const size_t xbytes = static_cast<size_t>((c.M - 1) * ldx + c.K);
        PageEnd x(xbytes);
        std::memcpy(x.data(), xv.data(), xbytes);
        std::vector<float> sw(c.N, 1.f);
        DenseKernelEnv env(kern);
        const sk::DenseLinearU8S8 dense(W.data(), c.K, c.N, sw.data(), nullptr);
        std::vector<int32_t> ref(c.M * c.N);
        sk::ref::gemm_u8s8_acc(xv.data(), c.M, c.K, ldx, W.data(), c.N, ref.data());
        for (int threads : {1, 2}) {
          omp_set_num_threads(threads);
          const int64_t ldacc = c.N + 1;
          Guarded out(sizeof(int32_t) * c.M * ldacc);
          in_arena(threads, [&] { dense.run_acc(x.data(), c.M, ldx, out.as<int32_t>(), ldacc); });
          CHECK(out.guards_intact());
          int64_t bad = 0;
          for (int64_t m = 0; m < c.M; ++m)
            for (int64_t n = 0; n < c.N; ++n) bad += out.as<int32_t>()[m * ldacc + n] != ref[m * c.N + n];
          CAPTURE(c.M);
          CAPTURE(c.K);
          CAPTURE(c.N);
          CAPTURE(ldx);
          CAPTURE(threads);
          CHECK(bad == 0);
        }
      }
    }
  }
  check_epilogue(1, 36, 8, 0.5, 21, true);
  check_epilogue(33, 256, 68, 0.0, 22, true);
  check_epilogue(128, 768, 768, 0.0, 23, true);
  check_epilogue(47, 100, 50, 0.0, 24, true);  // AMX: partial token tile, K and N tails
}

TEST_CASE("DenseLinearU8S8: one object, M and the source stride changing from call to call") {
  // Each thread keeps the oneDNN memories of a part's calls (DnnlArgs) and
  // remakes one only when its descriptor changes: a call after another M or
  // stride must not run with the previous call's shapes. The same object
  // serves every call here, back and forth between shapes, on 1 and 2
  // threads; each result is compared with the reference.
  const int64_t K = 192, N = 640;  // N = 640: two column parts on 2 threads
  const auto W = make_weights(K, N, 0.0, 301, false);
  std::vector<float> sw(N, 1.f);
  const std::vector<std::pair<int64_t, int64_t>> calls = {
      {32, K}, {5, K}, {32, K}, {128, K + 5}, {5, K + 1}, {200, K}, {1, K}, {32, K + 5}, {32, K}};
  for (const char* kern : dense_kernels()) {
    CAPTURE(kern);
    DenseKernelEnv env(kern);
    const sk::DenseLinearU8S8 dense(W.data(), K, N, sw.data(), nullptr);
    for (int threads : {1, 2}) {
      omp_set_num_threads(threads);
      for (size_t i = 0; i < calls.size(); ++i) {
        const int64_t M = calls[i].first, ldx = calls[i].second;
        const auto x = make_input(M, ldx, static_cast<uint32_t>(400 + i));
        std::vector<int32_t> ref(M * N);
        sk::ref::gemm_u8s8_acc(x.data(), M, K, ldx, W.data(), N, ref.data());
        std::vector<int32_t> out(M * N, -1);
        in_arena(threads, [&] { dense.run_acc(x.data(), M, ldx, out.data(), N); });
        int64_t bad = 0;
        for (int64_t j = 0; j < M * N; ++j) bad += out[j] != ref[j];
        CAPTURE(threads);
        CAPTURE(i);
        CAPTURE(M);
        CAPTURE(ldx);
        CHECK(bad == 0);
      }
    }
  }
}

namespace {
// Per-token input scales (0.02 x [0.5, 2)) and zero points (m * step % 256)
// of M tokens, for the dense epilogue tests.
void token_inputs(int64_t M, int32_t step, std::mt19937& rng, std::vector<float>& xs, std::vector<int32_t>& xz) {
  std::uniform_real_distribution<float> u(0.5f, 2.f);
  xs.resize(static_cast<size_t>(M));
  xz.resize(static_cast<size_t>(M));
  for (int64_t m = 0; m < M; ++m) {
    xs[m] = 0.02f * u(rng);
    xz[m] = static_cast<int32_t>(m * step % 256);
  }
}
}  // namespace

TEST_CASE("DenseLinearU8S8: the output quantized for the next Linear (QuantOut), the bits of y then quantize_rows_u8") {
  // Where a task holds whole rows (TBB split by rows, AVX-512 VNNI) the rows
  // are quantized from the epilogue's row buffer, every column part's
  // columns, and y is not written; elsewhere y is written and its rows
  // quantized when final. Either way: the bits of the f32 run followed by
  // quantize_rows_u8 with the same input scale. The AMX kernel writes y *
  // mul as f16 and quantizes that: the bits of quantize_rows_u8 on the f32
  // run's y * mul rounded to f16 (here by Eigen::half, round to nearest
  // even), with no mul; where a value leaves the f16 range (N = 48 with
  // huge: one column's bias 1e5) it redoes the call in f32, and the bits
  // are the first form's again. Without GELU (the one-pass epilogue) and
  // with both kinds of GELU, a bias, and N = 640 (two column parts on 2
  // threads) or 48 (one); N = 1024 at 600 tokens too: more than 1 MB of
  // output per thread, which the AMX kernel writes with streaming stores
  // (DenseLinearU8S8::run).
  const int64_t K = 192;
  for (int64_t N : {640, 48, 1024})
  for (bool huge : {false, true}) {
    if (huge && N != 48) continue;
    const auto W = make_weights(K, N, 0.0, 311, false);
    std::mt19937 rng(17);
    std::uniform_real_distribution<float> u(0.5f, 2.f);
    std::vector<float> sw(N), bias(N), mul(N);
    for (int64_t n = 0; n < N; ++n) {
      sw[n] = 0.01f * u(rng);
      bias[n] = u(rng) - 1.25f;
      mul[n] = u(rng);
    }
    if (huge) bias[5] = 1e5f;
    for (const char* kern : dense_kernels()) {
      CAPTURE(kern);
      CAPTURE(N);
      CAPTURE(huge);
      DenseKernelEnv env(kern);
      const sk::DenseLinearU8S8 dense(W.data(), K, N, sw.data(), bias.data());
      for (int threads : {1, 2})
        for (int64_t M : {1, 7, 64, 200, 600})
          for (int gelu : {0, 1, 2}) {  // none, exact, coarse
            if ((N == 1024) != (M == 600)) continue;
            CAPTURE(threads);
            CAPTURE(M);
            CAPTURE(gelu);
            const auto x = make_input(M, K, static_cast<uint32_t>(500 + M));
            std::vector<float> xs;
            std::vector<int32_t> xz;
            token_inputs(M, 37, rng, xs, xz);
            sk::QEpilogue ep;
            ep.gelu = gelu > 0;
            ep.gelu_coarse = gelu == 2;
            // The reference: f32 y, then quantize_rows_u8.
            std::vector<float> y(M * N);
            std::vector<uint8_t> q_ref(M * N);
            std::vector<float> s_ref(M);
            std::vector<int32_t> z_ref(M);
            const bool f16 = std::string(kern) == "amx" && !huge;
            in_arena(threads, [&] {
              dense.run(x.data(), M, K, xs.data(), xz.data(), ep, y.data(), N);
              if (f16) {
                std::vector<float> h(M * N);
                for (int64_t i = 0; i < M * N; ++i)
                  h[i] = static_cast<float>(Eigen::half(y[i] * mul[i % N]));
                sk::quantize_rows_u8(h.data(), M, N, q_ref.data(), s_ref.data(), z_ref.data());
              } else {
                sk::quantize_rows_u8(y.data(), M, N, q_ref.data(), s_ref.data(), z_ref.data(), -1, -1,
                                     mul.data());
              }
            });
            if (huge) CHECK(std::abs(y[5] * mul[5]) > 65504.f);  // past f16's largest finite value
            // y on a 64-byte line, as a session's buffers are (the streaming
            // stores need whole aligned vectors).
            std::vector<float> y2_buf(M * N + 16, -7.f);
            float* y2 = y2_buf.data() + (64 - reinterpret_cast<uintptr_t>(y2_buf.data()) % 64) % 64 / sizeof(float);
            std::vector<uint8_t> q(M * N, 1);
            std::vector<float> s(M, -1.f);
            std::vector<int32_t> z(M, -1);
            const sk::DenseLinearU8S8::QuantOut qo{mul.data(), q.data(), s.data(), z.data()};
            in_arena(threads, [&] { dense.run(x.data(), M, K, xs.data(), xz.data(), ep, y2, N, nullptr, &qo); });
            CHECK(q == q_ref);
            CHECK(std::memcmp(s.data(), s_ref.data(), sizeof(float) * M) == 0);
            CHECK(z == z_ref);
          }
      // What QuantOut cannot be combined with.
      const auto x = make_input(4, K, 1);
      std::vector<float> xs(4, 0.1f), y(4 * N), res(4 * N);
      std::vector<int32_t> xz(4, 3);
      std::vector<uint8_t> q(4 * N);
      std::vector<float> s(4);
      std::vector<int32_t> z(4);
      const sk::DenseLinearU8S8::QuantOut qo{nullptr, q.data(), s.data(), z.data()};
      sk::QEpilogue with_res;
      with_res.residual = res.data();
      CHECK_THROWS_AS(dense.run(x.data(), 4, K, xs.data(), xz.data(), with_res, y.data(), N, nullptr, &qo),
                      std::invalid_argument);
      const sk::DenseLinearU8S8::QuantOut no_buf{nullptr, nullptr, s.data(), z.data()};
      CHECK_THROWS_AS(dense.run(x.data(), 4, K, xs.data(), xz.data(), sk::QEpilogue{}, y.data(), N, nullptr, &no_buf),
                      std::invalid_argument);
    }
  }
}

TEST_CASE("DenseLinearU8S8 with QEpilogue::out_bf16: the f32 run's output rounded to BF16, only on the AMX kernel") {
  // For a BF16 attention (ops.h attention_f32 qkv_bf16): the bits of the f32
  // output rounded to nearest even (here by Eigen::bfloat16), in a row stride
  // of its own; 1, 7, 33 and 200 tokens, N = 48, 2304 and 40 (column tiles
  // partly past N), 1 and 2 threads. Where AMX-INT8 or AVX512_BF16 is
  // missing, or on oneDNN's matmul, it is refused.
  const int64_t K = 192;
  for (int64_t N : {48, 2304, 40}) {
    const auto W = make_weights(K, N, 0.0, 313, false);
    std::mt19937 rng(19);
    std::uniform_real_distribution<float> u(0.5f, 2.f);
    std::vector<float> sw(N), bias(N);
    for (int64_t n = 0; n < N; ++n) {
      sw[n] = 0.01f * u(rng);
      bias[n] = u(rng) - 1.25f;
    }
    for (const char* kern : dense_kernels()) {
      CAPTURE(kern);
      CAPTURE(N);
      DenseKernelEnv env(kern);
      const sk::DenseLinearU8S8 dense(W.data(), K, N, sw.data(), bias.data());
      const bool can = std::string(kern) == "amx" && sk::cpu_has_avx512_bf16();
      CHECK(dense.writes_bf16() == can);
      std::vector<uint16_t> h1(4 * N);
      const auto x1 = make_input(4, K, 1);
      std::vector<float> xs1(4, 0.1f);
      std::vector<int32_t> xz1(4, 3);
      sk::QEpilogue bf;
      bf.out_bf16 = true;
      if (!can) {
        CHECK_THROWS_AS(dense.run(x1.data(), 4, K, xs1.data(), xz1.data(), bf, h1.data(), N), std::logic_error);
        continue;
      }
      // What it cannot be combined with.
      sk::QEpilogue with_gelu = bf;
      with_gelu.gelu = true;
      CHECK_THROWS_AS(dense.run(x1.data(), 4, K, xs1.data(), xz1.data(), with_gelu, h1.data(), N),
                      std::invalid_argument);
      std::vector<float> res(4 * N);
      sk::QEpilogue with_res = bf;
      with_res.residual = res.data();
      CHECK_THROWS_AS(dense.run(x1.data(), 4, K, xs1.data(), xz1.data(), with_res, h1.data(), N),
                      std::invalid_argument);
      const sk::RowsDone done{[](const void*, int64_t, int64_t) {}, nullptr, 1};
      CHECK_THROWS_AS(dense.run(x1.data(), 4, K, xs1.data(), xz1.data(), bf, h1.data(), N, &done),
                      std::invalid_argument);
      std::vector<uint8_t> q1(4 * N);
      std::vector<float> s1(4);
      std::vector<int32_t> z1(4);
      const sk::DenseLinearU8S8::QuantOut qo{nullptr, q1.data(), s1.data(), z1.data()};
      CHECK_THROWS_AS(dense.run(x1.data(), 4, K, xs1.data(), xz1.data(), bf, h1.data(), N, nullptr, &qo),
                      std::invalid_argument);
      for (int threads : {1, 2})
        for (int64_t M : {1, 7, 33, 200}) {
          CAPTURE(threads);
          CAPTURE(M);
          const auto x = make_input(M, K, static_cast<uint32_t>(600 + M));
          std::vector<float> xs;
          std::vector<int32_t> xz;
          token_inputs(M, 41, rng, xs, xz);
          std::vector<float> y(M * N);
          const int64_t ldh = N + 24;
          std::vector<uint16_t> hb(M * ldh, 0xABCD);
          in_arena(threads, [&] {
            dense.run(x.data(), M, K, xs.data(), xz.data(), sk::QEpilogue{}, y.data(), N);
            dense.run(x.data(), M, K, xs.data(), xz.data(), bf, hb.data(), ldh);
          });
          int64_t bad = 0, pad = 0;
          for (int64_t m = 0; m < M; ++m) {
            for (int64_t n = 0; n < N; ++n) {
              const Eigen::bfloat16 e(y[m * N + n]);
              uint16_t want;
              std::memcpy(&want, &e, 2);
              bad += hb[m * ldh + n] != want;
            }
            for (int64_t n = N; n < ldh; ++n) pad += hb[m * ldh + n] != 0xABCD;  // past N: untouched
          }
          CHECK(bad == 0);
          CHECK(pad == 0);
        }
    }
  }
}

TEST_CASE("quantize_rows_u8 matches its reference on every ISA") {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 3.f);
  for (int64_t K : {1, 7, 16, 17, 64, 100, 191, 768, 3072}) {
    const int64_t M = 9;
    std::vector<float> x(M * K);
    for (auto& v : x) v = nd(rng);
    for (int64_t k = 0; k < K; ++k) {
      x[0 * K + k] = 0.f;                         // all zero
      x[1 * K + k] = std::fabs(x[1 * K + k]);     // all >= 0: zp 0
      x[2 * K + k] = -std::fabs(x[2 * K + k]);    // all <= 0: zp 255
      x[3 * K + k] = 1.5f;                        // constant
    }
    // Non-finite values (the row's scale becomes NaN, its bytes 0), at the
    // end, the middle and the start of a row: a vector tail, the 16-wide
    // loop, the 64-wide one.
    x[4 * K + K - 1] = std::numeric_limits<float>::quiet_NaN();
    x[5 * K + K / 2] = std::numeric_limits<float>::infinity();
    x[6 * K + 0] = -std::numeric_limits<float>::infinity();
    std::vector<uint8_t> qr(M * K);
    std::vector<float> sr(M);
    std::vector<int32_t> zr(M);
    sk::ref::quantize_rows_u8(x.data(), M, K, qr.data(), sr.data(), zr.data());
    CHECK(zr[0] == 0);
    CHECK(zr[1] == 0);
    CHECK(zr[2] == 255);
    CHECK(std::isnan(sr[4]));
    CHECK(std::isnan(sr[5]));
    CHECK(std::isnan(sr[6]));
    CHECK(!std::isnan(sr[7]));
    for (Isa isa : runnable_isas()) {
      RestoreIsa cap(isa);
      Guarded q(M * K);
      std::vector<float> s(M);
      std::vector<int32_t> z(M);
      in_arena(2, [&] { sk::quantize_rows_u8(x.data(), M, K, q.data(), s.data(), z.data()); });
      CAPTURE(K);
      const std::string isa_s = sk::isa_name(isa);
        CAPTURE(isa_s);
      CHECK(q.guards_intact());
      CHECK(std::memcmp(q.data(), qr.data(), M * K) == 0);
      CHECK(std::memcmp(s.data(), sr.data(), 4 * M) == 0);
      CHECK(z == zr);
    }
    // With an input scale: every ISA gives the reference's bits, which are
    // those of quantizing the products x[m, k] * mul[k] made beforehand.
    std::vector<float> mul(static_cast<size_t>(K)), xm(static_cast<size_t>(M * K));
    std::uniform_real_distribution<float> ue(-4.f, 4.f);
    for (auto& v : mul) v = std::exp2(ue(rng));
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k) xm[m * K + k] = x[m * K + k] * mul[k];
    std::vector<uint8_t> qm(M * K), qp(M * K);
    std::vector<float> sm(M), sp(M);
    std::vector<int32_t> zm(M), zpp(M);
    sk::ref::quantize_rows_u8(x.data(), M, K, qm.data(), sm.data(), zm.data(), mul.data());
    sk::ref::quantize_rows_u8(xm.data(), M, K, qp.data(), sp.data(), zpp.data());
    CHECK(qm == qp);
    CHECK(std::memcmp(sm.data(), sp.data(), 4 * M) == 0);
    CHECK(zm == zpp);
    for (Isa isa : runnable_isas()) {
      RestoreIsa cap(isa);
      Guarded q(M * K);
      std::vector<float> s(M);
      std::vector<int32_t> z(M);
      in_arena(2, [&] {
        sk::quantize_rows_u8(x.data(), M, K, q.data(), s.data(), z.data(), -1, -1, mul.data());
      });
      CAPTURE(K);
      const std::string isa_s = sk::isa_name(isa);
      CAPTURE(isa_s);
      CHECK(q.guards_intact());
      CHECK(std::memcmp(q.data(), qm.data(), M * K) == 0);
      CHECK(std::memcmp(s.data(), sm.data(), 4 * M) == 0);
      CHECK(z == zm);
    }
    // From f16 rows (the AMX kernel's QuantOut; AVX-512 only): the bits of
    // quantize_rows_u8 on the rows as f32, with a row stride past K. The f16
    // values are x's rounded (Eigen::half), NaN and +-Inf kept.
    if (sk::active_isa() >= Isa::Avx512Vnni) {
      const int64_t ldh = K + 5;
      std::vector<uint16_t> h(static_cast<size_t>(M * ldh), 0x7C00);  // +Inf past K: never read
      std::vector<float> hf(static_cast<size_t>(M * K));
      for (int64_t m = 0; m < M; ++m)
        for (int64_t k = 0; k < K; ++k) {
          const Eigen::half e(x[m * K + k]);
          std::memcpy(&h[m * ldh + k], &e, 2);
          hf[m * K + k] = static_cast<float>(e);
        }
      std::vector<uint8_t> qh_ref(M * K);
      std::vector<float> sh_ref(M), sh(M);
      std::vector<int32_t> zh_ref(M), zh(M);
      sk::ref::quantize_rows_u8(hf.data(), M, K, qh_ref.data(), sh_ref.data(), zh_ref.data());
      Guarded q(M * K);
      sk::qgemm_detail::quantize_rows_u8_f16_here(h.data(), M, K, ldh, q.data(), sh.data(), zh.data());
      CAPTURE(K);
      CHECK(q.guards_intact());
      CHECK(std::memcmp(q.data(), qh_ref.data(), M * K) == 0);
      CHECK(std::memcmp(sh.data(), sh_ref.data(), 4 * M) == 0);
      CHECK(zh == zh_ref);
      CHECK(std::isnan(sh[4]));
      CHECK(std::isnan(sh[5]));
      CHECK(!std::isnan(sh[7]));
    } else {
      MESSAGE("quantize_rows_u8_f16_here is not tested here: it needs AVX-512 (only the AMX kernel calls it)");
    }
    // dequantized values are within half a step of the input (rows with a
    // finite scale)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K && !std::isnan(sr[m]); ++k) {
        const float back = sr[m] * float(int(qr[m * K + k]) - zr[m]);
        CHECK(std::fabs(back - x[m * K + k]) <= 0.5f * sr[m] * 1.001f + 1e-6f);
      }
  }
}

namespace {

// One FFN-like pair through the Linear chain against the same pair through
// the row-major path (spmm_u8s8 -> quantize_rows_u8 -> spmm_u8s8): scales,
// zero points, the u8 blocks and the second layer's output must be the same
// bits. special: token 1's first layer input scale is NaN (its outputs NaN),
// token 2's is 0 with no bias (an all-zero row), token 3's is huge (Inf).
// smooth: the second layer has an input scale (slot::kInScale), which the
// first applies as it writes the blocks (QEpilogue::out_mul) and the
// row-major path's quantize_rows_u8 multiplies in. coarse: both paths with
// the coarse GELU (QEpilogue::gelu_coarse): the chain must pass it on.
void check_chain(int64_t M, int64_t K1, int64_t N1, int64_t N2, double sp1, double sp2, bool gelu,
                 bool bias, bool special, int threads, uint32_t seed, bool smooth = false,
                 bool coarse = false) {
  CAPTURE(M);
  CAPTURE(coarse);
  CAPTURE(smooth);
  CAPTURE(K1);
  CAPTURE(N1);
  CAPTURE(N2);
  CAPTURE(sp1);
  CAPTURE(sp2);
  CAPTURE(gelu);
  CAPTURE(special);
  CAPTURE(threads);
  const auto W1 = make_weights(K1, N1, sp1, seed, true);
  const auto W2 = make_weights(N1, N2, sp2, seed + 1, false);
  const auto x = make_input(M, K1, seed + 2);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uf(-1.f, 1.f);
  std::vector<float> sw1(N1), b1(N1), sw2(N2), b2(N2), xs(M);
  std::vector<int32_t> zp(M);
  for (auto& v : sw1) v = 0.002f + 0.001f * std::fabs(uf(rng));
  for (auto& v : sw2) v = 0.002f + 0.001f * std::fabs(uf(rng));
  for (auto& v : b1) v = uf(rng);
  for (auto& v : b2) v = uf(rng);
  for (auto& v : xs) v = 0.01f + 0.01f * std::fabs(uf(rng));
  for (auto& v : zp) v = static_cast<int32_t>(rng() % 256);
  if (special && M > 3) {
    xs[1] = std::nanf("");
    xs[2] = 0.f;
    xs[3] = 3e38f;
  }
  std::vector<float> residual(static_cast<size_t>(M * N2));
  for (auto& v : residual) v = uf(rng);
  std::vector<float> in2(static_cast<size_t>(N1));  // log-uniform in [1/16, 16]
  for (auto& v : in2) v = std::exp2(4.f * uf(rng));
  const float* mul = smooth ? in2.data() : nullptr;
  const auto p1 = sk::pack_s8_sparse(W1.data(), K1, N1, sw1.data(), bias && !special ? b1.data() : nullptr);
  const auto p2 = sk::pack_s8_sparse(W2.data(), N1, N2, sw2.data(), b2.data());
  sk::QEpilogue ep1;
  ep1.gelu = gelu;
  ep1.gelu_coarse = coarse;
  sk::QEpilogue ep2;
  ep2.residual = residual.data();

  // Row-major path.
  std::vector<float> y1(static_cast<size_t>(M * N1)), s_ref(M), y2_ref(static_cast<size_t>(M * N2));
  std::vector<uint8_t> q_ref(static_cast<size_t>(M * N1));
  std::vector<int32_t> z_ref(M);
  in_arena(threads, [&] {
    sk::spmm_u8s8(p1, x.data(), M, K1, xs.data(), zp.data(), ep1, y1.data(), N1);
    sk::quantize_rows_u8(y1.data(), M, N1, q_ref.data(), s_ref.data(), z_ref.data(), -1, -1, mul);
    sk::spmm_u8s8(p2, q_ref.data(), M, N1, s_ref.data(), z_ref.data(), ep2, y2_ref.data(), N2);
  });

  // Chain: blocks of S tokens (qgemm.h), no more of them than of 64.
  const int64_t S = sk::spmm_u8s8_blocked_step(M);
  const int64_t nb = (M + S - 1) / S;
  CHECK(S % 16 == 0);
  CHECK(S <= 64);
  CHECK(nb <= (M + 63) / 64);
  Guarded yb(static_cast<size_t>(nb * N1 * 64) * 4), xb(static_cast<size_t>(nb * N1 * 64)),
      y2(static_cast<size_t>(M * N2) * 4);
  std::vector<float> s(M, -1.f);
  std::vector<int32_t> z(M, -1);
  in_arena(threads, [&] {
    std::vector<sk::BlockedRange> ranges(static_cast<size_t>(sk::spmm_u8s8_blocked_ranges(N1, M)));
    CHECK(ranges.size() % static_cast<size_t>(nb) == 0);
    sk::spmm_u8s8_to_blocked(p1, x.data(), M, K1, xs.data(), zp.data(), gelu, yb.as<float>(),
                             ranges.data(), mul, coarse);
    sk::quantize_blocked_u8(yb.as<float>(), M, N1, ranges.data(), xb.data(), s.data(), z.data());
  });
  // The kernel reads its input blocks with aligned loads (as the workspace is).
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, Free> xa(static_cast<uint8_t*>(std::aligned_alloc(64, xb.bytes)));
  std::memcpy(xa.get(), xb.data(), xb.bytes);
  if (reinterpret_cast<uintptr_t>(xb.data()) % 64 != 0)
    CHECK_THROWS_AS(sk::spmm_u8s8_from_blocked(p2, xb.data(), M, s.data(), z.data(), ep2, y2.data(), N2),
                    std::invalid_argument);
  in_arena(threads, [&] {
    sk::spmm_u8s8_from_blocked(p2, xa.get(), M, s.data(), z.data(), ep2, y2.data(), N2);
  });
  // The second Linear straight from the f32 blocks and ranges, quantized by
  // its own threads (spmm_u8s8_from_blocked_f32): the same bits again. The
  // ranges are those of the first call (same M and arena size).
  Guarded y2f(static_cast<size_t>(M * N2) * 4);
  in_arena(threads, [&] {
    std::vector<sk::BlockedRange> ranges(static_cast<size_t>(sk::spmm_u8s8_blocked_ranges(N1, M)));
    sk::spmm_u8s8_to_blocked(p1, x.data(), M, K1, xs.data(), zp.data(), gelu, yb.as<float>(),
                             ranges.data(), mul, coarse);
    sk::spmm_u8s8_from_blocked_f32(p2, yb.as<float>(), ranges.data(), M, ep2, y2f.data(), N2);
  });
  CHECK(y2f.guards_intact());
  CHECK(std::memcmp(y2f.data(), y2.data(), static_cast<size_t>(M * N2) * 4) == 0);
  CHECK(yb.guards_intact());
  CHECK(xb.guards_intact());
  CHECK(y2.guards_intact());
  auto same = [](float a, float b) { return std::memcmp(&a, &b, 4) == 0 || (a != a && b != b); };
  int64_t bad_y1 = 0, bad_s = 0, bad_y2 = 0;
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N1; ++n)
      bad_y1 += !same(yb.as<float>()[((m / S) * N1 + n) * 64 + m % S],
                      mul ? y1[m * N1 + n] * mul[n] : y1[m * N1 + n]);
    bad_s += !same(s[m], s_ref[m]) || z[m] != z_ref[m];
    for (int64_t n = 0; n < N2; ++n) bad_y2 += !same(y2.as<float>()[m * N2 + n], y2_ref[m * N2 + n]);
  }
  CHECK(bad_y1 == 0);
  CHECK(bad_s == 0);
  CHECK(bad_y2 == 0);
  // The u8 blocks are what the kernel's own interleave makes of the row-major
  // u8 (padding lanes 0 in both).
  std::vector<uint8_t> xb_ref(static_cast<size_t>(nb * N1 * 64));
  for (int64_t b = 0; b < nb; ++b)
    sk::qgemm_detail::interleave_block_u8(q_ref.data(), std::min(M, S * b + S), N1, N1, S * b, 4,
                                          xb_ref.data() + b * N1 * 64);
  CHECK(std::memcmp(xb.data(), xb_ref.data(), xb_ref.size()) == 0);
  if (special && M > 3) {
    CHECK(std::isnan(s[1]));
    CHECK(s[2] == 1.f);
    CHECK(std::isnan(s[3]));
  }
}

}  // namespace

namespace {
// Whether the Linear chain's kernel runs here, at the test's ISA cap; if not,
// says why (the CPU has no AVX-512 VNNI, or SPINEL_ISA caps the level below).
bool chain_kernel_runs() {
  if (!sk::cpu_supports(Isa::Avx512Vnni)) {
    MESSAGE("not run: this CPU has no AVX-512 VNNI (the chain's only kernel)");
    return false;
  }
  if (!sk::spmm_u8s8_chain_available()) {
    MESSAGE("not run: the ISA level is capped below AVX-512 VNNI (SPINEL_ISA)");
    return false;
  }
  return true;
}
}  // namespace

// The blocked output leaves out its NaN test where no value can be NaN
// (finite token scales, weights, bias and out_mul, and bounded sums); a NaN
// in one channel's bias or out_mul (or an infinite out_mul) must still make
// every token not finite, as on the row-major path.
TEST_CASE("Linear chain: a NaN from the bias or out_mul makes every token's scale NaN") {
  RestoreIsa cap(Isa::Avx512Vnni);
  if (!chain_kernel_runs()) return;
  const int64_t M = 40, K = 64, N = 68;
  const auto W = make_weights(K, N, 0.5, 77, true);
  const auto x = make_input(M, K, 78);
  std::vector<float> sw(N, 0.003f), xs(M, 0.02f);
  std::vector<int32_t> zp(M, 100);
  for (int what = 0; what < 3; ++what)
    for (bool coarse : {false, true}) {
      std::vector<float> bias(N, 0.1f), mul(N, 1.5f);
      if (what == 0) bias[9] = std::nanf("");
      if (what == 1) mul[30] = std::nanf("");
      if (what == 2) mul[67] = INFINITY;
      const auto p = sk::pack_s8_sparse(W.data(), K, N, sw.data(), bias.data());
      std::vector<float> yb(static_cast<size_t>(N * 64)), s(M, 0.f);
      std::vector<int32_t> z(M);
      std::vector<uint8_t> xb(static_cast<size_t>(N * 64));
      std::vector<sk::BlockedRange> ranges(static_cast<size_t>(sk::spmm_u8s8_blocked_ranges(N, M)));
      sk::spmm_u8s8_to_blocked(p, x.data(), M, K, xs.data(), zp.data(), true, yb.data(), ranges.data(), mul.data(),
                               coarse);
      sk::quantize_blocked_u8(yb.data(), M, N, ranges.data(), xb.data(), s.data(), z.data());
      CAPTURE(what);
      CAPTURE(coarse);
      int64_t nan = 0;
      for (float v : s) nan += std::isnan(v);
      CHECK(nan == M);
    }
}

// The coarse GELU's last segment is G = 1 exactly: GELU is exactly 0 for v <=
// -4.84 and exactly v for v >= 4.84. The blocked output leaves out the clamp
// at -5 where its values are finite; the row path keeps it: the same bits.
TEST_CASE("Linear chain: the coarse GELU far from 0 is exactly 0 or v, blocked and row paths alike") {
  RestoreIsa cap(Isa::Avx512Vnni);
  if (!chain_kernel_runs()) return;
  const int64_t M = 70, K = 64, N = 64;
  const auto W = make_weights(K, N, 0.5, 91, true);
  const auto x = make_input(M, K, 92);
  std::vector<float> sw(N, 1e-4f), xs(M, 0.02f), bias(N);
  const float level[8] = {-1e6f, -30.f, -6.f, -4.9f, 4.9f, 6.f, 30.f, 1e6f};
  for (int64_t n = 0; n < N; ++n) bias[n] = level[n % 8];
  std::vector<int32_t> zp(M, 7);
  const auto p = sk::pack_s8_sparse(W.data(), K, N, sw.data(), bias.data());
  sk::QEpilogue plain, coarse;
  coarse.gelu = coarse.gelu_coarse = true;
  std::vector<float> v(static_cast<size_t>(M * N)), g(static_cast<size_t>(M * N));
  sk::spmm_u8s8(p, x.data(), M, K, xs.data(), zp.data(), plain, v.data(), N);
  sk::spmm_u8s8(p, x.data(), M, K, xs.data(), zp.data(), coarse, g.data(), N);
  const int64_t S = sk::spmm_u8s8_blocked_step(M);
  std::vector<float> yb(static_cast<size_t>((M + S - 1) / S * N * 64));
  std::vector<sk::BlockedRange> ranges(static_cast<size_t>(sk::spmm_u8s8_blocked_ranges(N, M)));
  sk::spmm_u8s8_to_blocked(p, x.data(), M, K, xs.data(), zp.data(), true, yb.data(), ranges.data(), nullptr, true);
  int64_t far = 0, wrong = 0, differ = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      const float vv = v[m * N + n], gg = g[m * N + n], bb = yb[((m / S) * N + n) * 64 + m % S];
      differ += std::memcmp(&gg, &bb, 4) != 0;
      if (std::fabs(vv) >= 4.85f) {
        ++far;
        wrong += vv < 0 ? gg != 0.f : gg != vv;
      }
    }
  CHECK(far > M * N / 2);
  CHECK(wrong == 0);
  CHECK(differ == 0);
}

TEST_CASE("Linear chain: the blocked layouts give the row-major path's bits") {
  if (!sk::cpu_supports(Isa::Avx512Vnni)) {
    MESSAGE("Linear chain test not run: this CPU has no AVX-512 VNNI (the chain's only kernel)");
    return;
  }
  RestoreIsa cap(Isa::Avx512Vnni);
  if (sk::active_isa() < Isa::Avx512Vnni) {
    // SPINEL_ISA caps the level below the chain's kernel: the chain must be
    // refused, which is all there is to check under this cap.
    CHECK_FALSE(sk::spmm_u8s8_chain_available());
    MESSAGE("Linear chain not run: the ISA level is capped at " << sk::isa_name(sk::active_isa())
                                                                << " (SPINEL_ISA); its refusal is checked");
    return;
  }
  REQUIRE(sk::spmm_u8s8_chain_available());
  uint32_t seed = 100;
  for (int64_t M : {1, 5, 63, 64, 65, 72, 96, 128, 130, 144, 200})
    for (int threads : {1, 2}) {
      check_chain(M, 36, 20, 8, 0.5, 0.0, true, true, false, threads, ++seed);
      check_chain(M, 64, 260, 36, 0.9, 0.7, M % 2 == 0, true, M > 3, threads, ++seed);
      check_chain(M, 4, 4, 4, 0.0, 0.0, false, false, false, threads, ++seed);
      check_chain(M, 100, 68, 12, 1.0, 0.95, true, false, false, threads, ++seed);
      check_chain(M, 64, 260, 36, 0.9, 0.7, true, true, M > 3, threads, ++seed, true);
      check_chain(M, 36, 20, 8, 0.0, 0.5, false, true, false, threads, ++seed, true);
    }
  // BERT-base's FFN at a few lengths (K split into several chunks per block).
  for (int64_t M : {17, 128, 384}) check_chain(M, 768, 3072, 768, 0.9, 0.9, true, true, M == 17, 2, ++seed);
  check_chain(70, 768, 3072, 768, 0.9, 0.9, true, true, true, 1, ++seed);
  check_chain(128, 768, 3072, 768, 0.9, 0.9, true, true, false, 2, ++seed, true);
  for (int64_t M : {5, 65, 128}) check_chain(M, 768, 3072, 768, 0.9, 0.9, true, true, M == 65, 2, ++seed, false, true);

  // Below AVX-512 VNNI there is no chain, and its entry points say so.
  RestoreIsa low(Isa::Avx2);
  CHECK_FALSE(sk::spmm_u8s8_chain_available());
  const auto W = make_weights(8, 8, 0.5, 1, false);
  std::vector<float> sw(8, 0.01f), y(64 * 8), xs(1, 0.1f);
  std::vector<int32_t> z(1);
  std::vector<uint8_t> xq(64 * 8);
  const auto p = sk::pack_s8_sparse(W.data(), 8, 8, sw.data(), nullptr);
  std::vector<sk::BlockedRange> ranges(8);
  CHECK_THROWS_AS(sk::spmm_u8s8_to_blocked(p, xq.data(), 1, 8, xs.data(), z.data(), false, y.data(),
                                           ranges.data()),
                  std::logic_error);
  CHECK_THROWS_AS(sk::quantize_blocked_u8(y.data(), 1, 8, ranges.data(), xq.data(), xs.data(), z.data()),
                  std::logic_error);
}

TEST_CASE("Dense INT8 layers: oneDNN, our AMX kernel or the block-sparse kernel (SPINEL_DENSE_S8)") {
  using sk::DenseS8Mode;
  using sk::LinearImpl;
  using spinel::Precision;
  std::vector<int8_t> w8(48 * 36, 1);
  const auto impl = [&](int64_t K, int64_t N) {
    return sk::choose_linear(Precision::S8Dense, -1, w8.data(), K, N).impl;
  };
  // Where auto puts them: the sparse kernel on AMD's AVX-512 VNNI cores at
  // that level without AMX, else oneDNN's matmul (the AMX kernel inside it).
  unsetenv("SPINEL_DENSE_S8");
  CHECK(sk::dense_s8_mode() == DenseS8Mode::Auto);
  const bool here =
      sk::cpu_vnni_unpacks_free() && !sk::cpu_has_amx_int8() && sk::active_isa() == Isa::Avx512Vnni;
  CHECK(sk::dense_s8_on_sparse_kernel() == here);
  CHECK(impl(48, 36) == (here ? LinearImpl::SparseU8S8 : LinearImpl::DnnlU8S8));
  if (here) CHECK(sk::choose_linear(Precision::S8Dense, -1, w8.data(), 48, 36).why.find("every block kept") !=
                  std::string::npos);
  {
    RestoreIsa low(Isa::Avx2);  // a cap below avx512vnni: oneDNN
    CHECK_FALSE(sk::dense_s8_on_sparse_kernel());
    CHECK(impl(48, 36) == LinearImpl::DnnlU8S8);
  }
  setenv("SPINEL_DENSE_S8", "dnnl", 1);
  CHECK(sk::dense_s8_mode() == DenseS8Mode::Dnnl);
  CHECK(impl(48, 36) == LinearImpl::DnnlU8S8);
  setenv("SPINEL_DENSE_S8", "amx", 1);
  CHECK(sk::dense_s8_mode() == DenseS8Mode::Amx);
  CHECK(impl(48, 36) == LinearImpl::DnnlU8S8);
  setenv("SPINEL_DENSE_S8", "sparse", 1);
  CHECK(sk::dense_s8_mode() == DenseS8Mode::Sparse);
  CHECK(impl(48, 36) == LinearImpl::SparseU8S8);
  CHECK(sk::choose_linear(Precision::S8Dense, -1, w8.data(), 48, 36).why.find("SPINEL_DENSE_S8=sparse") !=
        std::string::npos);
  {
    RestoreIsa low(Isa::Scalar);  // forced: at any level
    CHECK(impl(48, 36) == LinearImpl::SparseU8S8);
  }
  // The sparse kernel packs K and N in multiples of 4: other shapes stay on oneDNN.
  CHECK(impl(47, 36) == LinearImpl::DnnlU8S8);
  CHECK(impl(48, 34) == LinearImpl::DnnlU8S8);
  CHECK(impl(0, 0) == LinearImpl::DnnlU8S8);
  // Stored block-sparse layers and F32 ones do not listen.
  CHECK(sk::choose_linear(Precision::S8Sparse, 0.9, w8.data(), 48, 36).impl == LinearImpl::SparseU8S8);
  unsetenv("SPINEL_F32_SPARSE");
  CHECK(sk::choose_linear(Precision::F32, 0.0, nullptr, 48, 36).impl == LinearImpl::DnnlF32);
  setenv("SPINEL_DENSE_S8", "dnnl", 1);
  if (!(sk::cpu_has_amx_int8() && sk::active_isa() == Isa::Avx512Vnni))
    CHECK(sk::choose_linear(Precision::S8Sparse, 0.1, w8.data(), 48, 36).impl == LinearImpl::SparseU8S8);
  setenv("SPINEL_DENSE_S8", "bogus", 1);  // warns once, means auto
  CHECK(sk::dense_s8_mode() == DenseS8Mode::Auto);
  unsetenv("SPINEL_DENSE_S8");
}

TEST_CASE("chain_linears: FFN-shaped pairs only, one link at a time") {
  // Three sparse INT8 Linears in a row, v0 -> A -> v1 -> B -> v2 -> C -> v3;
  // A has GELU, B and C none, no residuals.
  using namespace spinel;
  Graph g;
  for (int v = 0; v < 4; ++v) g.values.push_back({"v" + std::to_string(v), 64, Rows::Tokens});
  for (int i = 0; i < 3; ++i) {
    Op op;
    op.kind = OpKind::Linear;
    op.name = std::string(1, static_cast<char>('A' + i));
    op.in0 = i;
    op.out = i + 1;
    op.precision = Precision::S8Sparse;
    op.block_sparsity = 0.9f;
    op.act = i == 0 ? Activation::GeluErf : Activation::None;
    g.ops.push_back(op);
  }
  g.output = 3;
  if (!sk::cpu_supports(Isa::Avx512Vnni)) {
    CHECK_FALSE(sk::chain_linears(g, 0));
    MESSAGE("no AVX-512 VNNI: only the refusal of chain_linears is checked here");
    return;
  }
  RestoreIsa cap(Isa::Avx512Vnni);
  if (sk::active_isa() < Isa::Avx512Vnni) {
    CHECK_FALSE(sk::chain_linears(g, 0));
    MESSAGE("the ISA level is capped at " << sk::isa_name(sk::active_isa())
                                          << " (SPINEL_ISA): only the refusal of chain_linears is checked here");
    return;
  }
  CHECK(sk::chain_linears(g, 0));
  CHECK_FALSE(sk::chain_linears(g, 1));  // B's input already comes blocked
  CHECK_FALSE(sk::chain_linears(g, 2));  // no next op
  Graph h = g;
  h.ops[1].in1 = 1;  // A's output read as B's residual too
  CHECK_FALSE(sk::chain_linears(h, 0));
  h = g;
  h.output = 1;  // A's output is the graph's output
  CHECK_FALSE(sk::chain_linears(h, 0));
  h = g;
  h.ops[0].act = Activation::GeluTanh;  // applied after the kernel
  CHECK_FALSE(sk::chain_linears(h, 0));
  h = g;
  h.ops[1].act_scale = 0.1f;  // B quantizes with a calibrated scale
  CHECK_FALSE(sk::chain_linears(h, 0));
  h = g;
  h.ops[0].act = Activation::None;  // B -> C may now link instead
  h.ops[0].precision = Precision::S8Dense;
  setenv("SPINEL_DENSE_S8", "dnnl", 1);  // A on oneDNN
  CHECK_FALSE(sk::chain_linears(h, 0));
  CHECK(sk::chain_linears(h, 1));
  setenv("SPINEL_DENSE_S8", "sparse", 1);  // A on the sparse kernel, every block kept: it links
  CHECK(sk::chain_linears(h, 0));
  CHECK_FALSE(sk::chain_linears(h, 1));
  h.values[1].width = 62;  // (A's output, B's input) not a multiple of 4: oneDNN's again
  CHECK_FALSE(sk::chain_linears(h, 0));
  unsetenv("SPINEL_DENSE_S8");
  RestoreIsa low(Isa::Avx2);
  CHECK_FALSE(sk::chain_linears(g, 0));
}

TEST_CASE("slab_alloc: aligned, disjoint buffers, a slab freed with its last buffer") {
  const size_t before = sk::slab_bytes_reserved();
  std::vector<std::pair<uint8_t*, size_t>> bufs;
  std::mt19937 rng(5);
  // Sizes from a byte to past one slab (32 MB): shared slabs and a slab of its own.
  for (size_t n : {size_t{1}, size_t{63}, size_t{64}, size_t{65}, size_t{590} << 10, size_t{2360} << 10,
                   size_t{5} << 20, size_t{40} << 20, size_t{3}, size_t{1770} << 10}) {
    auto* p = static_cast<uint8_t*>(sk::slab_alloc(n));
    CHECK(reinterpret_cast<uintptr_t>(p) % 64 == 0);
    std::memset(p, static_cast<int>(bufs.size() + 1), n);  // every byte writable
    bufs.emplace_back(p, n);
  }
  CHECK(sk::slab_bytes_reserved() >= before + (size_t{40} << 20));
  // Disjoint: each buffer still holds its own fill.
  for (size_t i = 0; i < bufs.size(); ++i) {
    CAPTURE(i);
    const auto [p, n] = bufs[i];
    int64_t bad = 0;
    for (size_t j = 0; j < n; ++j) bad += p[j] != static_cast<uint8_t>(i + 1);
    CHECK(bad == 0);
  }
  std::shuffle(bufs.begin(), bufs.end(), rng);
  for (const auto& b : bufs) sk::slab_free(b.first);
  CHECK(sk::slab_bytes_reserved() == before);
  sk::slab_free(nullptr);  // no-op
}
