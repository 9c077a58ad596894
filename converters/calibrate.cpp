#include "converters/calibrate.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
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
      if (rows <= 0 || cols <= 0) return;
      const auto [lo, hi] = std::minmax_element(x, x + rows * cols);
      r.lo = std::min(r.lo, *lo);
      r.hi = std::max(r.hi, *hi);
      if (!r.seen) {
        r.ch_lo.assign(static_cast<size_t>(cols), std::numeric_limits<float>::infinity());
        r.ch_hi.assign(static_cast<size_t>(cols), -std::numeric_limits<float>::infinity());
      }
      if (r.ch_lo.size() != static_cast<size_t>(cols)) fail("calibration: op ", op, " changed its input width");
      for (int64_t m = 0; m < rows; ++m)
        for (int64_t k = 0; k < cols; ++k) {
          const float v = x[m * cols + k];
          r.ch_lo[static_cast<size_t>(k)] = std::min(r.ch_lo[static_cast<size_t>(k)], v);
          r.ch_hi[static_cast<size_t>(k)] = std::max(r.ch_hi[static_cast<size_t>(k)], v);
        }
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

std::vector<Sequence> synthetic_samples(const AnyTokenizer& tok, int64_t max_position, int count,
                                        uint32_t seed) {
  // Ordinary tokens: not the tokenizer's specials, not bracketed placeholders
  // such as BERT's [unused7] or <mask>, not byte-fallback pieces like <0x0A>.
  std::vector<int32_t> ordinary;
  const int32_t specials[] = {tok.cls_id(), tok.sep_id(), tok.unk_id(), tok.pad_id()};
  for (int32_t id = 0; id < static_cast<int32_t>(tok.vocab_size()); ++id) {
    if (std::find(std::begin(specials), std::end(specials), id) != std::end(specials)) continue;
    const std::string& t = tok.token(id);
    if (t.empty()) continue;
    if (t.size() >= 2 && ((t.front() == '[' && t.back() == ']') || (t.front() == '<' && t.back() == '>')))
      continue;
    ordinary.push_back(id);
  }
  if (ordinary.empty()) fail("the tokenizer has no ordinary tokens to make sample inputs from");
  // The template around an empty text: [CLS] [SEP], <s> </s>, or nothing.
  const Encoding empty = tok.encode("", std::nullopt, static_cast<size_t>(max_position), true);
  const size_t before = !empty.ids.empty() && empty.ids.front() == tok.cls_id() ? 1 : 0;
  const int64_t room = max_position - static_cast<int64_t>(empty.ids.size());
  if (room < 1) fail("the model's position limit ", max_position, " leaves no room for sample tokens");
  std::mt19937 rng(seed);
  std::vector<Sequence> out;
  for (int i = 0; i < count; ++i) {
    const int64_t len = std::min<int64_t>(room, std::uniform_int_distribution<int64_t>(16, 64)(rng));
    Sequence s;
    s.ids.assign(empty.ids.begin(), empty.ids.begin() + static_cast<long>(before));
    for (int64_t j = 0; j < len; ++j)
      s.ids.push_back(ordinary[std::uniform_int_distribution<size_t>(0, ordinary.size() - 1)(rng)]);
    s.ids.insert(s.ids.end(), empty.ids.begin() + static_cast<long>(before), empty.ids.end());
    if (!empty.type_ids.empty()) s.type_ids.assign(s.ids.size(), empty.type_ids.front());
    out.push_back(std::move(s));
  }
  return out;
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
    float lo = r.lo, hi = r.hi;
    if (const int32_t sid = op.w[slot::kInScale]; sid >= 0) {
      // The layer quantizes x[k] * s[k] (s > 0): the range of those products.
      const auto* s = static_cast<const float*>(w.tensor_data(sid));
      const size_t K = r.ch_lo.size();
      if (w.tensors().at(static_cast<size_t>(sid)).numel() != static_cast<int64_t>(K))
        fail("Linear '", op.name, "': input scale and calibration ranges differ in width");
      lo = hi = 0.f;
      for (size_t k = 0; k < K; ++k) {
        lo = std::min(lo, r.ch_lo[k] * s[k]);
        hi = std::max(hi, r.ch_hi[k] * s[k]);
      }
      if (!(hi > lo)) continue;
    }
    const float scale = (hi - lo) / 255.f;
    op.act_scale = scale;
    op.act_zp = std::clamp(static_cast<int32_t>(std::nearbyint(-lo / scale)), 0, 255);
    ++n;
  }
  return n;
}

}  // namespace spinel
