// Overlapping windows over a sequence too long for the model (`spinel run
// --chunk`): the token ids of the whole sequence, without specials, are cut
// into windows of at most `window` tokens counting the [CLS] and [SEP] put
// back around each; neighbouring windows share `overlap` tokens. A result per
// window (pooled vector, logits) is then averaged, weighted by window length.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/session.h"

namespace spinel {

// [begin, end) of the content ids in one window.
struct ChunkSpan {
  size_t begin = 0, end = 0;
};

// The spans over n content ids: the first starts at 0, each next one
// starts (window - 2 - overlap) later, the last ends at n (and may be
// shorter). n = 0 gives one empty span ([CLS] [SEP]). Throws spinel::Error
// unless 3 <= window and 0 <= overlap < window - 2.
std::vector<ChunkSpan> chunk_spans(size_t n, int64_t window, int64_t overlap);

// The windows as sequences: [CLS] ids[span] [SEP] each.
std::vector<Sequence> chunk_sequence(const std::vector<int32_t>& content, int32_t cls_id,
                                     int32_t sep_id, int64_t window, int64_t overlap);

// sum_i weights[i] * rows[i] / sum_i weights[i], accumulated in double.
// Throws spinel::Error if the sizes disagree or the weights sum to <= 0.
std::vector<float> weighted_mean(const std::vector<std::vector<float>>& rows,
                                 const std::vector<double>& weights);

// Softmax of logits, computed in double with the maximum subtracted.
std::vector<float> softmax(const std::vector<float>& logits);

}  // namespace spinel
