// spinel bench: the latency-constrained benchmark (MLPerf Inference LoadGen's
// scenarios) on a .spnl model. Argument parsing, the table and the JSON
// report live here; the load generator, batcher, statistics and rate search
// are the library in tools/spinel/bench/.
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdarg>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "runtime/platform.h"
#include "runtime/session.h"
#include "runtime/spnl.h"
#include "tools/spinel/args.h"
#include "tools/spinel/bench/harness.h"
#include "tools/spinel/bench/json_writer.h"
#include "tools/spinel/bench/queries.h"
#include "tools/spinel/bench/session_service.h"
#include "tools/spinel/commands.h"


namespace spinel::cli {
namespace {

using namespace spinel::bench;

const char* kHelp =
    "usage: spinel bench MODEL.spnl [--scenario server|single|offline] [--seq N]\n"
    "                    [--seq-dist fixed|uniform:A-B|file:PATH] [--latency-budget T]\n"
    "                    [--percentile P] [--max-batch B] [--max-wait T] [--duration T]\n"
    "                    [--warmup T] [--instances N] [--threads T] [--tune] [--pin]\n"
    "                    [--seed S] [--max-trials K] [--json FILE]\n"
    "\n"
    "Measures the model under load, the way MLPerf Inference LoadGen does, on synthetic\n"
    "queries: [CLS] + random vocabulary ids + [SEP] (where the model's tokenizer puts\n"
    "them), of lengths from --seq / --seq-dist, made from --seed.\n"
    "\n"
    "scenarios:\n"
    "  server   (default) queries arrive as a Poisson process; a queue batches them\n"
    "           dynamically onto N instances (sessions of T threads over one loaded\n"
    "           model). Latency = completion - scheduled arrival, queueing included.\n"
    "           Searches the arrival rate (bracket, then bisect; --max-trials trials of\n"
    "           --duration each) for the highest whose p<percentile> latency is within\n"
    "           --latency-budget while the instances keep up (a trial fails when\n"
    "           completions fall short of arrivals by more than 5% plus what the\n"
    "           instances hold in flight, or queries are left unfinished)\n"
    "  single   one query at a time, back to back, batch 1: p50/p90/p99 and mean\n"
    "  offline  every query available at once, batches of --max-batch: sequences/s\n"
    "           and tokens/s (latencies are per batch)\n"
    "\n"
    "options (durations take a unit: us, ms or s, e.g. 20ms, 0.5s):\n"
    "  --seq N             tokens per query with --seq-dist fixed, counting [CLS] and\n"
    "                      [SEP] (default 128; at most the model's limit)\n"
    "  --seq-dist D        fixed (default), uniform:A-B (each length equally likely,\n"
    "                      inclusive) or file:PATH (one length per line, '#' comments;\n"
    "                      drawn uniformly from the lines)\n"
    "  --latency-budget T  the latency bound (default 20ms)\n"
    "  --percentile P      judge latency at this percentile, 0 < P < 100 (default 90)\n"
    "  --max-batch B       largest batch (default 8; 1..1024)\n"
    "  --max-wait T        server: how long the oldest queued query may wait for the\n"
    "                      batch to fill before a free instance takes what is queued\n"
    "                      (default 2ms; 0 = never wait)\n"
    "  --duration T        measured time of each trial (default 10s)\n"
    "  --warmup T          time run before each trial's measurement (default 1s)\n"
    "  --instances N       sessions running at once (default 1)\n"
    "  --threads T         threads per session (default: the cores / instances). More\n"
    "                      instances x threads than cores is allowed, with a warning\n"
    "                      (an oversubscription experiment; recorded in the JSON)\n"
    "  --tune              try every partition of the cores into instances x threads\n"
    "                      (1x2 and 2x1 on 2 cores) and, for server and offline, max\n"
    "                      batches 1, 2, 4, ... up to --max-batch; report the best.\n"
    "                      --instances or --threads given with it fix that dimension\n"
    "  --pin               pin instance i's thread to its own cores (threads of T > 1\n"
    "                      sessions other than the caller are not pinned)\n"
    "  --seed S            seed of the arrivals and queries (default 1)\n"
    "  --max-trials K      server: trials per rate search (default 8)\n"
    "  --json FILE         write every trial and the best as JSON (schema:\n"
    "                      docs/bench_schema.md); tools/plot_bench.py FILE -o PNG plots it\n"
    "  -h, --help          this text\n"
    "\n"
    "The table (stdout) lists every trial; the winner's row is marked '*'. Progress goes\n"
    "to stderr: a line per trial, and a live line on a terminal.\n"
    "\n"
    "example: spinel bench model.spnl --seq 128 --latency-budget 20ms --percentile 90 \\\n"
    "           --max-batch 8 --tune --json out.json\n";

constexpr int kSchemaVersion = 1;
constexpr size_t kQueryPool = 2048;

// --name VALUE with a unit: "20ms", "0.5s", "250us" -> seconds.
double parse_duration(const Args& args, const std::string& name, double fallback, bool allow_zero) {
  if (!args.has(name)) return fallback;
  const std::string s = args.get(name);
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.' || s[i] == '-' || s[i] == '+'))
    ++i;
  const std::string num = s.substr(0, i), unit = s.substr(i);
  double scale = 0;
  if (unit == "s") scale = 1;
  else if (unit == "ms") scale = 1e-3;
  else if (unit == "us") scale = 1e-6;
  double v = 0;
  size_t used = 0;
  try {
    v = std::stod(num, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (num.empty() || used != num.size() || scale == 0 || !std::isfinite(v))
    throw UsageError{"--" + name + " expects a duration with a unit (us, ms or s), like 20ms or 0.5s, got '" + s + "'"};
  v *= scale;
  if (v < 0 || (!allow_zero && v == 0))
    throw UsageError{"--" + name + " must be " + (allow_zero ? "zero or more" : "more than zero") + ", got '" + s + "'"};
  if (v > 24 * 3600) throw UsageError{"--" + name + " is longer than a day: '" + s + "'"};
  return v;
}

double parse_percentile(const Args& args) {
  if (!args.has("percentile")) return 90;
  const std::string s = args.get("percentile");
  double v = 0;
  size_t used = 0;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (s.empty() || used != s.size() || !std::isfinite(v))
    throw UsageError{"--percentile expects a number, got '" + s + "'"};
  if (!(v > 0 && v < 100))
    throw UsageError{"--percentile must be between 0 and 100 (exclusive), got '" + s + "'"};
  return v;
}

// The CPUs this process may run on (its affinity mask), in order.
std::vector<int> allowed_cpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
  if (cpus.empty()) cpus.push_back(0);
  return cpus;
}

double load_average() {
  std::ifstream f("/proc/loadavg");
  double v = -1;
  if (!(f >> v)) return NAN;
  return v;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

struct Partition {
  int instances = 1, threads = 1;
};

struct Config {
  Partition part;
  size_t max_batch = 1;
  int64_t slice_tokens = 0;  // the sessions' (Session::slice_tokens)
  std::vector<int> trials;  // indices into the run's trials
  int best_trial = -1;      // server: highest passing rate; else the trial
  double max_rate = 0;      // server
  double estimate = 0;      // server: the capacity estimate the search started from
};

struct Trial {
  int config = 0;
  TrialResult r;
};

struct PrecisionSummary {
  int linears = 0, s8 = 0, sparse = 0;
  double mean_sparsity = 0;
  std::string name;
};

PrecisionSummary precision_summary(const Model& m) {
  PrecisionSummary p;
  double sp = 0;
  for (const Op& op : m.graph().ops) {
    if (op.kind != OpKind::Linear) continue;
    ++p.linears;
    p.s8 += op.precision != Precision::F32;
    if (op.precision == Precision::S8Sparse) {
      ++p.sparse;
      sp += op.block_sparsity >= 0 ? op.block_sparsity : 0;
    }
  }
  p.mean_sparsity = p.sparse ? sp / p.sparse : 0;
  p.name = p.s8 == 0 ? "fp32" : p.s8 < p.linears ? "mixed" : p.sparse ? "int8-sparse" : "int8";
  return p;
}

std::string config_name(const Config& c) {
  return std::to_string(c.part.instances) + "x" + std::to_string(c.part.threads);
}

// The live line on a terminal (redrawn with \r), and a line per event.
class Log {
 public:
  Log() : tty_(stderr_is_tty()) {}
  void live(const std::string& s) {
    if (!tty_) return;
    std::string line = s.substr(0, 119);
    const size_t shown = line.size();
    if (line.size() < width_) line.append(width_ - line.size(), ' ');
    width_ = shown;
    std::fprintf(stderr, "\r%s", line.c_str());
    std::fflush(stderr);
  }
  void line(const std::string& s) {
    clear();
    std::fprintf(stderr, "%s\n", s.c_str());
    std::fflush(stderr);
  }
  void clear() {
    if (!tty_ || width_ == 0) return;
    std::fprintf(stderr, "\r%*s\r", static_cast<int>(width_), "");
    width_ = 0;
  }

 private:
  bool tty_;
  size_t width_ = 0;
};

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

void write_latency(JsonWriter& j, const LatencySummary& l) {
  j.begin_object();
  j.field("count", l.count);
  j.field("mean", l.mean * 1e3);
  j.field("min", l.min * 1e3);
  j.field("max", l.max * 1e3);
  j.field("p50", l.p50 * 1e3);
  j.field("p90", l.p90 * 1e3);
  j.field("p99", l.p99 * 1e3);
  j.field("at_percentile", l.at_percentile * 1e3);
  j.end_object();
}

void write_config_key(JsonWriter& j, const Config& c) {
  j.begin_object();
  j.field("instances", c.part.instances);
  j.field("threads", c.part.threads);
  j.field("max_batch", static_cast<int64_t>(c.max_batch));
  j.end_object();
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  const std::string started = utc_now();
  try {
    Args args(argc, argv,
              {"seq", "seq-dist", "latency-budget", "percentile", "max-batch", "max-wait", "scenario",
               "duration", "warmup", "instances", "threads", "seed", "json", "max-trials"},
              {"help", "tune", "pin"});
    if (args.has("help")) {
      std::fputs(kHelp, stdout);
      return 0;
    }
    if (args.positionals().size() != 1) throw UsageError{"expected exactly one MODEL.spnl"};
    const std::string scenario = args.get("scenario", "server");
    if (scenario != "server" && scenario != "single" && scenario != "offline")
      throw UsageError{"--scenario must be server, single or offline, not '" + args.get("scenario") + "'"};
    const double budget = parse_duration(args, "latency-budget", 0.020, false);
    const double pct = parse_percentile(args);
    const double max_wait = parse_duration(args, "max-wait", 0.002, true);
    const double duration = parse_duration(args, "duration", 10.0, false);
    const double warmup = parse_duration(args, "warmup", 1.0, true);
    const size_t max_batch = static_cast<size_t>(args.get_int("max-batch", 8, 1, 1024));
    const int max_trials = static_cast<int>(args.get_int("max-trials", 8, 1, 100));
    const uint64_t seed = static_cast<uint64_t>(args.get_int("seed", 1, 0, INT64_MAX));
    const bool tune = args.has("tune"), pin = args.has("pin");
    const int64_t seq = args.get_int("seq", 128, 1, 1 << 20);
    const std::string dist_spec = args.get("seq-dist", "fixed");
    if (dist_spec != "fixed" && args.has("seq"))
      throw UsageError{"--seq gives the length of --seq-dist fixed; --seq-dist " + dist_spec +
                       " has its own lengths: give one or the other"};
    LengthDist dist;
    try {
      dist = parse_length_dist(dist_spec, seq);
    } catch (const std::invalid_argument& e) {
      throw UsageError{e.what()};
    }
    const std::vector<int> cpus = allowed_cpus();
    const int cores = static_cast<int>(cpus.size());
    const bool fixed_inst = args.has("instances"), fixed_thr = args.has("threads");
    const int inst_arg = static_cast<int>(args.get_int("instances", 1, 1, 256));
    const int thr_arg = static_cast<int>(args.get_int("threads", 0, 1, kMaxThreads));
    if (scenario == "single" && fixed_inst && inst_arg != 1)
      throw UsageError{"--scenario single runs one query at a time on one instance: drop --instances " +
                       std::to_string(inst_arg)};
    const std::string json_path = args.get("json", "");
    if (args.has("json") && json_path.empty()) throw UsageError{"--json needs a file name"};

    // The partitions of the cores to run.
    std::vector<Partition> parts;
    auto explicit_part = [&] {
      Partition p;
      p.instances = scenario == "single" ? 1 : inst_arg;
      p.threads = fixed_thr ? thr_arg : std::max(1, cores / p.instances);
      return p;
    };
    if (tune) {
      for (int d = 1; d <= cores; ++d) {
        if (cores % d) continue;
        Partition p{d, cores / d};
        if (scenario == "single") p = {1, d};
        if (fixed_inst && p.instances != inst_arg) continue;
        if (fixed_thr && p.threads != thr_arg) continue;
        parts.push_back(p);
      }
      if (parts.empty()) parts.push_back(explicit_part());
    } else {
      parts.push_back(explicit_part());
    }
    bool oversubscribed = false;
    for (const Partition& p : parts)
      if (p.instances * p.threads > cores) oversubscribed = true;
    std::vector<size_t> batches;
    if (scenario == "single") {
      batches = {1};
    } else if (tune) {
      for (size_t b = 1; b < max_batch; b *= 2) batches.push_back(b);
      batches.push_back(max_batch);
    } else {
      batches = {max_batch};
    }

    const auto model = Model::load(args.positionals()[0]);
    const TokenSpace space = token_space(*model);
    const int64_t limit = model->config().max_position;
    try {
      dist.check(std::max<int64_t>(1, space.specials()), limit);
    } catch (const std::invalid_argument& e) {
      throw UsageError{e.what()};
    }
    Log log;
    if (oversubscribed)
      log.line(fmt("spinel bench: warning: instances x threads exceeds the %d cores this process may use: "
                   "the sessions will compete for them",
                   cores));

    // The query pool, shared by every instance and config.
    auto pool = std::make_shared<std::vector<Sequence>>();
    for (auto& ids : synthetic_queries(dist, space, kQueryPool, seed)) {
      Sequence s;
      s.ids = std::move(ids);
      pool->push_back(std::move(s));
    }
    check_batch(*model, *pool);

    TrialOptions base;
    base.warmup = warmup;
    base.duration = duration;
    base.max_wait = max_wait;
    base.percentile = pct;
    base.budget = budget;

    std::vector<Config> configs;
    std::vector<Trial> trials;
    for (const Partition& part : parts) {
      log.live(fmt("spinel bench: creating %d session(s) of %d thread(s)", part.instances, part.threads));
      SessionService service(model, part.instances, part.threads, pool);
      // (Each cpu session runs its batches on a thread of its own, whichever
      // thread calls it: warming here and running trials elsewhere share one
      // OpenMP pool; kernels/cpu/backend_cpu.cpp CpuExecutor.)
      service.warm(batches.back());
      TrialOptions o = base;
      if (pin) {
        o.cpus.clear();
        for (int i = 0; i < part.instances; ++i) {
          std::vector<int> mine;
          for (int t = 0; t < part.threads; ++t)
            mine.push_back(cpus[static_cast<size_t>(i * part.threads + t) % cpus.size()]);
          o.cpus.push_back(mine);
        }
      }
      for (size_t b : batches) {
        Config cfg;
        cfg.part = part;
        cfg.max_batch = b;
        cfg.slice_tokens = service.slice_tokens();
        const int ci = static_cast<int>(configs.size());
        const std::string label = fmt("%s %s batch %zu", scenario.c_str(), config_name(cfg).c_str(), b);
        o.max_batch = b;
        int trial_no = 0;
        auto progress = [&](double rate) {
          return [&, rate](const TrialProgress& p) {
            std::string s = fmt("spinel bench: %s, trial %d", label.c_str(), trial_no);
            if (rate > 0) s += fmt(" at %.1f/s", rate);
            const double t = std::max(0.0, p.elapsed);
            s += fmt(": %.1f/%.1f s%s, %lld done", std::min(t, p.planned), p.planned,
                     t < warmup ? " (warm-up)" : t > p.planned ? " (draining the queue)" : "",
                     static_cast<long long>(p.completed));
            log.live(s);
          };
        };
        auto record = [&](TrialResult r) {
          const TrialResult& x = r;
          std::string s = fmt("spinel bench: %s, trial %d:", label.c_str(), trial_no);
          if (x.scenario == "server") s += fmt(" offered %.1f/s, achieved %.1f/s,", x.offered_rate, x.achieved_rate);
          else s += fmt(" %.1f seq/s, %.0f tokens/s,", x.achieved_rate, x.tokens_per_s);
          s += fmt(" p50 %.2f p90 %.2f p99 %.2f ms", x.latency.p50 * 1e3, x.latency.p90 * 1e3, x.latency.p99 * 1e3);
          if (x.scenario != "offline") s += x.meets_budget ? ": meets" : ": fails (" + x.fail_reason + ")";
          log.line(s);
          cfg.trials.push_back(static_cast<int>(trials.size()));
          trials.push_back({ci, std::move(r)});
          return trials.back().r;
        };
        if (scenario == "server") {
          // Where to start: what the instances could do at full batches.
          const double t_batch = service.time_batch(b, 3);
          cfg.estimate = part.instances * double(b) / std::max(t_batch, 1e-6);
          SearchOptions so;
          so.start_rate = 0.6 * cfg.estimate;
          so.min_rate = std::max(cfg.estimate / 64, 10.0 / duration);
          so.max_trials = max_trials;
          const SearchResult sr = find_max_rate(
              [&](double rate) {
                ++trial_no;
                TrialOptions to = o;
                to.on_progress = progress(rate);
                return record(run_server_trial(service, rate, seed, to));
              },
              so);
          if (sr.best >= 0) {
            cfg.best_trial = cfg.trials[static_cast<size_t>(sr.best)];
            cfg.max_rate = sr.max_rate;
          }
        } else {
          ++trial_no;
          TrialOptions to = o;
          to.on_progress = progress(0);
          record(scenario == "single" ? run_single_stream(service, to) : run_offline(service, to));
          cfg.best_trial = cfg.trials.back();
        }
        configs.push_back(std::move(cfg));
      }
    }
    log.clear();

    // The winner.
    int best = -1;  // trial index
    for (const Config& c : configs) {
      if (c.best_trial < 0) continue;
      const TrialResult& r = trials[static_cast<size_t>(c.best_trial)].r;
      if (best < 0) {
        best = c.best_trial;
        continue;
      }
      const TrialResult& b = trials[static_cast<size_t>(best)].r;
      bool better = false;
      if (scenario == "server")
        better = r.offered_rate > b.offered_rate ||
                 (r.offered_rate == b.offered_rate && r.latency.at_percentile < b.latency.at_percentile);
      else if (scenario == "single")
        better = r.latency.at_percentile < b.latency.at_percentile;
      else
        better = r.achieved_rate > b.achieved_rate;
      if (better) best = c.best_trial;
    }

    // The table.
    const CpuReport cpu = cpu_report();
    const PrecisionSummary prec = precision_summary(*model);
    std::printf("spinel bench: %s scenario, %s\n", scenario.c_str(), model->path().c_str());
    std::printf("model: %s, %lld layers, hidden %lld, %s", model->config().architecture.c_str(),
                static_cast<long long>(model->config().num_layers),
                static_cast<long long>(model->config().hidden_size), prec.name.c_str());
    if (prec.sparse) std::printf(" (%d/%d Linear 4x1 block-sparse, %.0f%% on average)", prec.sparse, prec.linears, 100 * prec.mean_sparsity);
    std::printf("\nqueries: seq %s (mean %.1f tokens); %s p%g <= %.2f ms", dist.spec().c_str(), dist.mean(),
                scenario == "offline" ? "batch latency reported," : "budget", pct, budget * 1e3);
    if (scenario == "server") std::printf(", max wait %.2f ms", max_wait * 1e3);
    std::printf("\ntrials: %.2f s each after %.2f s warm-up; %d cores (%s, %s)%s\n\n", duration, warmup, cores,
                cpu.model_name.c_str(), cpu.active_isa.c_str(), pin ? ", pinned" : "");
    const bool batch_lat = scenario == "offline";
    std::printf("  %-7s %5s %10s %11s %10s %9s %9s %9s %9s  %-5s %s\n", "config", "batch", "offered/s",
                scenario == "offline" ? "seqs/s" : "achieved/s", "tokens/s", batch_lat ? "b.mean ms" : "mean ms",
                batch_lat ? "b.p50 ms" : "p50 ms", batch_lat ? "b.p90 ms" : "p90 ms", batch_lat ? "b.p99 ms" : "p99 ms",
                "meets", "note");
    for (size_t i = 0; i < trials.size(); ++i) {
      const TrialResult& r = trials[i].r;
      const Config& c = configs[static_cast<size_t>(trials[i].config)];
      const std::string offered = r.scenario == "server" ? fmt("%.1f", r.offered_rate) : "-";
      const std::string meets = r.scenario == "offline" ? "-" : r.meets_budget ? "yes" : "no";
      std::string note = static_cast<int>(i) == best ? "<- best" : r.fail_reason;
      std::printf("%c %-7s %5zu %10s %11.1f %10.0f %9.2f %9.2f %9.2f %9.2f  %-5s %s\n",
                  static_cast<int>(i) == best ? '*' : ' ', config_name(c).c_str(), c.max_batch, offered.c_str(),
                  r.achieved_rate, r.tokens_per_s, r.latency.mean * 1e3, r.latency.p50 * 1e3, r.latency.p90 * 1e3,
                  r.latency.p99 * 1e3, meets.c_str(), note.c_str());
    }
    if (scenario == "server") {
      std::printf("\nhighest rate with p%g <= %.2f ms, per config:\n", pct, budget * 1e3);
      for (const Config& c : configs) {
        if (c.best_trial < 0) {
          double lowest = 0;
          for (int t : c.trials) {
            const double rate = trials[static_cast<size_t>(t)].r.offered_rate;
            lowest = lowest == 0 ? rate : std::min(lowest, rate);
          }
          std::printf("  %-4s batch %-4zu none of %zu trials met it, down to %.1f queries/s\n", config_name(c).c_str(),
                      c.max_batch, c.trials.size(), lowest);
          continue;
        }
        const TrialResult& r = trials[static_cast<size_t>(c.best_trial)].r;
        std::printf("  %-4s batch %-4zu %8.1f queries/s (p%g %.2f ms; estimate at full batches %.1f/s)\n",
                    config_name(c).c_str(), c.max_batch, c.max_rate, pct, r.latency.at_percentile * 1e3, c.estimate);
      }
    }
    std::printf("\n");
    if (best < 0) {
      std::printf("best: none: no trial met p%g <= %.2f ms\n", pct, budget * 1e3);
    } else {
      const TrialResult& r = trials[static_cast<size_t>(best)].r;
      const Config& c = configs[static_cast<size_t>(trials[static_cast<size_t>(best)].config)];
      if (scenario == "server")
        std::printf("best: %s batch %zu: %.1f queries/s (%.0f tokens/s) with p%g %.2f ms <= %.2f ms\n",
                    config_name(c).c_str(), c.max_batch, r.offered_rate, r.tokens_per_s, pct,
                    r.latency.at_percentile * 1e3, budget * 1e3);
      else if (scenario == "single")
        std::printf("best: %s: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, mean %.2f ms (%.1f queries/s)%s\n",
                    config_name(c).c_str(), r.latency.p50 * 1e3, r.latency.p90 * 1e3, r.latency.p99 * 1e3,
                    r.latency.mean * 1e3, r.achieved_rate,
                    r.meets_budget ? "" : fmt(" (p%g over the %.2f ms budget)", pct, budget * 1e3).c_str());
      else
        std::printf("best: %s batch %zu: %.1f sequences/s, %.0f tokens/s\n", config_name(c).c_str(), c.max_batch,
                    r.achieved_rate, r.tokens_per_s);
    }
    std::fflush(stdout);

    if (!json_path.empty()) {
      JsonWriter j;
      j.begin_object();
      j.field("schema_version", kSchemaVersion);
      j.field("tool", "spinel bench");
      j.field("spinel_version", "0.1.0");
      j.field("started_utc", started);
      j.key("machine").begin_object();
      j.field("cpu_model", cpu.model_name);
      j.field("cores", cores);
      j.field("detected_isa", cpu.detected_isa);
      j.field("active_isa", cpu.active_isa);
      j.field("amx_int8", cpu.amx_int8);
      j.field("dense_int8_on_sparse", cpu.dense_int8_on_sparse);
      j.field("sparse_int8_kernel", cpu.sparse_int8_kernel);
      j.field("f32_row_kernels", cpu.f32_row_kernels);
      j.field("int8_attention", cpu.int8_attention.empty() ? std::string("f32") : cpu.int8_attention);
      j.field("omp_spin_policy", cpu.omp_spin_policy);
      j.field("load_average_1min", load_average());
      j.end_object();
      const ModelConfig& mc = model->config();
      j.key("model").begin_object();
      j.field("path", model->path());
      j.field("file_bytes", static_cast<int64_t>(model->file_size()));
      j.field("architecture", mc.architecture);
      j.field("num_layers", mc.num_layers);
      j.field("hidden_size", mc.hidden_size);
      j.field("num_heads", mc.num_heads);
      j.field("intermediate_size", mc.intermediate_size);
      j.field("max_position", mc.max_position);
      j.field("vocab_size", mc.vocab_size);
      j.field("precision", prec.name);
      j.field("linear_layers", prec.linears);
      j.field("int8_linear_layers", prec.s8);
      j.field("sparse_linear_layers", prec.sparse);
      j.field("mean_block_sparsity", prec.mean_sparsity);
      j.end_object();
      j.key("options").begin_object();
      j.field("scenario", scenario);
      j.field("seq_dist", dist.spec());
      j.field("seq_min", dist.min_length());
      j.field("seq_max", dist.max_length());
      j.field("seq_mean", dist.mean());
      j.field("latency_budget_ms", budget * 1e3);
      j.field("percentile", pct);
      j.field("max_batch", static_cast<int64_t>(max_batch));
      j.field("max_wait_ms", max_wait * 1e3);
      j.field("duration_s", duration);
      j.field("warmup_s", warmup);
      j.key("instances");
      if (tune && !fixed_inst && scenario != "single") j.null(); else j.value(parts.front().instances);
      j.key("threads");
      if (tune && !fixed_thr) j.null(); else j.value(parts.front().threads);
      j.field("tune", tune);
      j.field("pin", pin);
      j.field("oversubscribed", oversubscribed);
      j.field("seed", static_cast<int64_t>(seed));
      j.field("max_trials", max_trials);
      j.field("query_pool", static_cast<int64_t>(kQueryPool));
      j.end_object();
      j.key("configs").begin_array();
      for (const Config& c : configs) {
        j.begin_object();
        j.field("instances", c.part.instances);
        j.field("threads", c.part.threads);
        j.field("max_batch", static_cast<int64_t>(c.max_batch));
        j.field("slice_tokens", c.slice_tokens);
        j.key("trials").begin_array();
        for (int t : c.trials) j.value(t);
        j.end_array();
        j.key("best_trial");
        if (c.best_trial >= 0) j.value(c.best_trial); else j.null();
        j.key("max_rate");
        if (scenario == "server" && c.best_trial >= 0) j.value(c.max_rate); else j.null();
        j.key("estimate_rate");
        if (scenario == "server") j.value(c.estimate); else j.null();
        j.end_object();
      }
      j.end_array();
      j.key("trials").begin_array();
      for (size_t i = 0; i < trials.size(); ++i) {
        const TrialResult& r = trials[i].r;
        const Config& c = configs[static_cast<size_t>(trials[i].config)];
        j.begin_object();
        j.field("index", static_cast<int64_t>(i));
        j.field("config_index", trials[i].config);
        j.key("config");
        write_config_key(j, c);
        j.field("scenario", r.scenario);
        j.key("offered_rate");
        if (r.scenario == "server") j.value(r.offered_rate); else j.null();
        j.key("arrival_rate");
        if (r.scenario == "server") j.value(r.arrival_rate); else j.null();
        j.field("achieved_rate", r.achieved_rate);
        j.field("tokens_per_s", r.tokens_per_s);
        j.field("queries", r.queries);
        j.field("completed", r.completed);
        j.field("unfinished", r.unfinished);
        j.field("latency_kind", r.scenario == "offline" ? "batch" : "query");
        j.key("latency_ms");
        write_latency(j, r.latency);
        j.key("batch").begin_object();
        j.field("count", r.batches);
        j.field("mean", r.batch_mean);
        j.field("max", r.batch_max);
        j.end_object();
        j.key("meets_budget");
        if (r.scenario == "offline") j.null(); else j.value(r.meets_budget);
        j.key("fail_reason");
        if (r.fail_reason.empty()) j.null(); else j.value(r.fail_reason);
        j.field("wall_s", r.wall_seconds);
        j.end_object();
      }
      j.end_array();
      j.key("best");
      if (best < 0) {
        j.null();
      } else {
        const TrialResult& r = trials[static_cast<size_t>(best)].r;
        j.begin_object();
        j.field("trial", best);
        j.key("config");
        write_config_key(j, configs[static_cast<size_t>(trials[static_cast<size_t>(best)].config)]);
        j.field("rate", scenario == "server" ? r.offered_rate : r.achieved_rate);
        j.field("achieved_rate", r.achieved_rate);
        j.field("tokens_per_s", r.tokens_per_s);
        j.key("latency_ms");
        write_latency(j, r.latency);
        j.key("meets_budget");
        if (r.scenario == "offline") j.null(); else j.value(r.meets_budget);
        j.end_object();
      }
      j.end_object();
      std::string text = j.str() + "\n";
      const std::string tmp = json_path + ".tmp";
      {
        std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
        if (!f) fail("cannot write '", json_path, "'");
        f.write(text.data(), static_cast<std::streamsize>(text.size()));
        if (!f.flush()) fail("error writing '", json_path, "'");
      }
      if (std::rename(tmp.c_str(), json_path.c_str()) != 0) fail("cannot write '", json_path, "'");
    }
    return 0;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "spinel bench: %s\n\n%s", e.message.c_str(), kHelp);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nspinel bench: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace spinel::cli
