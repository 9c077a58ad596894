// Convert-time INT8 quantization of a model's Linear layers: weights to s8,
// symmetric per output channel, and per layer the choice between the 4x1
// block-sparse kernel and oneDNN's dense u8s8 matmul.
#pragma once

#include <string>
#include <vector>

#include "kernels/cpu/select.h"
#include "runtime/spnl.h"

namespace spinel {

// Block sparsity at which the sparse kernel overtakes oneDNN dense u8s8: the
// crossover table of the kernel choice (kernels/cpu/select.h).
constexpr double kDefaultSparseThreshold = kernels::kCrossoverVnni.min_sparsity;

struct QuantOptions {
  bool sparse_auto = true;                      // false: every Linear dense INT8
  double sparse_threshold = kDefaultSparseThreshold;  // in [0, 1]
};

struct LinearQuantReport {
  std::string name;
  int64_t K = 0, N = 0;
  double block_sparsity = 0;  // all-zero 4x1 blocks of the s8 weights
  Precision precision = Precision::F32;
  double max_rel_error = 0;   // max |W - s*q| / max|W| of the layer
};

// Stores in every f32 Linear of w.graph the fraction of all-zero 4x1 blocks of
// its weight (Op::block_sparsity), which the cpu backend's kernel choice reads
// (kernels/cpu/select.h: block-sparse FP32 above the crossover). Run before
// quantize_linears_int8, which replaces it by the s8 weight's value.
void record_f32_block_sparsity(SpnlWriter& w);

// Rewrites every f32 Linear of w.graph in place: its weight tensor becomes s8,
// a scale tensor is added, and its precision is chosen. Embeddings,
// LayerNorm and attention stay f32.
std::vector<LinearQuantReport> quantize_linears_int8(SpnlWriter& w, const QuantOptions& opts);

}  // namespace spinel
