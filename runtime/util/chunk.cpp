#include "runtime/util/chunk.h"

#include <algorithm>
#include <cmath>

#include "runtime/error.h"

namespace spinel {

std::vector<ChunkSpan> chunk_spans(size_t n, int64_t window, int64_t overlap) {
  if (window < 3) fail("chunk window of ", window, " tokens: it needs at least 3 ([CLS], one token, [SEP])");
  const int64_t content = window - 2;
  if (overlap < 0 || overlap >= content)
    fail("chunk overlap of ", overlap, " tokens: it must be at least 0 and less than the ", content,
         " tokens a window of ", window, " holds besides [CLS] and [SEP]");
  const size_t c = static_cast<size_t>(content), step = static_cast<size_t>(content - overlap);
  std::vector<ChunkSpan> spans;
  for (size_t b = 0;; b += step) {
    const size_t e = std::min(n, b + c);
    spans.push_back({b, e});
    if (e == n) break;
  }
  return spans;
}

std::vector<Sequence> chunk_sequence(const std::vector<int32_t>& content, int32_t cls_id,
                                     int32_t sep_id, int64_t window, int64_t overlap) {
  std::vector<Sequence> out;
  for (const ChunkSpan& s : chunk_spans(content.size(), window, overlap)) {
    Sequence q;
    q.ids.reserve(s.end - s.begin + 2);
    q.ids.push_back(cls_id);
    q.ids.insert(q.ids.end(), content.begin() + static_cast<std::ptrdiff_t>(s.begin),
                 content.begin() + static_cast<std::ptrdiff_t>(s.end));
    q.ids.push_back(sep_id);
    out.push_back(std::move(q));
  }
  return out;
}

std::vector<float> weighted_mean(const std::vector<std::vector<float>>& rows,
                                 const std::vector<double>& weights) {
  if (rows.empty() || rows.size() != weights.size())
    fail("weighted_mean: ", rows.size(), " rows and ", weights.size(), " weights");
  const size_t w = rows[0].size();
  std::vector<double> acc(w, 0.0);
  double total = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i].size() != w) fail("weighted_mean: row ", i, " has ", rows[i].size(), " values, not ", w);
    total += weights[i];
    for (size_t j = 0; j < w; ++j) acc[j] += weights[i] * rows[i][j];
  }
  if (!(total > 0)) fail("weighted_mean: the weights sum to ", total);
  std::vector<float> out(w);
  for (size_t j = 0; j < w; ++j) out[j] = static_cast<float>(acc[j] / total);
  return out;
}

std::vector<float> softmax(const std::vector<float>& logits) {
  std::vector<float> p(logits.size());
  if (logits.empty()) return p;
  double m = -INFINITY;
  for (float x : logits) m = std::max(m, static_cast<double>(x));
  double sum = 0;
  std::vector<double> e(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) sum += e[i] = std::exp(double(logits[i]) - m);
  for (size_t i = 0; i < logits.size(); ++i) p[i] = static_cast<float>(e[i] / sum);
  return p;
}

}  // namespace spinel
