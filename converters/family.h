// The converter side of the model-family modules (models/<family>/): each
// family recognises its encoder in an ONNX graph and lowers it into spinel's
// IR. The importer (converters/onnx_import.cpp) tries every registered family
// on a fresh GraphIndex and keeps the one that explains the whole graph; when
// none does, the rejection reports the candidate that explained the most.
//
// Adding a family: a module models/<name>/ with a function
//   std::unique_ptr<FamilyMatch> match_<name>(GraphIndex& g);
// listed in models/importers.cpp, and its FamilyInfo in models/registry.cpp.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "converters/ir_builder.h"
#include "converters/onnx_graph.h"
#include "converters/onnx_import.h"

namespace spinel {
namespace onnx_import {

// What a family's recogniser found in one graph.
class FamilyMatch {
 public:
  virtual ~FamilyMatch() = default;
  // Why the graph is not (entirely) this family's encoder; empty on a match.
  std::vector<std::string> problems;
  // Lowers the recognised graph: config (architecture included), ops, weights,
  // named outputs, default pooling; fills the report's forms. Called only when
  // `problems` is empty and every node is covered.
  virtual void build(const GraphIndex& g, IrBuilder& ir, ImportReport& rep) const = 0;
};

struct FamilyImporter {
  const char* name;  // the architecture string of models/registry.h
  // Marks the nodes it explains covered in `g`; never throws on a mismatch.
  std::unique_ptr<FamilyMatch> (*match)(GraphIndex& g);
};

// Every family the converter knows, in the order they are tried (models/importers.cpp).
const std::vector<FamilyImporter>& family_importers();

}  // namespace onnx_import
}  // namespace spinel
