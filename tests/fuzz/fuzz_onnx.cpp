// ONNX import on arbitrary bytes. import_onnx() takes a path, so the
// input becomes model.onnx in a per-process scratch directory (which holds
// nothing else between inputs: external data can only point at that file).
//
// Whatever the importer accepts must also be writable as a .spnl, loadable
// again with the same shape, and quantizable to INT8.
#include <cstddef>
#include <cstdint>

#include "converters/onnx_import.h"
#include "converters/quantize.h"
#include "runtime/spnl.h"
#include "tests/fuzz/fuzz_common.h"

namespace {

// The smallest tokenizer a model with `vocab` rows can carry.
spinel::WordPieceTokenizer tokenizer_for(int64_t vocab) {
  std::vector<std::string> v = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "##s"};
  if (vocab < 4) return {};
  if (static_cast<int64_t>(v.size()) > vocab) v.resize(static_cast<size_t>(vocab));
  return spinel::WordPieceTokenizer(v, spinel::WordPieceOptions{});
}

// Writes `w` (which import or quantization produced) and loads it back.
void roundtrip(const spinel::SpnlWriter& w, const std::string& name) {
  using spinel::fuzz::finding;
  const std::string path = spinel::fuzz::scratch_dir() + "/" + name;
  try {
    w.write(path);
  } catch (const spinel::Error& e) {
    finding(std::string("writing an imported model failed: ") + e.what());
  }
  try {
    const auto m = spinel::Model::load(path);
    if (m->graph().ops.size() != w.graph.ops.size() || m->tensors().size() != w.tensors().size() ||
        m->config().hidden_size != w.config.hidden_size ||
        m->config().vocab_size != w.config.vocab_size)
      finding("an imported model changed in the .spnl round trip");
  } catch (const spinel::Error& e) {
    finding(std::string("an imported model does not load back: ") + e.what());
  }
  // The next input's external data could name this file: leave no state.
  unlink(path.c_str());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = spinel::fuzz::write_scratch("model.onnx", data, size);
  spinel::SpnlWriter w;
  try {
    spinel::import_onnx(path, w);
  } catch (const spinel::Error&) {
    return 0;
  }
  // Past here the model passed validate_graph: every later step must work.
  w.tokenizer = tokenizer_for(w.config.vocab_size);
  if (w.tokenizer.vocab_size() == 0) return 0;
  roundtrip(w, "f32.spnl");
  try {
    spinel::quantize_linears_int8(w, spinel::QuantOptions{});
  } catch (const spinel::Error& e) {
    spinel::fuzz::finding(std::string("quantizing an imported model failed: ") + e.what());
  }
  roundtrip(w, "int8.spnl");
  return 0;
}
