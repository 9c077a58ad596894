#include "converters/calibrate.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "runtime/error.h"

namespace spinel {

std::vector<ActRange> calibrate_linear_inputs(const SpnlWriter& w,
                                              const std::vector<Sequence>& samples, int threads,
                                              size_t batch_size,
                                              const std::function<void(size_t)>& progress) {
  if (samples.empty()) fail("calibration needs at least one sample input");
  for (const Op& op : w.graph.ops)
    if (op.kind == OpKind::Linear && op.precision != Precision::F32)
      fail("calibration runs on the f32 model: Linear '", op.name, "' is already quantized");

  // Sessions run models loaded from .spnl files: write the f32 model to a
  // private temporary file, run it, and remove the file.
  const char* tmpdir = std::getenv("TMPDIR");
  std::string path = std::string(tmpdir && *tmpdir ? tmpdir : "/tmp") + "/spinel-calib-XXXXXX";
  const int fd = mkstemp(path.data());
  if (fd < 0) fail("cannot create a temporary file for calibration in ", path);
  ::close(fd);
  std::vector<ActRange> ranges(w.graph.ops.size());
  try {
    w.write(path);
    auto model = Model::load(path);
    Session session(model, threads);
    session.set_linear_observer([&](size_t op, const float* x, int64_t rows, int64_t cols) {
      ActRange& r = ranges[op];
      const auto [lo, hi] = std::minmax_element(x, x + rows * cols);
      r.lo = std::min(r.lo, *lo);
      r.hi = std::max(r.hi, *hi);
      r.seen = true;
    });
    for (size_t b = 0; b < samples.size(); b += batch_size) {
      const size_t e = std::min(samples.size(), b + batch_size);
      session.run(std::vector<Sequence>(samples.begin() + static_cast<long>(b),
                                        samples.begin() + static_cast<long>(e)));
      if (progress) progress(e);
    }
  } catch (...) {
    std::remove(path.c_str());
    throw;
  }
  std::remove(path.c_str());
  return ranges;
}

int apply_static_quantization(SpnlWriter& w, const std::vector<ActRange>& ranges) {
  if (ranges.size() != w.graph.ops.size())
    fail("calibration ranges cover ", ranges.size(), " ops, the graph has ", w.graph.ops.size());
  int n = 0;
  for (size_t i = 0; i < w.graph.ops.size(); ++i) {
    Op& op = w.graph.ops[i];
    const ActRange& r = ranges[i];
    if (op.kind != OpKind::Linear || op.precision == Precision::F32 || !r.seen || !(r.hi > r.lo))
      continue;
    const float scale = (r.hi - r.lo) / 255.f;
    op.act_scale = scale;
    op.act_zp = std::clamp(static_cast<int32_t>(std::nearbyint(-r.lo / scale)), 0, 255);
    ++n;
  }
  return n;
}

}  // namespace spinel
