// A small argument reader shared by the sub-commands: options of the form
// --name VALUE or --name=VALUE, flags, and positionals. Unknown options are
// an error naming the option.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace spinel::cli {

// Largest text input file (--input, --calibrate) read into memory.
constexpr uint64_t kMaxInputFileBytes = uint64_t{1} << 30;

class Args {
 public:
  // `valued`: options that take a value; `flags`: options that do not;
  // `repeatable`: valued options that may be given several times.
  Args(int argc, char** argv, std::set<std::string> valued, std::set<std::string> flags,
       std::set<std::string> repeatable = {});

  bool has(const std::string& name) const;
  std::string get(const std::string& name, const std::string& fallback = "") const;
  std::vector<std::string> all(const std::string& name) const;
  // Integer option in [lo, hi]; error names the option and the range.
  int64_t get_int(const std::string& name, int64_t fallback, int64_t lo, int64_t hi) const;
  const std::vector<std::string>& positionals() const { return positionals_; }

 private:
  std::map<std::string, std::vector<std::string>> values_;
  std::set<std::string> flags_seen_;
  std::vector<std::string> positionals_;
};

// Thrown for bad command lines: the caller prints it with the usage and exits 2.
struct UsageError {
  std::string message;
};

bool stderr_is_tty();

// A progress bar on stderr: redrawn in place on a terminal, a line every 10%
// otherwise (so logs stay readable).
class Progress {
 public:
  Progress(std::string label, int64_t total);
  void update(int64_t done);
  void finish();

 private:
  std::string label_;
  int64_t total_;
  int last_decile_ = -1;
  bool tty_;
  double start_;
};

}  // namespace spinel::cli
