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
};

// Runs the (still f32) model held by `w` on `samples` in batches of
// `batch_size` and returns the input range of every op (index = op index;
// only Linear ops are filled). `progress(done)` is called after each batch.
std::vector<ActRange> calibrate_linear_inputs(const SpnlWriter& w,
                                              const std::vector<Sequence>& samples, int threads,
                                              size_t batch_size,
                                              const std::function<void(size_t)>& progress = {});

// Sets act_scale / act_zp of every S8 Linear of w.graph from `ranges`
// (u8 covers [lo, hi]); a Linear without a recorded range stays dynamic.
// Returns how many layers became static.
int apply_static_quantization(SpnlWriter& w, const std::vector<ActRange>& ranges);

}  // namespace spinel
