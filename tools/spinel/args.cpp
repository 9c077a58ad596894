#include "tools/spinel/args.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <stdexcept>

namespace spinel::cli {

Args::Args(int argc, char** argv, std::set<std::string> valued, std::set<std::string> flags,
           std::set<std::string> repeatable) {
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a.size() > 2 && a.compare(0, 2, "--") == 0) {
      std::string name = a.substr(2), value;
      bool inline_value = false;
      if (auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        inline_value = true;
      }
      if (flags.count(name)) {
        if (inline_value) throw UsageError{"option --" + name + " takes no value"};
        flags_seen_.insert(name);
      } else if (valued.count(name) || repeatable.count(name)) {
        if (!inline_value) {
          if (i + 1 >= argc) throw UsageError{"option --" + name + " needs a value"};
          value = argv[++i];
        }
        auto& slot = values_[name];
        if (!slot.empty() && !repeatable.count(name))
          throw UsageError{"option --" + name + " given more than once"};
        slot.push_back(value);
      } else {
        throw UsageError{"unknown option '" + a + "'"};
      }
    } else if (a == "-o" && valued.count("output")) {
      if (i + 1 >= argc) throw UsageError{"option -o needs a value"};
      values_["output"].push_back(argv[++i]);
    } else if (a == "-h") {
      flags_seen_.insert("help");
    } else if (a.size() > 1 && a[0] == '-' && a != "-") {
      throw UsageError{"unknown option '" + a + "'"};
    } else {
      positionals_.push_back(a);
    }
  }
}

bool Args::has(const std::string& name) const {
  return flags_seen_.count(name) || values_.count(name);
}

std::string Args::get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second.back();
}

std::vector<std::string> Args::all(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

int64_t Args::get_int(const std::string& name, int64_t fallback, int64_t lo, int64_t hi) const {
  if (!values_.count(name)) return fallback;
  const std::string s = get(name);
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != s.size() || s.empty())
    throw UsageError{"option --" + name + " expects an integer, got '" + s + "'"};
  if (v < lo || v > hi)
    throw UsageError{"option --" + name + " = " + s + " is outside [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "]"};
  return v;
}

bool stderr_is_tty() { return isatty(STDERR_FILENO) == 1; }

static double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), tty_(stderr_is_tty()), start_(now_seconds()) {}

void Progress::update(int64_t done) {
  const double frac = total_ > 0 ? double(done) / double(total_) : 1.0;
  const double elapsed = now_seconds() - start_;
  const double rate = elapsed > 0 ? done / elapsed : 0;
  if (tty_) {
    const int width = 30, filled = static_cast<int>(frac * width);
    std::fprintf(stderr, "\r%s [%.*s%*s] %lld/%lld %5.1f%% %.1f/s", label_.c_str(), filled,
                 "##############################", width - filled, "", (long long)done,
                 (long long)total_, frac * 100, rate);
    std::fflush(stderr);
  } else {
    const int decile = static_cast<int>(frac * 10);
    if (decile != last_decile_) {
      last_decile_ = decile;
      std::fprintf(stderr, "%s: %lld/%lld (%.0f%%) %.1f/s\n", label_.c_str(), (long long)done,
                   (long long)total_, frac * 100, rate);
    }
  }
}

void Progress::finish() {
  update(total_);
  if (tty_) std::fprintf(stderr, "\n");
}

}  // namespace spinel::cli
