// What checking a .spnl costs at load: Model::load with and without the
// weight checksum pass, against creating a session on the same model (which
// reads and packs every weight anyway) and one run, in the same process.
//
//   build/bench_load --model work/minilm/minilm.spnl --benchmark_repetitions=10 \
//       --benchmark_report_aggregates_only=true
//
// The pages of the file are in the page cache after the first load, as they
// are for a model that is served; BM_LoadColdPages drops them with
// posix_fadvise(DONTNEED) first (the disk-read cost a first load pays anyway).
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "runtime/session.h"
#include "runtime/spnl.h"

namespace {

std::string g_model;

void drop_pages() {
  const int fd = ::open(g_model.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

void BM_LoadVerified(benchmark::State& st) {
  for (auto _ : st) benchmark::DoNotOptimize(spinel::Model::load(g_model));
  st.SetBytesProcessed(st.iterations() * spinel::Model::load(g_model)->file_size());
}

void BM_LoadUnverified(benchmark::State& st) {
  for (auto _ : st) benchmark::DoNotOptimize(spinel::Model::load(g_model, spinel::LoadOptions{false}));
}

void BM_LoadColdPages(benchmark::State& st) {
  for (auto _ : st) {
    st.PauseTiming();
    drop_pages();
    st.ResumeTiming();
    benchmark::DoNotOptimize(spinel::Model::load(g_model));
  }
}

// The baseline: what a user pays anyway before the first result.
void BM_SessionCreate(benchmark::State& st) {
  const auto m = spinel::Model::load(g_model, spinel::LoadOptions{false});
  for (auto _ : st) spinel::Session s(m, 2);
}

void BM_FirstRun(benchmark::State& st) {
  const auto m = spinel::Model::load(g_model, spinel::LoadOptions{false});
  spinel::Session s(m, 2);
  spinel::Sequence q;
  for (int i = 0; i < 128; ++i) q.ids.push_back(100 + i);
  for (auto _ : st) benchmark::DoNotOptimize(s.run({q}).data);
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--model") == 0 && i + 1 < argc) {
      g_model = argv[i + 1];
      for (int j = i; j + 2 <= argc; ++j) argv[j] = argv[j + 2];
      argc -= 2;
      break;
    }
  }
  if (g_model.empty()) {
    std::fprintf(stderr, "usage: bench_load --model FILE.spnl [benchmark options]\n");
    return 2;
  }
  try {
    spinel::Model::load(g_model);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_load: %s\n", e.what());
    return 1;
  }
  benchmark::RegisterBenchmark("BM_LoadVerified", BM_LoadVerified)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_LoadUnverified", BM_LoadUnverified)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_LoadColdPages", BM_LoadColdPages)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_SessionCreate", BM_SessionCreate)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_FirstRun", BM_FirstRun)->Unit(benchmark::kMillisecond);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
