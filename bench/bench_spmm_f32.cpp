// Block-sparse FP32 Linear (spmm_f32, active ISA) against oneDNN's dense f32
// matmul (DenseLinearF32, what F32 layers ran on before) on BERT-base layers,
// in one binary so the ratios come from the same run: the crossover table of
// kernels/cpu/select.h (kCrossoverF32) comes from here.
//
// Both compute y = x W + bias from the same f32 input (the sparse kernel's
// per-call activation packing included). Threads are an argument: the sparse
// kernel runs in a tbb::task_arena(threads), oneDNN with
// omp_set_num_threads(threads). Run with OMP_WAIT_POLICY=PASSIVE so that
// oneDNN's OpenMP threads do not spin against TBB's workers.
//
// Counters: GFLOPS = 2 * M * (nonzero weights) per second (the nonzero work;
// the dense baseline counts every weight), nnz_pct = nonzero weights in %.
// Crossover run (M = 16, 128, 384; 1 and 2 threads; sparsity 0-95%):
//   OMP_WAIT_POLICY=PASSIVE build/bench_spmm_f32 --benchmark_filter=Crossover
//     --benchmark_repetitions=10 --benchmark_enable_random_interleaving=true
//     --benchmark_min_time=0.02 --benchmark_out=f32.json --benchmark_out_format=json
//   python3 bench/spmm_f32_table.py f32.json
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <tuple>
#include <vector>

#include <tbb/task_arena.h>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/spmm_f32.h"

namespace sk = spinel::kernels;

namespace {

tbb::task_arena& arena(int threads) {
  static std::map<int, std::unique_ptr<tbb::task_arena>> arenas;
  auto& a = arenas[threads];
  if (!a) a = std::make_unique<tbb::task_arena>(threads);
  return *a;
}

// 4x1-block-sparse f32 weights with the given fraction of zero blocks, placed
// at random (no structure beyond the blocks, as magnitude pruning leaves).
std::vector<float> sparse_weights(int64_t K, int64_t N, double sparsity, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::uniform_real_distribution<float> val(-0.05f, 0.05f);
  std::vector<float> W(static_cast<size_t>(K * N), 0.f);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n0 = 0; n0 < N; n0 += 4) {
      if (u(rng) < sparsity) continue;
      for (int c = 0; c < 4; ++c) W[k * N + n0 + c] = val(rng);
    }
  return W;
}

struct Layer {
  std::vector<float> W, bias;
  sk::PackedF32Sparse packed;
  std::unique_ptr<sk::DenseLinearF32> dense;
};

// Built once per (K, N, sparsity) and kept: packing is not what is measured.
Layer& layer(int64_t K, int64_t N, int sparsity_pct, bool want_dense) {
  static std::map<std::tuple<int64_t, int64_t, int>, std::unique_ptr<Layer>> cache;
  auto& slot = cache[{K, N, sparsity_pct}];
  if (!slot) {
    slot = std::make_unique<Layer>();
    slot->W = sparse_weights(K, N, sparsity_pct / 100.0, static_cast<uint32_t>(K * 31 + N + sparsity_pct));
    slot->bias.assign(static_cast<size_t>(N), 0.25f);
    slot->packed = sk::pack_f32_sparse(slot->W.data(), K, N, slot->bias.data());
  }
  if (want_dense && !slot->dense)
    slot->dense = std::make_unique<sk::DenseLinearF32>(slot->W.data(), slot->bias.data(), K, N,
                                                       spinel::Activation::None);
  return *slot;
}

struct Inputs {
  std::vector<float> x, y;
  Inputs(int64_t M, int64_t K, int64_t N) : x(static_cast<size_t>(M * K)), y(static_cast<size_t>(M * N)) {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> d(-1.f, 1.f);
    for (auto& v : x) v = d(rng);
  }
};

void BM_SparseF32(benchmark::State& st) {
  const int64_t K = st.range(0), N = st.range(1), M = st.range(2);
  const int sp = static_cast<int>(st.range(3));
  const int threads = static_cast<int>(st.range(4));
  Layer& L = layer(K, N, sp, false);
  Inputs in(M, K, N);
  const sk::F32SparseEpilogue ep;
  tbb::task_arena& a = arena(threads);
  for (auto _ : st) {
    a.execute([&] { sk::spmm_f32(L.packed, in.x.data(), M, K, ep, in.y.data(), N); });
    benchmark::ClobberMemory();
  }
  const double nnz = 4.0 * static_cast<double>(L.packed.nnz_blocks);
  st.counters["GFLOPS"] = benchmark::Counter(2.0 * M * nnz * st.iterations() * 1e-9,
                                             benchmark::Counter::kIsRate);
  st.counters["nnz_pct"] = 100.0 * nnz / static_cast<double>(K * N);
  st.SetLabel(sk::spmm_f32_kernel_name());
}

void BM_DenseF32(benchmark::State& st) {
  const int64_t K = st.range(0), N = st.range(1), M = st.range(2);
  const int threads = static_cast<int>(st.range(4));
  Layer& L = layer(K, N, 0, true);
  Inputs in(M, K, N);
  omp_set_num_threads(threads);
  for (auto _ : st) {
    L.dense->run(in.x.data(), M, nullptr, in.y.data());
    benchmark::ClobberMemory();
  }
  st.counters["GFLOPS"] = benchmark::Counter(2.0 * M * K * N * st.iterations() * 1e-9,
                                             benchmark::Counter::kIsRate);
  st.counters["nnz_pct"] = 100.0;
  st.SetLabel("onednn_f32_" + L.dense->implementation(M, false, false));
}

// BERT-base layers: attention output (768x768), fused QKV (768x2304),
// intermediate (768x3072), output (3072x768).
constexpr int64_t kShapes[][2] = {{768, 768}, {768, 2304}, {768, 3072}, {3072, 768}};

void CrossoverSparse(benchmark::internal::Benchmark* b) {
  for (const auto& s : kShapes)
    for (int64_t M : {16, 128, 384})
      for (int64_t t : {1, 2})
        for (int64_t sp : {0, 30, 40, 50, 60, 70, 80, 90, 95}) b->Args({s[0], s[1], M, sp, t});
  b->ArgNames({"K", "N", "M", "sparsity", "threads"})->Unit(benchmark::kMicrosecond)->UseRealTime();
}

void CrossoverDense(benchmark::internal::Benchmark* b) {
  for (const auto& s : kShapes)
    for (int64_t M : {16, 128, 384})
      for (int64_t t : {1, 2}) b->Args({s[0], s[1], M, 0, t});
  b->ArgNames({"K", "N", "M", "sparsity", "threads"})->Unit(benchmark::kMicrosecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_SparseF32)->Name("BM_CrossoverSparseF32")->Apply(CrossoverSparse);
BENCHMARK(BM_DenseF32)->Name("BM_CrossoverDenseF32")->Apply(CrossoverDense);

BENCHMARK_MAIN();
