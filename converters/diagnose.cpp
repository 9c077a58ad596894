#include "converters/diagnose.h"

#include <sstream>

#include "runtime/error.h"

namespace spinel::onnx_import {

void reject_graph(const GraphIndex& g, const std::vector<int>& uncovered,
                  const std::vector<std::string>& problems, const std::string& onnx_path) {
  std::ostringstream os;
  os << "the graph is not a supported BERT encoder";
  if (!uncovered.empty()) {
    os << "; unsupported nodes (" << uncovered.size() << "): ";
    for (size_t i = 0; i < uncovered.size(); ++i) os << (i ? ", " : "") << g.describe(uncovered[i]);
  }
  for (const std::string& p : problems) os << "\n  - " << p;
  throw Error(os.str());
}

}  // namespace spinel::onnx_import
