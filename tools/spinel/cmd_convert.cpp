#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "converters/calibrate.h"
#include "converters/onnx_import.h"
#include "converters/quantize.h"
#include "runtime/error.h"
#include "runtime/spnl.h"
#include "runtime/util/file_io.h"
#include "runtime/util/text_input.h"
#include "tools/spinel/args.h"
#include "tools/spinel/commands.h"

namespace spinel::cli {
namespace {

const char* kHelp =
    "usage: spinel convert MODEL.onnx [--tokenizer FILE] -o OUT.spnl [options]\n"
    "\n"
    "Reads a BERT encoder exported from PyTorch with torch.onnx.export (opset 14-17,\n"
    "external data allowed inside the model's folder), recognises its layers, and writes\n"
    "one .spnl file holding the configuration, the tokenizer and 64-byte aligned weights.\n"
    "\n"
    "options:\n"
    "  --tokenizer FILE   HF tokenizer.json (WordPiece) or a BERT vocab.txt; default:\n"
    "                     tokenizer.json, else vocab.txt, next to MODEL.onnx\n"
    "  --no-lowercase     with a vocab.txt: keep case and accents (cased models)\n"
    "  --quant int8       quantize every Linear: weights s8 (symmetric, per output channel),\n"
    "                     activations u8 per token at run time (no calibration needed);\n"
    "                     embeddings, LayerNorm and attention stay f32. Default: f32\n"
    "  --sparse auto|off  with --quant int8: run layers whose 4x1 block sparsity reaches\n"
    "                     --sparse-threshold on the block-sparse kernel, the rest on\n"
    "                     oneDNN's dense INT8 (auto, default); off: all dense INT8\n"
    "  --sparse-threshold F  block sparsity in [0, 1] from which a layer goes sparse\n"
    "                     (default 0.4, the crossover measured on AVX-512 VNNI); on a CPU\n"
    "                     whose oneDNN uses AMX, layers below 0.7 run dense there anyway\n"
    "                     (`spinel inspect` shows what runs where)\n"
    "  --calibrate FILE   with --quant int8: run the f32 model on FILE (one sample text per\n"
    "                     line) and quantize each Linear's input with one static scale and\n"
    "                     zero point from the observed range, instead of per token at run time\n"
    "  -o, --output FILE  the .spnl to write (written atomically: nothing on failure)\n"
    "  -h, --help         this text\n";

bool file_exists(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string dirname_of(const std::string& p) {
  const auto slash = p.find_last_of('/');
  return slash == std::string::npos ? "." : p.substr(0, slash);
}

}  // namespace

int cmd_convert(int argc, char** argv) {
  try {
    Args args(argc, argv, {"tokenizer", "output", "quant", "sparse", "sparse-threshold", "calibrate"},
              {"help", "no-lowercase"});
    if (args.has("help")) {
      std::fputs(kHelp, stdout);
      return 0;
    }
    if (args.positionals().size() != 1) throw UsageError{"expected exactly one MODEL.onnx"};
    if (!args.has("output")) throw UsageError{"missing -o OUT.spnl"};
    const std::string onnx_path = args.positionals()[0];
    const std::string out_path = args.get("output");
    const std::string quant = args.get("quant", "f32");
    if (quant != "f32" && quant != "int8")
      throw UsageError{"--quant must be int8 (or f32, the default), not '" + quant + "'"};
    QuantOptions qopts;
    const std::string sparse = args.get("sparse", "auto");
    if (sparse != "auto" && sparse != "off")
      throw UsageError{"--sparse must be auto or off, not '" + sparse + "'"};
    qopts.sparse_auto = sparse == "auto";
    if (args.has("sparse-threshold")) {
      const std::string v = args.get("sparse-threshold");
      char* end = nullptr;
      qopts.sparse_threshold = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !(qopts.sparse_threshold >= 0 && qopts.sparse_threshold <= 1))
        throw UsageError{"--sparse-threshold must be a number in [0, 1], not '" + v + "'"};
    }
    if (quant == "f32" && (args.has("sparse") || args.has("sparse-threshold") || args.has("calibrate")))
      throw UsageError{"--sparse, --sparse-threshold and --calibrate apply to --quant int8"};

    std::string tok_path = args.get("tokenizer");
    if (tok_path.empty()) {
      const std::string dir = dirname_of(onnx_path);
      if (file_exists(dir + "/tokenizer.json"))
        tok_path = dir + "/tokenizer.json";
      else if (file_exists(dir + "/vocab.txt"))
        tok_path = dir + "/vocab.txt";
      else
        throw UsageError{"no --tokenizer given and no tokenizer.json or vocab.txt next to " +
                         onnx_path};
    }

    // -o must not replace one of the inputs (the writer's rename would).
    for (const std::string& in : {onnx_path, tok_path, args.get("calibrate")})
      if (!in.empty() && (in == out_path || same_file(in, out_path)))
        throw UsageError{"-o " + out_path + " is the same file as the input " + in};

    SpnlWriter writer;
    std::fprintf(stderr, "[1/3] reading %s\n", onnx_path.c_str());
    const ImportReport rep = import_onnx_bert(onnx_path, writer);
    std::fprintf(stderr,
                 "      %lld ONNX nodes (opset %d, %s) -> %zu spinel ops; LayerNorm %s, GELU %s, "
                 "mask %s\n",
                 (long long)rep.onnx_nodes, rep.opset, rep.producer.c_str(), writer.graph.ops.size(),
                 rep.layer_norm_form.c_str(), rep.gelu_form.c_str(), rep.mask_form.c_str());

    std::fprintf(stderr, "[2/3] reading tokenizer %s\n", tok_path.c_str());
    const bool is_json = tok_path.size() >= 5 && tok_path.compare(tok_path.size() - 5, 5, ".json") == 0;
    if (is_json) {
      writer.tokenizer = WordPieceTokenizer::from_tokenizer_json(tok_path);
    } else {
      WordPieceOptions opts;
      opts.lowercase = opts.strip_accents = !args.has("no-lowercase");
      writer.tokenizer = WordPieceTokenizer::from_vocab_file(tok_path, opts);
    }
    std::fprintf(stderr, "      %zu tokens\n", writer.tokenizer.vocab_size());

    std::vector<ActRange> ranges;
    if (args.has("calibrate")) {
      const std::string cpath = args.get("calibrate");
      std::vector<Sequence> samples;
      for (const std::string& line : read_text_lines(cpath, kMaxInputFileBytes)) {
        if (line.empty()) continue;
        Encoding e = writer.tokenizer.encode(line, std::nullopt,
                                             static_cast<size_t>(writer.config.max_position), true);
        samples.push_back({std::move(e.ids), std::move(e.type_ids)});
      }
      if (samples.empty()) fail("calibration file '", cpath, "' has no non-empty lines");
      Progress bar("      calibrating", static_cast<int64_t>(samples.size()));
      ranges = calibrate_linear_inputs(writer, samples, 0, 16,
                                       [&](size_t done) { bar.update(static_cast<int64_t>(done)); });
      bar.finish();
    }
    if (quant == "int8") {
      const auto reps = quantize_linears_int8(writer, qopts);
      int sparse_layers = 0;
      std::fprintf(stderr, "      INT8: %-52s %-11s %9s %s\n", "Linear", "K x N", "4x1 zero", "kernel");
      for (const auto& r : reps) {
        sparse_layers += r.precision == Precision::S8Sparse;
        const std::string shape = std::to_string(r.K) + "x" + std::to_string(r.N);
        std::string name = r.name.size() > 52 ? "..." + r.name.substr(r.name.size() - 49) : r.name;
        std::fprintf(stderr, "            %-52s %-11s %8.1f%% %s\n", name.c_str(), shape.c_str(),
                     100 * r.block_sparsity, precision_name(r.precision));
      }
      std::fprintf(stderr, "      %zu Linear layers quantized to INT8, %d on the block-sparse kernel\n",
                   reps.size(), sparse_layers);
      if (!ranges.empty())
        std::fprintf(stderr, "      %d layers use calibrated static activation scales\n",
                     apply_static_quantization(writer, ranges));
    }

    std::fprintf(stderr, "[3/3] writing %s\n", out_path.c_str());
    writer.write(out_path);
    struct stat st {};
    stat(out_path.c_str(), &st);
    std::fprintf(stderr, "done: %s (%.1f MiB, %lld layers, hidden %lld, %lld heads)\n",
                 out_path.c_str(), st.st_size / 1048576.0, (long long)writer.config.num_layers,
                 (long long)writer.config.hidden_size, (long long)writer.config.num_heads);
    return 0;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "spinel convert: %s\n\n%s", e.message.c_str(), kHelp);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "spinel convert: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace spinel::cli
