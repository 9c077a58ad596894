// DistilBERT (HF DistilBertModel) as torch.onnx.export writes it: word +
// position embeddings (no token types), the post-LN encoder with
// q_lin/k_lin/v_lin/out_lin, queries divided by sqrt(head_dim) before Q.K^T
// (folded into the Attention scale) and the mask applied through
// Where(mask == 0, finfo.min, scores); sa_layer_norm, ffn.lin1/lin2,
// output_layer_norm. A sentence-transformers mean pooling (+ L2 normalize)
// after it becomes the default pooling.
#pragma once

#include <memory>

#include "converters/family.h"

namespace spinel {
namespace onnx_import {

std::unique_ptr<FamilyMatch> match_distilbert(GraphIndex& g);

}  // namespace onnx_import
}  // namespace spinel
