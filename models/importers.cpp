// The converter side of the model-family registry: every family's ONNX
// recogniser, in the order the importer tries them. The runtime side (the
// architecture string stored in a .spnl) is models/registry.cpp.
#include "converters/family.h"
#include "models/bert/bert_import.h"
#include "models/distilbert/distilbert_import.h"
#include "models/dnabert2/dnabert2_import.h"

namespace spinel {
namespace onnx_import {

const std::vector<FamilyImporter>& family_importers() {
  static const std::vector<FamilyImporter> all = {
      {"bert", &match_bert},
      {"distilbert", &match_distilbert},
      {"dnabert2", &match_dnabert2},
  };
  return all;
}

}  // namespace onnx_import
}  // namespace spinel
