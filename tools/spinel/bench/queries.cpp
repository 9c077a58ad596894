#include "tools/spinel/bench/queries.h"

#include <algorithm>
#include <fstream>
#include <stdexcept>

#include "tools/spinel/bench/random.h"

namespace spinel::bench {
namespace {

// A whole number >= 0, or -1.
int64_t parse_count(const std::string& s) {
  if (s.empty() || s.size() > 9) return -1;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r");
  if (a == std::string::npos) return "";
  const size_t b = s.find_last_not_of(" \t\r");
  return s.substr(a, b - a + 1);
}

}  // namespace

double LengthDist::mean() const {
  if (kind == Kind::File && !lengths.empty()) {
    double s = 0;
    for (int64_t n : lengths) s += static_cast<double>(n);
    return s / static_cast<double>(lengths.size());
  }
  return 0.5 * static_cast<double>(lo + hi);
}

std::string LengthDist::spec() const {
  switch (kind) {
    case Kind::Fixed: return "fixed:" + std::to_string(lo);
    case Kind::Uniform: return "uniform:" + std::to_string(lo) + "-" + std::to_string(hi);
    case Kind::File: return "file:" + path;
  }
  return "";
}

void LengthDist::check(int64_t shortest, int64_t limit) const {
  auto bad = [&](int64_t n, const std::string& where) {
    if (n > limit)
      throw std::invalid_argument(where + std::to_string(n) +
                                  " tokens is beyond the model's limit of " + std::to_string(limit) +
                                  " tokens (its max_position)");
    if (n < shortest)
      throw std::invalid_argument(where + std::to_string(n) + " tokens is too short: a query holds at least " +
                                  std::to_string(shortest) + " (with its special tokens)");
  };
  switch (kind) {
    case Kind::Fixed: bad(lo, "--seq "); break;
    case Kind::Uniform:
      bad(lo, "--seq-dist " + spec() + ": ");
      bad(hi, "--seq-dist " + spec() + ": ");
      break;
    case Kind::File:
      for (size_t i = 0; i < lengths.size(); ++i)
        bad(lengths[i], "--seq-dist file: " + path + " line " + std::to_string(lines[i]) + ": ");
      break;
  }
}

LengthDist parse_length_dist(const std::string& spec, int64_t seq) {
  LengthDist d;
  if (spec == "fixed") {
    d.kind = LengthDist::Kind::Fixed;
    d.lo = d.hi = seq;
    return d;
  }
  if (spec.rfind("uniform:", 0) == 0) {
    const std::string r = spec.substr(8);
    const size_t dash = r.find('-');
    const int64_t a = dash == std::string::npos ? -1 : parse_count(r.substr(0, dash));
    const int64_t b = dash == std::string::npos ? -1 : parse_count(r.substr(dash + 1));
    if (a < 1 || b < 1)
      throw std::invalid_argument("--seq-dist '" + spec + "': expected uniform:A-B with whole numbers of tokens, like uniform:16-128");
    if (a > b)
      throw std::invalid_argument("--seq-dist '" + spec + "': the range is empty (" + std::to_string(a) + " > " + std::to_string(b) + ")");
    d.kind = LengthDist::Kind::Uniform;
    d.lo = a;
    d.hi = b;
    return d;
  }
  if (spec.rfind("file:", 0) == 0) {
    d.kind = LengthDist::Kind::File;
    d.path = spec.substr(5);
    if (d.path.empty()) throw std::invalid_argument("--seq-dist file: needs a path, like file:lengths.txt");
    std::ifstream f(d.path);
    if (!f) throw std::invalid_argument("--seq-dist: cannot open lengths file '" + d.path + "'");
    std::string line;
    int no = 0;
    while (std::getline(f, line)) {
      ++no;
      if (no > 10'000'000) throw std::invalid_argument("--seq-dist: " + d.path + " has more than 10 million lines");
      const std::string t = trim(line);
      if (t.empty() || t[0] == '#') continue;
      const int64_t n = parse_count(t);
      if (n < 1)
        throw std::invalid_argument("--seq-dist file: " + d.path + " line " + std::to_string(no) + ": '" +
                                    t.substr(0, 40) + "' is not a length (a whole number of tokens >= 1)");
      d.lengths.push_back(n);
      d.lines.push_back(no);
    }
    if (f.bad()) throw std::invalid_argument("--seq-dist: error reading '" + d.path + "'");
    if (d.lengths.empty())
      throw std::invalid_argument("--seq-dist file: " + d.path + " holds no lengths (one whole number per line)");
    d.lo = *std::min_element(d.lengths.begin(), d.lengths.end());
    d.hi = *std::max_element(d.lengths.begin(), d.lengths.end());
    return d;
  }
  throw std::invalid_argument("--seq-dist must be fixed, uniform:A-B or file:PATH, not '" + spec + "'");
}

std::vector<std::vector<int32_t>> synthetic_queries(const LengthDist& dist, const TokenSpace& space,
                                                    size_t count, uint64_t seed) {
  // The ids a query may draw: the vocabulary less the special tokens.
  std::vector<int32_t> excluded = space.excluded;
  for (int32_t s : {space.cls, space.sep})
    if (s >= 0) excluded.push_back(s);
  std::sort(excluded.begin(), excluded.end());
  excluded.erase(std::unique(excluded.begin(), excluded.end()), excluded.end());
  std::vector<int32_t> drawable;
  for (int64_t id = 0; id < space.vocab; ++id)
    if (!std::binary_search(excluded.begin(), excluded.end(), static_cast<int32_t>(id)))
      drawable.push_back(static_cast<int32_t>(id));
  if (drawable.empty()) throw std::invalid_argument("the vocabulary has no token besides the special ones");

  Rng len_rng(sub_seed(seed, 1)), id_rng(sub_seed(seed, 2));
  std::vector<std::vector<int32_t>> out(count);
  for (auto& q : out) {
    int64_t n = dist.lo;
    if (dist.kind == LengthDist::Kind::Uniform)
      n = dist.lo + static_cast<int64_t>(len_rng.below(static_cast<uint64_t>(dist.hi - dist.lo + 1)));
    else if (dist.kind == LengthDist::Kind::File)
      n = dist.lengths[len_rng.below(dist.lengths.size())];
    const int64_t inner = std::max<int64_t>(0, n - space.specials());
    q.reserve(static_cast<size_t>(n));
    if (space.cls >= 0) q.push_back(space.cls);
    for (int64_t i = 0; i < inner; ++i) q.push_back(drawable[id_rng.below(drawable.size())]);
    if (space.sep >= 0) q.push_back(space.sep);
  }
  return out;
}

}  // namespace spinel::bench
