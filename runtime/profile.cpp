#include "runtime/profile.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <utility>

#include "runtime/prepared.h"
#include "runtime/session.h"

namespace spinel {

std::vector<ProfileClass> profile_by_class(const Session& s) {
  std::vector<ProfileClass> rows;
  const std::vector<double>& secs = s.op_seconds();
  const int64_t runs = s.profiled_runs();
  if (runs <= 0 || secs.empty()) return rows;
  const Graph& g = s.model().graph();
  std::map<std::pair<std::string, std::string>, size_t> where;
  double total = 0;
  for (size_t i = 0; i < g.ops.size() && i < secs.size(); ++i) {
    std::pair<std::string, std::string> key{op_kind_name(g.ops[i].kind), s.prepared().op(i).kernel()};
    auto it = where.find(key);
    if (it == where.end()) {
      it = where.emplace(key, rows.size()).first;
      rows.push_back(ProfileClass{key.first, key.second, 0, 0, 0});
    }
    ProfileClass& r = rows[it->second];
    ++r.ops;
    r.ms_per_run += secs[i] * 1e3 / static_cast<double>(runs);
    total += secs[i];
  }
  const double total_ms = total * 1e3 / static_cast<double>(runs);
  for (ProfileClass& r : rows) r.percent = total_ms > 0 ? 100.0 * r.ms_per_run / total_ms : 0;
  std::sort(rows.begin(), rows.end(),
            [](const ProfileClass& a, const ProfileClass& b) { return a.ms_per_run > b.ms_per_run; });
  return rows;
}

std::string profile_table(const std::vector<ProfileClass>& rows, int64_t runs) {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-11s %-34s %5s %12s %7s\n", "op", "kernel", "ops", "ms per run",
                "%");
  out += line;
  double total = 0;
  int64_t ops = 0;
  for (const ProfileClass& r : rows) {
    std::snprintf(line, sizeof line, "%-11s %-34s %5lld %12.3f %6.1f%%\n", r.kind.c_str(), r.kernel.c_str(),
                  static_cast<long long>(r.ops), r.ms_per_run, r.percent);
    out += line;
    total += r.ms_per_run;
    ops += r.ops;
  }
  std::snprintf(line, sizeof line, "%-11s %-34s %5lld %12.3f  (over %lld runs)\n", "total", "",
                static_cast<long long>(ops), total, static_cast<long long>(runs));
  out += line;
  return out;
}

}  // namespace spinel
