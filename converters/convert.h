// The whole conversion, ONNX + tokenizer -> .spnl, as one call that the CLI
// (tools/spinel/cmd_convert.cpp) and any other front end share: check the
// paths, read the tokenizer (first: it is cheap, and a BPE user should hear
// about the tokenizer before any graph work), import the graph, calibrate and
// quantize if asked, write the file atomically. Progress is reported through
// a callback; nothing is printed here.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "converters/onnx_import.h"
#include "converters/quantize.h"
#include "runtime/error.h"
#include "runtime/ir.h"

namespace spinel {

struct ConvertOptions {
  std::string onnx_path;       // the model (external data beside it allowed)
  std::string output_path;     // the .spnl to write; nothing is written on failure
  std::string tokenizer_path;  // empty: tokenizer.json, else vocab.txt, beside onnx_path
  bool lowercase = true;       // with a vocab.txt: lowercase and strip accents (uncased models)
  bool int8 = false;           // quantize every Linear to INT8 (else f32)
  QuantOptions quant;          // with int8: sparse/dense choice
  std::string calibration_path;  // with int8: one sample text per line -> static activation scales
  int calibration_threads = 0;   // 0: the runtime's default
};

// A problem with the options themselves (a path used twice, no tokenizer to
// find, an option that needs another): the CLI reports it as a usage error.
class ConvertOptionError : public Error {
 public:
  using Error::Error;
};

enum class ConvertStep { Tokenizer, Graph, Calibrate, Quantize, Write };
const char* convert_step_name(ConvertStep s);

struct ConvertReport {
  std::string tokenizer_path;     // the one used (found beside the model when not given)
  size_t vocab_size = 0;
  ImportReport import;
  size_t ir_ops = 0;
  ModelConfig config;
  int64_t calibration_samples = 0;
  bool synthetic_samples = false;  // the samples were random tokens (for smoothing only)
  std::vector<LinearQuantReport> quantized;  // empty for f32
  int static_layers = 0;          // layers given calibrated static activation scales
  uint64_t output_bytes = 0;
};

// Called when a step starts (finished = false) and ends (finished = true; the
// report holds that step's results). During Calibrate it is also called with
// done/total samples as they are run.
struct ConvertProgress {
  ConvertStep step = ConvertStep::Tokenizer;
  bool finished = false;
  int64_t done = 0, total = 0;
};
using ConvertCallback = std::function<void(const ConvertProgress&, const ConvertReport&)>;

// Runs the conversion. Throws ConvertOptionError for inconsistent options,
// spinel::Error naming the file for everything else; either way the output
// path is left as it was.
ConvertReport convert(const ConvertOptions& opts, const ConvertCallback& progress = {});

}  // namespace spinel
