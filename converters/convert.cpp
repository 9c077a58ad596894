#include "converters/convert.h"

#include <sys/stat.h>

#include <optional>

#include "converters/calibrate.h"
#include "converters/diagnose.h"
#include "runtime/spnl.h"
#include "runtime/util/file_io.h"
#include "runtime/util/text_input.h"

namespace spinel {
namespace {

// The same limit as the CLI's other text inputs (tools/spinel/args.h).
constexpr uint64_t kMaxCalibrationFileBytes = uint64_t{1} << 30;
// Random-token sequences (16 to 64 tokens) smoothing measures input ranges on
// without a calibration file: on MiniLM 16 gave the cosine of real text.
constexpr int kSmoothingSamples = 16;

bool is_regular_file(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string dirname_of(const std::string& p) {
  const auto slash = p.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : p.substr(0, slash);
}

std::string find_tokenizer(const ConvertOptions& o) {
  if (!o.tokenizer_path.empty()) return o.tokenizer_path;
  const std::string dir = dirname_of(o.onnx_path);
  if (is_regular_file(dir + "/tokenizer.json")) return dir + "/tokenizer.json";
  if (is_regular_file(dir + "/vocab.txt")) return dir + "/vocab.txt";
  throw ConvertOptionError("no --tokenizer given and no tokenizer.json or vocab.txt next to " + o.onnx_path);
}

AnyTokenizer load_tokenizer(const ConvertOptions& o, const std::string& path) {
  try {
    TokenizerFileOptions to;
    to.lowercase = o.lowercase;
    return load_tokenizer_file(path, to);
  } catch (const Error& e) {
    // A tokenizer of another family usually comes with a config.json saying which.
    if (auto fam = onnx_import::unsupported_family(o.onnx_path)) fail(e.what(), "\n  ", *fam);
    throw;
  }
}

}  // namespace

const char* convert_step_name(ConvertStep s) {
  switch (s) {
    case ConvertStep::Tokenizer: return "tokenizer";
    case ConvertStep::Graph: return "graph";
    case ConvertStep::Calibrate: return "calibrate";
    case ConvertStep::Quantize: return "quantize";
    case ConvertStep::Write: return "write";
  }
  return "?";
}

ConvertReport convert(const ConvertOptions& o, const ConvertCallback& progress) {
  auto note = [&](ConvertStep s, bool finished, const ConvertReport& r, int64_t done = 0, int64_t total = 0) {
    if (progress) progress(ConvertProgress{s, finished, done, total}, r);
  };
  if (o.onnx_path.empty()) throw ConvertOptionError("no ONNX model given");
  if (o.output_path.empty()) throw ConvertOptionError("no output path given");
  if (!o.int8 && !o.calibration_path.empty())
    throw ConvertOptionError("--calibrate applies to --quant int8");
  if (!(o.quant.sparse_threshold >= 0 && o.quant.sparse_threshold <= 1))
    throw ConvertOptionError("the sparse threshold must be in [0, 1]");
  if (!(o.quant.smooth_alpha >= 0 && o.quant.smooth_alpha <= 1))
    throw ConvertOptionError("the smoothing alpha must be in [0, 1]");

  ConvertReport rep;
  rep.tokenizer_path = find_tokenizer(o);
  // The output must not replace one of the inputs (the writer's rename would).
  for (const std::string& in : {o.onnx_path, rep.tokenizer_path, o.calibration_path})
    if (!in.empty() && (in == o.output_path || same_file(in, o.output_path)))
      throw ConvertOptionError("-o " + o.output_path + " is the same file as the input " + in);
  // The model must at least be a readable regular file before the tokenizer is
  // read (opened without blocking on a FIFO, then closed).
  { const RegularFile check(o.onnx_path, "ONNX model"); }

  SpnlWriter writer;
  note(ConvertStep::Tokenizer, false, rep);
  writer.tokenizer = load_tokenizer(o, rep.tokenizer_path);
  rep.vocab_size = writer.tokenizer.vocab_size();
  note(ConvertStep::Tokenizer, true, rep);

  note(ConvertStep::Graph, false, rep);
  rep.import = import_onnx(o.onnx_path, writer);
  rep.ir_ops = writer.graph.ops.size();
  rep.config = writer.config;
  if (static_cast<int64_t>(rep.vocab_size) > writer.config.vocab_size)
    fail(rep.tokenizer_path, ": the tokenizer has ", rep.vocab_size, " tokens but the model's embedding table ",
         writer.config.vocab_size, " rows (", o.onnx_path, "); they do not belong together");
  note(ConvertStep::Graph, true, rep);

  std::vector<ActRange> ranges;
  std::vector<Sequence> samples;
  if (!o.calibration_path.empty()) {
    for (const std::string& line : read_text_lines(o.calibration_path, kMaxCalibrationFileBytes)) {
      if (line.empty()) continue;
      Encoding e = writer.tokenizer.encode(line, std::nullopt, static_cast<size_t>(writer.config.max_position), true);
      samples.push_back({std::move(e.ids), std::move(e.type_ids)});
    }
    if (samples.empty()) fail("calibration file '", o.calibration_path, "' has no non-empty lines");
    rep.calibration_samples = static_cast<int64_t>(samples.size());
  } else if (o.int8 && o.quant.smooth) {
    // Smoothing needs per-channel input ranges: measured on random tokens
    // (calibrate.h synthetic_samples), activations stay dynamic per token.
    samples = synthetic_samples(writer.tokenizer, writer.config.max_position, kSmoothingSamples, 0x5eed);
    rep.synthetic_samples = true;
    rep.calibration_samples = static_cast<int64_t>(samples.size());
  }
  if (!samples.empty()) {
    note(ConvertStep::Calibrate, false, rep, 0, rep.calibration_samples);
    ranges = calibrate_linear_inputs(writer, samples, o.calibration_threads, 16, [&](size_t done) {
      note(ConvertStep::Calibrate, false, rep, static_cast<int64_t>(done), rep.calibration_samples);
    });
    note(ConvertStep::Calibrate, true, rep, rep.calibration_samples, rep.calibration_samples);
  }
  record_f32_block_sparsity(writer);
  if (o.int8) {
    note(ConvertStep::Quantize, false, rep);
    rep.quantized = quantize_linears_int8(writer, o.quant, ranges.empty() ? nullptr : &ranges);
    if (!ranges.empty() && !rep.synthetic_samples)
      rep.static_layers = apply_static_quantization(writer, ranges);
    note(ConvertStep::Quantize, true, rep);
  }

  note(ConvertStep::Write, false, rep);
  writer.write(o.output_path);
  struct stat st {};
  if (stat(o.output_path.c_str(), &st) == 0) rep.output_bytes = static_cast<uint64_t>(st.st_size);
  note(ConvertStep::Write, true, rep);
  return rep;
}

}  // namespace spinel
