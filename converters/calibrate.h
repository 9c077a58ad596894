// Static INT8 calibration: run the f32 model on sample inputs, record the
// range of every Linear's input, and turn it into one (scale, zero point)
// per layer in place of per-token quantization at run time.
#pragma once

#include <functional>
#include <vector>

#include "runtime/session.h"
#include "runtime/spnl.h"

namespace spinel {

struct ActRange {
  float lo = 0.f, hi = 0.f;  // always includes 0
  bool seen = false;
  // Per input channel (Linear ops): the smallest and largest value seen
  // (not widened to include 0).
  std::vector<float> ch_lo, ch_hi;
};

// Runs the (still f32) model held by `w` on `samples` in batches of
// `batch_size` and returns the input range of every op (index = op index;
// only Linear ops are filled). `progress(done)` is called after each batch.
std::vector<ActRange> calibrate_linear_inputs(const SpnlWriter& w,
                                              const std::vector<Sequence>& samples, int threads,
                                              size_t batch_size,
                                              const std::function<void(size_t)>& progress = {});

// Sample inputs that need no text: `count` sequences of random ordinary
// tokens (the tokenizer's vocabulary without its special, unused and
// bracketed tokens), lengths in [16, 64] (capped by max_position), between the
// special tokens the tokenizer puts around an empty text. Deterministic for a
// seed. What --quant int8 measures activation ranges on when no calibration
// text is given (the per-channel ranges that smoothing needs depend mostly on
// the model, not the text: see converters/quantize.h).
std::vector<Sequence> synthetic_samples(const AnyTokenizer& tok, int64_t max_position, int count,
                                        uint32_t seed);

// Sets act_scale / act_zp of every S8 Linear of w.graph from `ranges`
// (u8 covers [lo, hi]; a Linear with an input scale s covers the range of
// x[k] * s[k] from the per-channel ranges); a Linear without a recorded range
// stays dynamic. Returns how many layers became static.
int apply_static_quantization(SpnlWriter& w, const std::vector<ActRange>& ranges);

}  // namespace spinel
