// DNABERT-2 (arXiv 2306.15006) as a traceable torch export writes it: word
// (+ token-type) embeddings and LayerNorm without position embeddings; per
// layer a fused Wqkv (one MatMul + bias, Q | K | V head-major) split into
// heads, scores + (ALiBi bias + additive mask), softmax, dense + residual +
// LayerNorm, gated_layers (GEGLU: exact GELU of the first half times the
// second) -> wo + residual + LayerNorm; optionally the pooler (dense + tanh on
// [CLS]) and a classifier whose result becomes the "logits" output.
//
// Shapes and index shuffles are recognised by evaluating them
// (converters/onnx_eval.h): the head split of Wqkv's result, the head merge,
// the GEGLU region, and the ALiBi bias, which torch exports as a
// Range/Sub/Abs/Mul subgraph of the sequence length. The bias is evaluated at
// several lengths (1, 2, 7, 64, 513) with and without padding, and must equal
// -slope_h * |j - i| where the mask keeps key j (a large negative number where
// it does not), with the slopes of alibi_slopes(heads) (runtime/ir.h).
#pragma once

#include <memory>

#include "converters/family.h"

namespace spinel {
namespace onnx_import {

// The longest sequence an ALiBi model accepts when no config.json beside the
// ONNX file says (max_position_embeddings): ALiBi has no position table, and
// DNABERT-2, trained at 512, extrapolates; attention cost is quadratic.
constexpr int64_t kAlibiDefaultMaxPosition = 4096;

std::unique_ptr<FamilyMatch> match_dnabert2(GraphIndex& g);

}  // namespace onnx_import
}  // namespace spinel
