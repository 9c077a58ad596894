// Block-sparse u8 x s8 SpMM (spmm_u8s8, active ISA) against oneDNN's dense
// u8 x s8 matmul (DenseLinearU8S8) on BERT-sized layers, in one binary so the
// ratio comes from the same run.
//
// Both compute y = x W + bias (f32 out, per-token scales and zero points),
// from the same already-quantized u8 input: the per-call activation
// interleave of the sparse kernel is included, quantization is not.
// Threads: the sparse kernel in a tbb::task_arena(threads), oneDNN with
// omp_set_num_threads(threads); SPINEL_BENCH_THREADS (default 2).
//
// Counters: GOPS = 2 * M * (nonzero weights) per second (nonzero work; for
// the dense baseline every weight counts), nnz_pct = nonzero weights in %.
// Suggested run (the machines are shared and noisy):
//   bench_spmm_s8 --benchmark_repetitions=20 --benchmark_enable_random_interleaving=true
//                 --benchmark_report_aggregates_only=true --benchmark_min_time=0.05
// and compare medians of Sparse vs Dense at the same K/N/M.
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <omp.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <tuple>
#include <utility>
#include <vector>

#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include "kernels/cpu/isa.h"
#include "kernels/cpu/qgemm.h"

namespace sk = spinel::kernels;

namespace {

int bench_threads() {
  const char* v = std::getenv("SPINEL_BENCH_THREADS");
  const int t = v ? std::atoi(v) : 2;
  return t > 0 ? t : 2;
}

tbb::task_arena& arena() {
  static tbb::task_arena a(bench_threads());
  return a;
}

// 4x1-block-sparse s8 weights with the given fraction of zero blocks, placed
// at random (no structure the kernel could exploit beyond the blocks).
std::vector<int8_t> sparse_weights(int64_t K, int64_t N, double sparsity, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::uniform_int_distribution<int> val(-127, 127);
  std::vector<int8_t> W(static_cast<size_t>(K * N), 0);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n0 = 0; n0 < N; n0 += 4) {
      if (u(rng) < sparsity) continue;
      for (int c = 0; c < 4; ++c) W[k * N + n0 + c] = static_cast<int8_t>(val(rng));
      if (W[k * N + n0] == 0) W[k * N + n0] = 1;
    }
  return W;
}

// 64-byte aligned storage, as the runtime's workspace gives the kernels.
template <typename T>
struct Aligned64 {
  using value_type = T;
  Aligned64() = default;
  template <typename U>
  Aligned64(const Aligned64<U>&) {}
  T* allocate(size_t n) {
    void* p = std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64);
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  template <typename U>
  bool operator==(const Aligned64<U>&) const { return true; }
  template <typename U>
  bool operator!=(const Aligned64<U>&) const { return false; }
};

struct Inputs {
  std::vector<uint8_t, Aligned64<uint8_t>> x;
  std::vector<float> xs;
  std::vector<int32_t> zp;
  std::vector<float, Aligned64<float>> y;
  Inputs(int64_t M, int64_t K, int64_t N) : x(M * K), xs(M, 0.01f), zp(M), y(M * N) {
    std::mt19937 rng(7);
    for (auto& v : x) v = static_cast<uint8_t>(rng());
    for (auto& v : zp) v = static_cast<int32_t>(rng() % 256);
  }
};

struct Layer {
  std::vector<int8_t> W;
  std::vector<float> sw, bias;
  sk::PackedS8Sparse packed;
  std::unique_ptr<sk::DenseLinearU8S8> dense;
};

// Built once per (K, N, sparsity) and kept: packing is not what is measured.
Layer& layer(int64_t K, int64_t N, int sparsity_pct, bool want_dense) {
  static std::map<std::tuple<int64_t, int64_t, int>, std::unique_ptr<Layer>> cache;
  auto& slot = cache[{K, N, sparsity_pct}];
  if (!slot) {
    slot = std::make_unique<Layer>();
    slot->W = sparse_weights(K, N, sparsity_pct / 100.0, static_cast<uint32_t>(K * 31 + N + sparsity_pct));
    slot->sw.assign(N, 0.001f);
    slot->bias.assign(N, 0.5f);
    slot->packed = sk::pack_s8_sparse(slot->W.data(), K, N, slot->sw.data(), slot->bias.data());
  }
  if (want_dense && !slot->dense)
    slot->dense = std::make_unique<sk::DenseLinearU8S8>(slot->W.data(), K, N, slot->sw.data(),
                                                        slot->bias.data());
  return *slot;
}

// One spmm_u8s8 call per iteration with epilogue ep, on the layer of the
// benchmark's (K, N, M, sparsity) arguments.
const sk::PackedS8Sparse& time_sparse(benchmark::State& st, const sk::QEpilogue& ep) {
  const int64_t K = st.range(0), N = st.range(1), M = st.range(2);
  Layer& L = layer(K, N, static_cast<int>(st.range(3)), false);
  Inputs in(M, K, N);
  for (auto _ : st) {
    arena().execute([&] {
      sk::spmm_u8s8(L.packed, in.x.data(), M, K, in.xs.data(), in.zp.data(), ep, in.y.data(), N);
    });
    benchmark::ClobberMemory();
  }
  return L.packed;
}

void BM_Sparse(benchmark::State& st) {
  const sk::PackedS8Sparse& p = time_sparse(st, sk::QEpilogue{});
  const double M = static_cast<double>(st.range(2)), nnz = 4.0 * static_cast<double>(p.nnz_blocks);
  st.counters["GOPS"] = benchmark::Counter(2.0 * M * nnz * st.iterations() * 1e-9,
                                           benchmark::Counter::kIsRate);
  st.counters["nnz_pct"] = 100.0 * nnz / static_cast<double>(p.K * p.N);
  st.SetLabel(sk::spmm_u8s8_kernel_name());
}

// The epilogue's share of a call: the same product with f32 output, f32 with
// GELU, and u8 output (requantized with a fixed scale), arg "out" 0/1/2.
void BM_SparseOut(benchmark::State& st) {
  const int out = static_cast<int>(st.range(4));
  sk::QEpilogue ep;
  ep.gelu = out == 1;
  ep.requantize = out == 2;
  ep.out_scale = 0.05f;
  ep.out_zp = 10;
  time_sparse(st, ep);
  st.SetLabel(out == 0 ? "f32" : out == 1 ? "f32+gelu" : "u8");
}

// Where the f32 output goes, arg "layout": 0 token rows [M][N] (rows 3-12 KB
// apart: their lines fall into 1-4 of L1's 64 sets), 1 head panels of 64
// channels [N / 64][M][64] (spmm_u8s8_panels: rows 256 bytes apart).
void BM_SparseLayout(benchmark::State& st) {
  const int64_t K = st.range(0), N = st.range(1), M = st.range(2);
  Layer& L = layer(K, N, static_cast<int>(st.range(3)), false);
  const bool panels = st.range(4) == 1;
  Inputs in(M, K, N);
  const sk::QEpilogue ep;
  for (auto _ : st) {
    arena().execute([&] {
      if (panels)
        sk::spmm_u8s8_panels(L.packed, in.x.data(), M, K, in.xs.data(), in.zp.data(), ep, in.y.data(), 64);
      else
        sk::spmm_u8s8(L.packed, in.x.data(), M, K, in.xs.data(), in.zp.data(), ep, in.y.data(), N);
    });
    benchmark::ClobberMemory();
  }
  st.SetLabel(panels ? "head panels" : "token rows");
}

void BM_Dense(benchmark::State& st) {
  const int64_t K = st.range(0), N = st.range(1), M = st.range(2);
  Layer& L = layer(K, N, 0, true);
  Inputs in(M, K, N);
  const sk::QEpilogue ep;
  omp_set_num_threads(bench_threads());  // oneDNN's pool; our AMX kernel runs on the arena's
  arena().execute([&] {
    for (auto _ : st) {
      L.dense->run(in.x.data(), M, K, in.xs.data(), in.zp.data(), ep, in.y.data(), N);
      benchmark::ClobberMemory();
    }
  });
  st.counters["GOPS"] = benchmark::Counter(2.0 * M * K * N * st.iterations() * 1e-9,
                                           benchmark::Counter::kIsRate);
  st.counters["nnz_pct"] = 100.0;
  st.SetLabel(L.dense->kernel_name());
}

// The sum of a vector's 16 int32 lanes (a plain store and loop: GCC 12
// warns inside _mm512_reduce_add_epi32, bug 105593).
__attribute__((target("avx512f"))) int32_t lane_sum(__m512i v) {
  alignas(64) int32_t lanes[16];
  _mm512_store_si512(lanes, v);
  int32_t total = 0;
  for (int i = 0; i < 16; ++i) total += lanes[i];
  return total;
}

// The VNNI peak of this machine, measured rather than assumed: 16 independent
// vpdpbusd zmm chains per thread (enough to cover its latency on 2 ports),
// run by every thread of the arena at once. GOPS counts 2 ops per MAC.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) int32_t vnni_chains(int64_t iters) {
  __m512i acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_epi32(i);
  __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(2);
  for (int64_t it = 0; it < iters; ++it) {
    asm volatile("" : "+v"(a), "+v"(b));  // opaque inputs: nothing to fold or hoist
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
  }
  __m512i s = acc[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_epi32(s, acc[i]);
  return lane_sum(s);
}

// Runs loop(kIters) on every thread of the arena at once, per iteration; each
// of the loop's iterations is 16 vpdpbusd zmm (GOPS: 2 ops per MAC).
constexpr int64_t kVnniLoopIters = 1 << 16;
template <typename Loop>
void time_vnni_loop(benchmark::State& st, Loop loop) {
  if (!sk::cpu_supports(sk::Isa::Avx512Vnni)) {
    st.SkipWithError("this CPU has no AVX-512 VNNI");
    return;
  }
  const int threads = bench_threads();
  for (auto _ : st) {
    arena().execute([&] {
      tbb::parallel_for(0, threads, [&](int) { benchmark::DoNotOptimize(loop(kVnniLoopIters)); });
    });
  }
  st.counters["GOPS"] = benchmark::Counter(2.0 * 64 * 16 * kVnniLoopIters * threads * st.iterations() * 1e-9,
                                           benchmark::Counter::kIsRate);
}

void BM_VnniPeak(benchmark::State& st) { time_vnni_loop(st, vnni_chains); }
BENCHMARK(BM_VnniPeak)->Unit(benchmark::kMicrosecond)->UseRealTime();

// The sparse kernel's inner loop with nothing around it: per group of 4
// blocks, 4 loads of 64 activation bytes (here from a 4 KB buffer, so every
// load hits L1), the 8 in-lane unpacks that put them in the VNNI layout, and
// 16 vpdpbusd (4 channels x 4 token vectors, each channel's 4 weights one
// 32-bit broadcast). Its GOPS over BM_VnniPeak's is the ceiling the
// products can reach with the 4x1 pattern on this CPU: where vpdpbusd and
// the unpacks share vector ports, 16 / (16 + 8) of the peak.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) int32_t unpack_dpbusd_loop(const uint8_t* xb,
                                                                                 int64_t iters) {
  __m512i acc[4][4];
  for (auto& a : acc)
    for (auto& r : a) r = _mm512_setzero_si512();
  __m512i w = _mm512_set1_epi32(0x01FF7F02);
  for (int64_t it = 0; it < iters; ++it) {
    const uint8_t* g = xb + 64 * (it & 15);  // 4 rows of 64 bytes from 16 offsets
    const __m512i x0 = _mm512_load_si512(g), x1 = _mm512_load_si512(g + 1024);
    const __m512i x2 = _mm512_load_si512(g + 2048), x3 = _mm512_load_si512(g + 3072);
    const __m512i a = _mm512_unpacklo_epi8(x0, x1), c = _mm512_unpacklo_epi8(x2, x3);
    const __m512i b = _mm512_unpackhi_epi8(x0, x1), d = _mm512_unpackhi_epi8(x2, x3);
    const __m512i z[4] = {_mm512_unpacklo_epi16(a, c), _mm512_unpackhi_epi16(a, c), _mm512_unpacklo_epi16(b, d),
                          _mm512_unpackhi_epi16(b, d)};
    asm volatile("" : "+v"(w));  // a fresh broadcast operand each group, as in the kernel
    for (int ch = 0; ch < 4; ++ch)
      for (int r = 0; r < 4; ++r) acc[ch][r] = _mm512_dpbusd_epi32(acc[ch][r], z[r], w);
  }
  __m512i s = _mm512_setzero_si512();
  for (auto& a : acc)
    for (auto& r : a) s = _mm512_add_epi32(s, r);
  return lane_sum(s);
}

void BM_VnniUnpackLoop(benchmark::State& st) {
  std::vector<uint8_t, Aligned64<uint8_t>> xb(4096);
  for (size_t i = 0; i < xb.size(); ++i) xb[i] = static_cast<uint8_t>(i * 37);
  time_vnni_loop(st, [&](int64_t iters) { return unpack_dpbusd_loop(xb.data(), iters); });
}
BENCHMARK(BM_VnniUnpackLoop)->Unit(benchmark::kMicrosecond)->UseRealTime();

void Shapes(benchmark::internal::Benchmark* b, bool sparse) {
  const int64_t shapes[][2] = {{768, 768}, {768, 2304}, {768, 3072}, {3072, 768},
                               {1024, 1024}, {1024, 4096}, {4096, 1024}};
  for (const auto& s : shapes)
    for (int64_t M : {16, 128, 384, 512}) {
      if (sparse) {
        for (int64_t sp : {70, 80, 90, 95, 100}) b->Args({s[0], s[1], M, sp});
      } else {
        b->Args({s[0], s[1], M, 0});
      }
    }
  b->ArgNames({"K", "N", "M", "sparsity"})->Unit(benchmark::kMicrosecond)->UseRealTime();
}

// Low sparsities, to find where the sparse kernel overtakes oneDNN dense:
// the converter's default --sparse-threshold comes from this.
void CrossoverShapes(benchmark::internal::Benchmark* b) {
  for (int64_t K : {384, 768})
    for (int64_t N : {K, 4 * K})
      for (int64_t sp : {0, 20, 30, 40, 50, 60, 70, 80}) b->Args({K, N, 128, sp});
  b->ArgNames({"K", "N", "M", "sparsity"})->Unit(benchmark::kMicrosecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_Sparse)->Name("BM_Crossover")->Apply(CrossoverShapes);
BENCHMARK(BM_Dense)->Name("BM_CrossoverDense")->Apply([](benchmark::internal::Benchmark* b) {
  for (int64_t K : {384, 768})
    for (int64_t N : {K, 4 * K}) b->Args({K, N, 128, 0});
  b->ArgNames({"K", "N", "M", "sparsity"})->Unit(benchmark::kMicrosecond)->UseRealTime();
});
BENCHMARK(BM_Sparse)->Apply([](benchmark::internal::Benchmark* b) { Shapes(b, true); });
BENCHMARK(BM_SparseOut)->Apply([](benchmark::internal::Benchmark* b) {
  for (int64_t sp : {90, 100})
    for (int64_t out : {0, 1, 2}) b->Args({768, 3072, 128, sp, out});
  b->ArgNames({"K", "N", "M", "sparsity", "out"})->Unit(benchmark::kMicrosecond)->UseRealTime();
});
BENCHMARK(BM_SparseLayout)->Apply([](benchmark::internal::Benchmark* b) {
  for (int64_t N : {768, 2304, 3072})
    for (int64_t sp : {90, 100})
      for (int64_t layout : {0, 1}) b->Args({768, N, 128, sp, layout});
  b->ArgNames({"K", "N", "M", "sparsity", "layout"})->Unit(benchmark::kMicrosecond)->UseRealTime();
});
BENCHMARK(BM_Dense)->Apply([](benchmark::internal::Benchmark* b) { Shapes(b, false); });
// MiniLM's Linear shapes (hidden 384, intermediate 1536) at one and eight
// sequences of 128 tokens: the dense INT8 shapes the peer comparison claims.
BENCHMARK(BM_Dense)->Name("BM_DenseMiniLM")->Apply([](benchmark::internal::Benchmark* b) {
  for (int64_t M : {128, 1024})
    for (auto [K, N] : {std::pair<int64_t, int64_t>{384, 1152}, {384, 384}, {384, 1536}, {1536, 384}})
      b->Args({K, N, M, 0});
  b->ArgNames({"K", "N", "M", "sparsity"})->Unit(benchmark::kMicrosecond)->UseRealTime();
});

BENCHMARK_MAIN();
