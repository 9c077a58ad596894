// Convert-time INT8 quantization of a model's Linear layers: weights to s8,
// symmetric per output channel, and per layer the choice between the 4x1
// block-sparse kernel and oneDNN's dense u8s8 matmul.
#pragma once

#include <string>
#include <vector>

#include "converters/calibrate.h"
#include "kernels/cpu/select.h"
#include "runtime/spnl.h"

namespace spinel {

// Block sparsity at which the sparse kernel overtakes oneDNN dense u8s8: the
// crossover table of the kernel choice (kernels/cpu/select.h).
constexpr double kDefaultSparseThreshold = kernels::kCrossoverVnni.min_sparsity;

// Smoothing (the idea of SmoothQuant, Xiao et al. 2023): a few input channels
// of a Linear (LayerNorm outputs, GELU outputs) carry values 10-100x the
// others, so a per-token u8 scale set by them leaves the rest a handful of
// levels. With the per-channel largest input magnitude a[k] (measured on
// sample inputs) and largest weight magnitude w[k] of row k, the factor
// f[k] = a[k]^alpha / w[k]^(1 - alpha) divides the input channel and
// multiplies the weight row before quantization: x W = (x / f) (f W). Both
// sides then have milder outliers. The Linear stores 1 / f as its input scale
// (ir.h slot::kInScale); the kernels multiply it in while quantizing.
// Measured on all-MiniLM-L6-v2 (tests/conformance/test_int8.py sentences):
// INT8 vs FP32 mean-pooled cosine 0.9989 -> 0.9993 mean, alpha 0.5 best of
// 0.3 .. 0.7, sample inputs of random tokens as good as real text.
struct QuantOptions {
  bool sparse_auto = true;                      // false: every Linear dense INT8
  double sparse_threshold = kDefaultSparseThreshold;  // in [0, 1]
  bool smooth = true;          // with input ranges: smoothing as above
  double smooth_alpha = 0.5;   // in [0, 1]
};

struct LinearQuantReport {
  std::string name;
  int64_t K = 0, N = 0;
  double block_sparsity = 0;  // all-zero 4x1 blocks of the s8 weights
  Precision precision = Precision::F32;
  double max_rel_error = 0;   // max |W - s*q| / max|W| of the (smoothed) layer
  bool smoothed = false;      // has an input scale
  float max_smooth = 1.f;     // the largest factor f[k] (1: none)
};

// Stores in every f32 Linear of w.graph the fraction of all-zero 4x1 blocks of
// its weight (Op::block_sparsity), which the cpu backend's kernel choice reads
// (kernels/cpu/select.h: block-sparse FP32 above the crossover). Run before
// quantize_linears_int8, which replaces it by the s8 weight's value.
void record_f32_block_sparsity(SpnlWriter& w);

// Rewrites every f32 Linear of w.graph in place: its weight tensor becomes s8,
// a scale tensor is added, and its precision is chosen. Embeddings,
// LayerNorm and attention stay f32. With opts.smooth and `ranges` (from
// calibrate_linear_inputs on the f32 model, index = op index), each Linear
// with a recorded range is smoothed first and gets an input scale.
std::vector<LinearQuantReport> quantize_linears_int8(SpnlWriter& w, const QuantOptions& opts,
                                                     const std::vector<ActRange>* ranges = nullptr);

}  // namespace spinel
