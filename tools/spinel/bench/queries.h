// The queries a benchmark sends: synthetic token ids of lengths drawn from a
// distribution (--seq, --seq-dist), made from a seed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace spinel::bench {

// Sequence lengths in tokens, counting the special tokens.
struct LengthDist {
  enum class Kind { Fixed, Uniform, File };
  Kind kind = Kind::Fixed;
  int64_t lo = 128, hi = 128;  // Fixed: lo == hi; Uniform: inclusive range; File: min and max
  std::string path;            // File: where they came from
  std::vector<int64_t> lengths;  // File: the lengths, drawn uniformly at random
  std::vector<int> lines;        // File: each length's line number

  int64_t min_length() const { return lo; }
  int64_t max_length() const { return hi; }
  double mean() const;
  // "fixed:128", "uniform:16-128", "file:PATH".
  std::string spec() const;
  // Throws std::invalid_argument naming the length (and the file line) that
  // is outside [shortest, limit] ("... beyond the model's limit of 512 tokens").
  void check(int64_t shortest, int64_t limit) const;
};

// Parses --seq-dist: "fixed" (all of length `seq`), "uniform:A-B" (A <= B,
// inclusive) or "file:PATH" (one length per line; blank lines and lines
// starting with '#' are skipped). Throws std::invalid_argument naming the
// value, or the file and line that is wrong.
LengthDist parse_length_dist(const std::string& spec, int64_t seq);

// What a synthetic query is made of: ids in [0, vocab) but the excluded ones
// (the special tokens), between [CLS] and [SEP] where the model's tokenizer
// has them (-1: none).
struct TokenSpace {
  int64_t vocab = 0;
  int32_t cls = -1, sep = -1;
  std::vector<int32_t> excluded;
  // Tokens a query of any length holds besides the random ones.
  int64_t specials() const { return (cls >= 0) + (sep >= 0); }
};

// `count` queries, each [CLS] + random ids + [SEP], of lengths drawn from
// `dist`; the same for the same seed. Throws std::invalid_argument when the
// vocabulary has no id left to draw from.
std::vector<std::vector<int32_t>> synthetic_queries(const LengthDist& dist, const TokenSpace& space,
                                                    size_t count, uint64_t seed);

}  // namespace spinel::bench
