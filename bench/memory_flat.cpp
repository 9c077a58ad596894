// Memory stays flat: many runs with random batch sizes and lengths on one
// session must not grow the resident set once the session has seen its
// largest batch (the arena grows to the largest shape and is then reused).
//
//   build/memory_flat --model work/minilm/minilm.spnl [--runs 10000] [--max-batch 8]
//                     [--max-length L] [--threads 2] [--seed 1] [--json]
//
// Lengths are uniform in [1, L] (L: --max-length, default the model's
// max_position). Warm-up: one run of the largest batch (max-batch sequences
// of L tokens), then 100 random runs. RSS (VmRSS of /proc/self/status) is sampled
// after the warm-up and every runs/20 runs; the program prints the samples
// and fails (exit 1) if the last or the largest sample exceeds the first by
// more than 5%.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "runtime/session.h"

namespace {

long rss_kib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  return -1;
}

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "memory_flat: %s\nusage: memory_flat --model FILE.spnl [--runs N] [--max-batch B] "
               "[--max-length L] [--threads T] [--seed S] [--json]\n",
               why);
  std::exit(2);
}

long parse_long(const char* flag, const char* v, long lo, long hi) {
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (!*v || *end || n < lo || n > hi)
    usage((std::string(flag) + " needs an integer in [" + std::to_string(lo) + ", " +
           std::to_string(hi) + "]").c_str());
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path;
  long runs = 10000, max_batch = 8, threads = 2, seed = 1, max_length = 0;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
    if (a == "--json") {
      json = true;
      continue;
    }
    if (!v) usage(("missing value for " + a).c_str());
    if (a == "--model") model_path = v;
    else if (a == "--runs") runs = parse_long("--runs", v, 100, 100000000);
    else if (a == "--max-batch") max_batch = parse_long("--max-batch", v, 1, 4096);
    else if (a == "--max-length") max_length = parse_long("--max-length", v, 1, 1L << 20);
    else if (a == "--threads") threads = parse_long("--threads", v, 1, spinel::kMaxThreads);
    else if (a == "--seed") seed = parse_long("--seed", v, 0, 1L << 30);
    else usage(("unknown option " + a).c_str());
    ++i;
  }
  if (model_path.empty()) usage("--model is required");

  try {
    const auto model = spinel::Model::load(model_path);
    const int64_t vocab = model->config().vocab_size;
    const int64_t max_len = max_length > 0 ? std::min<int64_t>(max_length, model->config().max_position)
                                           : model->config().max_position;
    spinel::Session session(model, static_cast<int>(threads));
    std::mt19937 rng(static_cast<unsigned>(seed));
    std::uniform_int_distribution<int32_t> id(1000 < vocab ? 1000 : 0, static_cast<int32_t>(vocab - 1));
    auto batch_of = [&](int64_t n, int64_t len) {
      std::vector<spinel::Sequence> b(static_cast<size_t>(n));
      for (auto& s : b) {
        s.ids.resize(static_cast<size_t>(len));
        for (auto& t : s.ids) t = id(rng);
      }
      return b;
    };
    session.run(batch_of(max_batch, max_len));  // the largest shape: the arena's final size
    std::uniform_int_distribution<int64_t> nb(1, max_batch), nl(1, max_len);
    auto random_run = [&] {
      std::vector<spinel::Sequence> b(static_cast<size_t>(nb(rng)));
      for (auto& s : b) {
        s.ids.resize(static_cast<size_t>(nl(rng)));
        for (auto& t : s.ids) t = id(rng);
      }
      session.run(b);
    };
    for (int i = 0; i < 100; ++i) random_run();

    std::vector<long> samples{rss_kib()};
    const long every = std::max(1L, runs / 20);
    for (long r = 1; r <= runs; ++r) {
      random_run();
      if (r % every == 0) samples.push_back(rss_kib());
    }
    const long first = samples.front(), last = samples.back();
    const long peak = *std::max_element(samples.begin(), samples.end());
    const double growth_last = double(last - first) / first, growth_peak = double(peak - first) / first;
    const bool flat = growth_last <= 0.05 && growth_peak <= 0.05;
    if (json) {
      std::printf("{\"model\":\"%s\",\"runs\":%ld,\"max_batch\":%ld,\"max_length\":%lld,"
                  "\"threads\":%ld,\"rss_kib\":[",
                  model_path.c_str(), runs, max_batch, static_cast<long long>(max_len), threads);
      for (size_t i = 0; i < samples.size(); ++i) std::printf("%s%ld", i ? "," : "", samples[i]);
      std::printf("],\"growth_last\":%.4f,\"growth_peak\":%.4f,\"flat\":%s}\n", growth_last,
                  growth_peak, flat ? "true" : "false");
    } else {
      std::printf("%-10s %s\n", "runs", "RSS (MiB)");
      for (size_t i = 0; i < samples.size(); ++i)
        std::printf("%-10ld %.1f\n", static_cast<long>(i) * every, samples[i] / 1024.0);
      std::printf("after warm-up %.1f MiB, last %.1f MiB (%+.2f%%), peak %.1f MiB (%+.2f%%): %s\n",
                  first / 1024.0, last / 1024.0, 100 * growth_last, peak / 1024.0, 100 * growth_peak,
                  flat ? "flat (within 5%)" : "GREW by more than 5%");
    }
    return flat ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "memory_flat: %s\n", e.what());
    return 1;
  }
}
