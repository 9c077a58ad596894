// Micro-benchmark of the FP32 CPU kernels on BERT-base shapes.
//
// Usage: bench_kernels_f32 [threads=2] [reps=100]
//
// Everything runs in a tbb::task_arena of `threads` with oneDNN's OpenMP
// budget matched, as a session does. Following /work/shared/MEASURING.md the
// machine is assumed noisy: DenseLinearF32 is timed alternately with a
// direct oneDNN matmul that reads W in the caller's [K, N] layout (the
// baseline), and the median, min and max of each and the median ratio are
// printed, never one time alone.
//
// Run with GOMP_SPINCOUNT=10000 (or OMP_WAIT_POLICY=passive) in the
// environment: with libgomp's default spin, OpenMP workers keep a core busy
// for milliseconds after each oneDNN call, and on a loaded 2-core machine the
// next oneDNN call measured up to 10x slower.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>
#include <tbb/task_arena.h>

#include "kernels/cpu/f32_isa.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/ops.h"

namespace k = spinel::kernels;
using spinel::Activation;

namespace {

double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Samples {
  std::vector<double> t;
  double median() const {
    auto v = t;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  }
  double min() const { return *std::min_element(t.begin(), t.end()); }
  double max() const { return *std::max_element(t.begin(), t.end()); }
};

std::vector<float> random_vec(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = u(g);
  return v;
}

// Times fns[i] alternately, `reps` rounds after a few warm-up rounds.
std::vector<Samples> alternate(tbb::task_arena& arena, int reps,
                               const std::vector<std::function<void()>>& fns) {
  std::vector<Samples> s(fns.size());
  for (int r = 0; r < reps + 5; ++r)
    for (size_t i = 0; i < fns.size(); ++i) {
      const double t0 = seconds_now();
      arena.execute(fns[i]);
      if (r >= 5) s[i].t.push_back(seconds_now() - t0);
    }
  return s;
}

void print(const char* what, const Samples& s, double flops) {
  std::printf("  %-28s median %8.3f ms  min %8.3f  max %8.3f", what, s.median() * 1e3,
              s.min() * 1e3, s.max() * 1e3);
  if (flops > 0) std::printf("  %6.1f GFLOPS", flops / s.median() * 1e-9);
  std::printf("\n");
}

void bench_linear(tbb::task_arena& arena, int reps, int64_t M, int64_t K, int64_t N,
                  Activation act) {
  using dnnl::memory;
  using tag = memory::format_tag;
  using dt = memory::data_type;
  auto x = random_vec(M * K, 1), w = random_vec(K * N, 2), b = random_vec(N, 3);
  std::vector<float> y(M * N), y_base(M * N);
  k::DenseLinearF32 op(w.data(), b.data(), K, N, act);

  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream st(eng);
  const memory::desc xd({M, K}, dt::f32, tag::ab), wd({K, N}, dt::f32, tag::ab),
      bd({1, N}, dt::f32, tag::ab), yd({M, N}, dt::f32, tag::ab);
  dnnl::primitive_attr attr;
  if (act != Activation::None) {
    dnnl::post_ops po;
    po.append_eltwise(1.f,
                      act == Activation::GeluTanh ? dnnl::algorithm::eltwise_gelu_tanh
                                                  : dnnl::algorithm::eltwise_gelu_erf,
                      0.f, 0.f);
    attr.set_post_ops(po);
  }
  dnnl::matmul mm(dnnl::matmul::primitive_desc(dnnl::matmul::desc(xd, wd, bd, yd), attr, eng));
  memory xm(xd, eng, x.data()), wm(wd, eng, w.data()), bm(bd, eng, b.data()),
      ym(yd, eng, y_base.data());

  const auto s = alternate(
      arena, reps,
      {[&] { op.run(x.data(), M, nullptr, y.data()); },
       [&] {
         mm.execute(st, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_BIAS, bm},
                         {DNNL_ARG_DST, ym}});
         st.wait();
       }});
  const double flops = 2.0 * M * K * N;
  std::vector<double> ratio;
  for (size_t i = 0; i < s[0].t.size(); ++i) ratio.push_back(s[1].t[i] / s[0].t[i]);
  std::sort(ratio.begin(), ratio.end());
  std::printf("linear M=%ld K=%ld N=%ld act=%s\n", static_cast<long>(M), static_cast<long>(K),
              static_cast<long>(N), spinel::activation_name(act));
  print("DenseLinearF32", s[0], flops);
  print("oneDNN, W in user layout", s[1], flops);
  std::printf("  speedup over baseline (median of per-round ratios): %.2fx\n",
              ratio[ratio.size() / 2]);
}

// FP32 attention, and (where the CPU has them) the AMX-BF16 and AVX512_BF16
// blocks, alternated in the same rounds.
void bench_attention(tbb::task_arena& arena, int reps, int64_t seqs, int64_t len, int64_t hd) {
  const int64_t heads = 12, H = heads * hd, T = seqs * len;
  std::vector<int64_t> off(seqs + 1);
  for (int64_t s = 0; s <= seqs; ++s) off[s] = s * len;
  const auto qkv = random_vec(T * 3 * H, 4);
  std::vector<float> out(T * H), scratch;
  arena.execute([&] { scratch.resize(k::attention_scratch_floats(len, heads, hd)); });
  std::vector<k::AttentionProducts> kinds{k::AttentionProducts::F32};
  if (k::cpu_has_amx_bf16()) kinds.push_back(k::AttentionProducts::AmxBf16);
  if (k::cpu_has_avx512_bf16()) kinds.push_back(k::AttentionProducts::Avx512Bf16);
  // INT8 Q.K^T (what INT8 models run on heads of 64 or more here).
  if (k::cpu_has_avx512_bf16() && k::active_isa() == k::Isa::Avx512Vnni && hd >= 64)
    kinds.push_back(k::AttentionProducts::Avx512S8Qk);
  std::vector<std::function<void()>> fns;
  for (const auto kind : kinds)
    fns.push_back([&, kind] {
      k::attention_f32(qkv.data(), off.data(), seqs, heads, hd, 0.125f, out.data(), scratch.data(),
                       nullptr, kind);
    });
  const auto s = alternate(arena, reps, fns);
  const double flops = 4.0 * seqs * len * len * hd * heads;
  for (size_t i = 0; i < kinds.size(); ++i) {
    char what[80];
    std::snprintf(what, sizeof what, "attention %ldx%ld, 12x%ld, %s", static_cast<long>(seqs),
                  static_cast<long>(len), static_cast<long>(hd), k::attention_products_name(kinds[i]));
    print(what, s[i], flops);
    if (i == 0) continue;
    std::vector<double> ratio;
    for (size_t j = 0; j < s[0].t.size(); ++j) ratio.push_back(s[0].t[j] / s[i].t[j]);
    std::sort(ratio.begin(), ratio.end());
    std::printf("  %s speedup over f32 (median of per-round ratios): %.2fx\n",
                k::attention_products_name(kinds[i]), ratio[ratio.size() / 2]);
  }
  if (kinds.size() == 1) std::printf("  (no AMX-BF16 or AVX512_BF16 on this CPU: only FP32 is measured)\n");
}

void bench_rows(tbb::task_arena& arena, int reps) {
  const int64_t rows = 128, cols = 768, n = 128 * 3072;
  const auto x = random_vec(rows * cols, 5), r = random_vec(rows * cols, 6),
             g = random_vec(cols, 7), b = random_vec(cols, 8);
  std::vector<float> y(rows * cols);
  // GELU runs in place, rep after rep: on values of mixed sign it shrinks
  // them towards 0 and within ~100 passes into denormals, whose arithmetic is
  // many times slower (this line once timed that, not GELU). Values in
  // [6, 12] are GELU's fixed points to within an ulp per pass; the kernels
  // have no value-dependent branches, so their cost is the same as on
  // ordinary activations.
  auto a = random_vec(n, 9);
  for (float& v : a) v = 9.f + 3.f * v;  // random_vec is in [-1, 1]
  auto c = a;
  const auto s = alternate(
      arena, reps,
      {[&] { k::layernorm_f32(x.data(), r.data(), g.data(), b.data(), 1e-12f, rows, cols, y.data()); },
       [&] { k::gelu_erf_f32(a.data(), n); }, [&] { k::gelu_tanh_f32(c.data(), n); }});
  print("layernorm+res 128x768", s[0], 0);
  print("gelu_erf 128x3072", s[1], 0);
  print("gelu_tanh 128x3072", s[2], 0);
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::max(1, std::atoi(argv[1])) : 2;
  const int reps = argc > 2 ? std::max(1, std::atoi(argv[2])) : 100;
  omp_set_num_threads(threads);
  tbb::task_arena arena(threads);
  // A third argument "attention": the attention rows only.
  const bool only_attention = argc > 3 && std::string(argv[3]) == "attention";
  std::printf("threads %d, reps %d, row kernels built for %s\n", threads, reps,
              k::f32::kernel_table().name);
  if (only_attention) {
    for (auto [seqs, len] : {std::pair<int64_t, int64_t>{1, 128}, {8, 128}})
      bench_attention(arena, reps, seqs, len, 64);
    bench_attention(arena, reps, 8, 128, 32);
    return 0;
  }
  bench_linear(arena, reps, 128, 768, 768, Activation::None);
  bench_linear(arena, reps, 128, 768, 3072, Activation::GeluErf);
  bench_linear(arena, reps, 128, 3072, 768, Activation::None);
  bench_linear(arena, reps, 128, 768, 2304, Activation::None);
  bench_linear(arena, reps, 37, 768, 3072, Activation::GeluErf);
  // BERT-base's heads (12 x 64), and MiniLM's (12 x 32) at 8 x 128 tokens.
  for (auto [seqs, len] : {std::pair<int64_t, int64_t>{1, 128}, {4, 128}, {8, 32}, {1, 512}})
    bench_attention(arena, reps / 2 + 1, seqs, len, 64);
  bench_attention(arena, reps / 2 + 1, 8, 128, 32);
  bench_rows(arena, reps);
  return 0;
}
