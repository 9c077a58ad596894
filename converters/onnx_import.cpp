// Tries every registered model family on the graph and lowers the one that
// explains it (converters/family.h).
#include "converters/onnx_import.h"

#include <memory>

#include "converters/diagnose.h"
#include "converters/family.h"
#include "converters/ir_builder.h"
#include "converters/onnx_graph.h"
#include "converters/onnx_tensors.h"
#include "runtime/error.h"

namespace spinel {

using namespace onnx_import;

ImportReport import_onnx(const std::string& onnx_path, SpnlWriter& out) {
  const onnx::ModelProto model = load_model_proto(onnx_path);
  const onnx::GraphProto& graph = model.graph();
  ImportReport rep;
  for (const auto& os : model.opset_import())
    if (os.domain().empty() || os.domain() == "ai.onnx") rep.opset = static_cast<int>(os.version());
  rep.producer = model.producer_name();
  if (!model.producer_version().empty()) rep.producer += " " + model.producer_version();
  rep.onnx_nodes = graph.node_size();
  if (!out.graph.ops.empty() || !out.tensors().empty())
    fail(onnx_path, ": import_onnx needs an empty SpnlWriter");

  try {
    const ConstantTable consts(graph, model_directory(onnx_path));
    // Each family matches on its own index (coverage marks are per attempt).
    struct Attempt {
      std::unique_ptr<GraphIndex> g;
      std::unique_ptr<FamilyMatch> m;
      std::vector<int> uncovered;
      const FamilyImporter* family = nullptr;
    };
    std::unique_ptr<Attempt> best;
    for (const FamilyImporter& f : family_importers()) {
      auto a = std::make_unique<Attempt>();
      a->g = std::make_unique<GraphIndex>(graph, consts);
      a->m = f.match(*a->g);
      a->uncovered = a->g->finish_coverage();
      a->family = &f;
      if (a->uncovered.empty() && a->m->problems.empty()) {
        best = std::move(a);
        break;
      }
      // The best candidate explains the most nodes, then has the fewest
      // problems; remaining ties go to the earlier family.
      if (!best || a->uncovered.size() < best->uncovered.size() ||
          (a->uncovered.size() == best->uncovered.size() && a->m->problems.size() < best->m->problems.size()))
        best = std::move(a);
    }
    if (!best) fail("no model family is registered");
    if (!best->uncovered.empty() || !best->m->problems.empty())
      reject_graph(*best->g, best->uncovered, best->m->problems, onnx_path);

    IrBuilder ir(consts, out);
    rep.architecture = best->family->name;
    out.config.architecture = best->family->name;
    best->m->build(*best->g, ir, rep);
    out.config.source = (rep.producer.empty() ? std::string("unknown producer") : rep.producer) +
                        ", opset " + std::to_string(rep.opset);
    validate_graph(out.graph, out.tensors(), out.config);
  } catch (const Error& e) {
    fail(onnx_path, ": ", e.what());
  } catch (const std::exception& e) {
    // A malformed file must end in a message, never an unexplained abort.
    fail(onnx_path, ": cannot import: ", e.what());
  }
  return rep;
}

}  // namespace spinel
