#include "runtime/profile.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <tuple>
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
  std::map<std::tuple<std::string, std::string, std::string>, size_t> where;
  double total = 0;
  for (size_t i = 0; i < g.ops.size() && i < secs.size(); ++i) {
    const Op& op = g.ops[i];
    std::string shape;
    if (op.kind == OpKind::Linear && op.in0 >= 0 && op.out >= 0 &&
        static_cast<size_t>(std::max(op.in0, op.out)) < g.values.size())
      shape = std::to_string(g.values[static_cast<size_t>(op.in0)].width) + "->" +
              std::to_string(g.values[static_cast<size_t>(op.out)].width);
    std::tuple<std::string, std::string, std::string> key{op_kind_name(op.kind), s.prepared().op(i).kernel(),
                                                          shape};
    auto it = where.find(key);
    if (it == where.end()) {
      it = where.emplace(key, rows.size()).first;
      rows.push_back(ProfileClass{std::get<0>(key), std::get<1>(key), shape, 0, 0, 0});
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
  std::snprintf(line, sizeof line, "%-11s %-34s %-11s %5s %12s %7s\n", "op", "kernel", "shape", "ops",
                "ms per run", "%");
  out += line;
  double total = 0;
  int64_t ops = 0;
  for (const ProfileClass& r : rows) {
    std::snprintf(line, sizeof line, "%-11s %-34s %-11s %5lld %12.3f %6.1f%%\n", r.kind.c_str(),
                  r.kernel.c_str(), r.shape.empty() ? "-" : r.shape.c_str(), static_cast<long long>(r.ops),
                  r.ms_per_run, r.percent);
    out += line;
    total += r.ms_per_run;
    ops += r.ops;
  }
  std::snprintf(line, sizeof line, "%-11s %-34s %-11s %5lld %12.3f  (over %lld runs)\n", "total", "", "",
                static_cast<long long>(ops), total, static_cast<long long>(runs));
  out += line;
  return out;
}

}  // namespace spinel
