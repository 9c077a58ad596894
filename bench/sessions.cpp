// What one more session costs: memory and creation time of 1..N sessions on
// one loaded model, created one after another in one process.
//
//   build/sessions --model FILE.spnl [--sessions 8] [--batch 8] [--seq 128]
//                  [--threads 1] [--repeat 5] [--json]
//
// After Model::load, session k (k = 1..--sessions, --threads each) is created
// and timed, then runs one batch of --batch sequences of --seq synthetic
// tokens (a session's activation arena grows at its first run); the earlier
// sessions stay alive. Per session: creation time, VmRSS (and RssAnon) of
// /proc/self/status after creation and after its first run, VmHWM, and
// Session::arena_bytes() after the run. "added" is the RSS after session k's
// run minus the RSS after session k-1's (after the load for k = 1).
//
// --repeat N (default 5) runs the whole measurement in N fresh processes (this
// program re-executes itself with --child) and reports, per session, the
// median creation time with its min and max and the median of each memory
// figure: on a 2-core shared machine one process says little. --repeat 1
// measures in this process.
//
// Only the Session(model, threads) constructor, Session::run and
// Session::arena_bytes are used, so the same file compiles against older
// trees (before sessions shared one prepared model) for an A/B.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "runtime/session.h"

namespace {

struct Status {
  long rss = -1, anon = -1, hwm = -1;  // KiB
};

Status status_now() {
  Status s;
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) s.rss = std::atol(line.c_str() + 6);
    else if (line.rfind("RssAnon:", 0) == 0) s.anon = std::atol(line.c_str() + 8);
    else if (line.rfind("VmHWM:", 0) == 0) s.hwm = std::atol(line.c_str() + 6);
  }
  return s;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "sessions: %s\nusage: sessions --model FILE.spnl [--sessions N] [--batch B] [--seq S] "
               "[--threads T] [--repeat R] [--json]\n",
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

// One process's figures.
struct Load {
  double ms = 0;
  Status st;
};
struct One {
  double create_ms = 0, run_ms = 0;
  Status created, ran;
  long long arena = 0;
};
struct Measurement {
  Load load;
  std::vector<One> sessions;
};

Measurement measure(const std::string& path, long n_sessions, long batch, long seq, long threads) {
  Measurement m;
  auto t0 = std::chrono::steady_clock::now();
  const auto model = spinel::Model::load(path);
  m.load.ms = ms_since(t0);
  m.load.st = status_now();
  const int64_t vocab = model->config().vocab_size;
  const int64_t len = std::min<int64_t>(seq, model->config().max_position);
  std::vector<spinel::Sequence> b(static_cast<size_t>(batch));
  size_t k = 0;
  for (auto& s : b) {
    s.ids.resize(static_cast<size_t>(len));
    for (auto& t : s.ids) t = static_cast<int32_t>(vocab > 2000 ? 1000 + (k++ * 7919) % (vocab - 1000)
                                                                : (k++ * 7919) % vocab);
  }
  std::vector<std::unique_ptr<spinel::Session>> live;
  for (long i = 0; i < n_sessions; ++i) {
    One o;
    t0 = std::chrono::steady_clock::now();
    live.push_back(std::make_unique<spinel::Session>(model, static_cast<int>(threads)));
    o.create_ms = ms_since(t0);
    o.created = status_now();
    t0 = std::chrono::steady_clock::now();
    live.back()->run(b);
    o.run_ms = ms_since(t0);
    o.ran = status_now();
    o.arena = static_cast<long long>(live.back()->arena_bytes());
    m.sessions.push_back(o);
  }
  return m;
}

void print_child(const Measurement& m) {
  std::printf("load %.4f %ld %ld %ld\n", m.load.ms, m.load.st.rss, m.load.st.anon, m.load.st.hwm);
  for (const auto& o : m.sessions)
    std::printf("session %.4f %.4f %ld %ld %ld %ld %ld %lld\n", o.create_ms, o.run_ms, o.created.rss,
                o.created.anon, o.ran.rss, o.ran.anon, o.ran.hwm, o.arena);
}

bool parse_child(const std::string& out, Measurement& m) {
  size_t pos = 0;
  bool have_load = false;
  while (pos < out.size()) {
    size_t nl = out.find('\n', pos);
    if (nl == std::string::npos) nl = out.size();
    const std::string line = out.substr(pos, nl - pos);
    pos = nl + 1;
    if (line.rfind("load ", 0) == 0) {
      have_load = std::sscanf(line.c_str(), "load %lf %ld %ld %ld", &m.load.ms, &m.load.st.rss,
                              &m.load.st.anon, &m.load.st.hwm) == 4;
    } else if (line.rfind("session ", 0) == 0) {
      One o;
      if (std::sscanf(line.c_str(), "session %lf %lf %ld %ld %ld %ld %ld %lld", &o.create_ms, &o.run_ms,
                      &o.created.rss, &o.created.anon, &o.ran.rss, &o.ran.anon, &o.ran.hwm,
                      &o.arena) != 8)
        return false;
      m.sessions.push_back(o);
    }
  }
  return have_load;
}

// Runs this program again with --child; its standard output is the figures.
bool run_child(const std::vector<std::string>& args, Measurement& m) {
  int fd[2];
  if (pipe(fd) != 0) return false;
  const pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    dup2(fd[1], 1);
    close(fd[0]);
    close(fd[1]);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  close(fd[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 && parse_child(out, m);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct Agg {
  double med = 0, lo = 0, hi = 0;
};
template <class F>
Agg agg(const std::vector<Measurement>& ms, F get) {
  std::vector<double> v;
  for (const auto& m : ms) v.push_back(get(m));
  return {median(v), *std::min_element(v.begin(), v.end()), *std::max_element(v.begin(), v.end())};
}

double mib(double kib) { return kib / 1024.0; }

}  // namespace

int main(int argc, char** argv) {
  std::string model_path;
  long n_sessions = 8, batch = 8, seq = 128, threads = 1, repeat = 5;
  bool json = false, child = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json") {
      json = true;
      continue;
    }
    if (a == "--child") {
      child = true;
      continue;
    }
    const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
    if (!v) usage(("missing value for " + a).c_str());
    if (a == "--model") model_path = v;
    else if (a == "--sessions") n_sessions = parse_long("--sessions", v, 1, 256);
    else if (a == "--batch") batch = parse_long("--batch", v, 1, 4096);
    else if (a == "--seq") seq = parse_long("--seq", v, 1, 1L << 16);
    else if (a == "--threads") threads = parse_long("--threads", v, 1, spinel::kMaxThreads);
    else if (a == "--repeat") repeat = parse_long("--repeat", v, 1, 1000);
    else usage(("unknown option " + a).c_str());
    ++i;
  }
  if (model_path.empty()) usage("--model is required");

  std::vector<Measurement> ms;
  try {
    if (child) {
      print_child(measure(model_path, n_sessions, batch, seq, threads));
      return 0;
    }
    if (repeat == 1) {
      ms.push_back(measure(model_path, n_sessions, batch, seq, threads));
    } else {
      const std::vector<std::string> args{argv[0],
                                          "--child",
                                          "--model",
                                          model_path,
                                          "--sessions",
                                          std::to_string(n_sessions),
                                          "--batch",
                                          std::to_string(batch),
                                          "--seq",
                                          std::to_string(seq),
                                          "--threads",
                                          std::to_string(threads)};
      for (long r = 0; r < repeat; ++r) {
        Measurement m;
        if (!run_child(args, m) || m.sessions.size() != static_cast<size_t>(n_sessions)) {
          std::fprintf(stderr, "sessions: repetition %ld failed\n", r + 1);
          return 1;
        }
        ms.push_back(m);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sessions: %s\n", e.what());
    return 1;
  }

  const auto load_ms = agg(ms, [](const Measurement& m) { return m.load.ms; });
  const auto load_rss = agg(ms, [](const Measurement& m) { return double(m.load.st.rss); });
  const auto load_anon = agg(ms, [](const Measurement& m) { return double(m.load.st.anon); });
  if (json) {
    std::printf("{\"model\":\"%s\",\"repeat\":%zu,\"batch\":%ld,\"seq\":%ld,\"threads\":%ld,"
                "\"load\":{\"ms\":%.3f,\"rss_kib\":%.0f,\"anon_kib\":%.0f},\"sessions\":[",
                model_path.c_str(), ms.size(), batch, seq, threads, load_ms.med, load_rss.med,
                load_anon.med);
  } else {
    std::printf("%s: %zu process(es), %ld session(s) of %ld thread(s), first run %ld x %ld tokens\n",
                model_path.c_str(), ms.size(), n_sessions, threads, batch, seq);
    std::printf("after load: %.1f ms, RSS %.1f MiB (anon %.1f MiB)\n", load_ms.med, mib(load_rss.med),
                mib(load_anon.med));
    std::printf("%-3s %-24s %-10s %-10s %-10s %-9s %-9s %-10s %-9s\n", "n", "create ms med (min-max)",
                "RSS new", "RSS run", "anon run", "added", "arena", "VmHWM", "run ms");
  }
  for (long i = 0; i < n_sessions; ++i) {
    const size_t k = static_cast<size_t>(i);
    const auto create = agg(ms, [k](const Measurement& m) { return m.sessions[k].create_ms; });
    const auto run = agg(ms, [k](const Measurement& m) { return m.sessions[k].run_ms; });
    const auto rss_c = agg(ms, [k](const Measurement& m) { return double(m.sessions[k].created.rss); });
    const auto rss_r = agg(ms, [k](const Measurement& m) { return double(m.sessions[k].ran.rss); });
    const auto anon_c = agg(ms, [k](const Measurement& m) { return double(m.sessions[k].created.anon); });
    const auto anon_r = agg(ms, [k](const Measurement& m) { return double(m.sessions[k].ran.anon); });
    const auto hwm = agg(ms, [k](const Measurement& m) { return double(m.sessions[k].ran.hwm); });
    const auto arena = agg(ms, [k](const Measurement& m) { return double(m.sessions[k].arena); });
    const auto added = agg(ms, [k](const Measurement& m) {
      const long prev = k == 0 ? m.load.st.rss : m.sessions[k - 1].ran.rss;
      return double(m.sessions[k].ran.rss - prev);
    });
    if (json) {
      std::printf("%s{\"n\":%ld,\"create_ms\":{\"median\":%.3f,\"min\":%.3f,\"max\":%.3f},"
                  "\"first_run_ms\":{\"median\":%.3f,\"min\":%.3f,\"max\":%.3f},"
                  "\"rss_created_kib\":%.0f,\"anon_created_kib\":%.0f,\"rss_run_kib\":%.0f,"
                  "\"anon_run_kib\":%.0f,\"hwm_kib\":%.0f,\"added_kib\":%.0f,\"arena_bytes\":%.0f}",
                  i ? "," : "", i + 1, create.med, create.lo, create.hi, run.med, run.lo, run.hi, rss_c.med,
                  anon_c.med, rss_r.med, anon_r.med, hwm.med, added.med, arena.med);
    } else {
      char c[64];
      std::snprintf(c, sizeof c, "%.2f (%.2f-%.2f)", create.med, create.lo, create.hi);
      std::printf("%-3ld %-24s %-10.1f %-10.1f %-10.1f %-9.1f %-9.1f %-10.1f %-9.1f\n", i + 1, c, mib(rss_c.med),
                  mib(rss_r.med), mib(anon_r.med), mib(added.med), arena.med / 1048576.0, mib(hwm.med),
                  run.med);
    }
  }
  if (json) std::printf("]}\n");
  else
    std::printf("(MiB; medians over processes; added = RSS after this session's run minus after the "
                "previous one's)\n");
  return 0;
}
