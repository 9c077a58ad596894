// `spinel convert`: the command line around converters/convert.h.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "converters/convert.h"
#include "runtime/error.h"
#include "tools/spinel/args.h"
#include "tools/spinel/commands.h"

namespace spinel::cli {
namespace {

const char* kHelp =
    "usage: spinel convert MODEL.onnx [--tokenizer FILE] -o OUT.spnl [options]\n"
    "\n"
    "Reads a BERT or DistilBERT encoder exported with torch.onnx.export (or Optimum /\n"
    "sentence-transformers), recognises its layers and heads, and writes one .spnl file\n"
    "holding the configuration, the tokenizer and 64-byte aligned weights. The tokenizer\n"
    "is read first.\n"
    "\n"
    "Recognised outputs: last_hidden_state; BERT's pooler_output (spinel run --pool\n"
    "pooler); a sentence embedding that is mean pooling (+ L2 normalization) of the\n"
    "tokens, which becomes the model's default pooling. Inputs: input_ids and\n"
    "attention_mask, with or without token_type_ids.\n"
    "\n"
    "Supported ONNX files: ONNX opsets 11 to 18 (each tested against ONNX Runtime); f32\n"
    "or float16 weights (a model.half() export or a float16-converted file: the weights\n"
    "are widened to f32, and --quant int8 quantizes from those); external data\n"
    "inside the model's folder. Not supported: ONNX Runtime-optimized files (com.microsoft\n"
    "fused ops) and already quantized files (quantize_dynamic): convert the plain f32\n"
    "export instead; families other than BERT and DistilBERT (config.json beside the\n"
    "model is read to say which).\n"
    "\n"
    "Tokenizers (stored in the .spnl; `spinel tokenize` shows the ids):\n"
    "  WordPiece tokenizer.json: BertNormalizer, BertPreTokenizer, BERT templates.\n"
    "  BPE tokenizer.json (DNABERT-2, RoBERTa/GPT-2 byte-level), ids as HF tokenizers 0.19:\n"
    "    model        BPE: vocab, merges (\"a b\" or [\"a\", \"b\"]) by rank, unk_token,\n"
    "                 continuing_subword_prefix, end_of_word_suffix, fuse_unk, byte_fallback,\n"
    "                 ignore_merges; dropout null or 0\n"
    "    normalizer   none, Lowercase, Strip, Sequence of them (not NFC/NFD/NFKC/NFKD,\n"
    "                 Replace, Prepend, BertNormalizer)\n"
    "    pre_tokenizer none, Whitespace, WhitespaceSplit, ByteLevel (add_prefix_space,\n"
    "                 use_regex), Sequence of them (not Metaspace, Split, Digits, Punctuation)\n"
    "    post_processor none, TemplateProcessing, RobertaProcessing, BertProcessing,\n"
    "                 ByteLevel, Sequence of them\n"
    "    added_tokens all options; decoder ignored (spinel does not decode)\n"
    "  Other model types (WordLevel, Unigram) and other features are refused, named.\n"
    "  SentencePiece .model: its own normalizer and piece splitting (libsentencepiece);\n"
    "    specials: [CLS] A [SEP] when the model has [CLS]/[SEP], else <s> A </s> with its\n"
    "    bos/eos, else none.\n"
    "\n"
    "options:\n"
    "  --tokenizer FILE   HF tokenizer.json (WordPiece or BPE model), a SentencePiece\n"
    "                     .model (BPE or unigram), or a BERT vocab.txt; default:\n"
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
    "  --smooth auto|on|off  with --quant int8: on: measure each Linear's input channels\n"
    "                     on sample inputs (the --calibrate texts, else 16 sequences of\n"
    "                     random tokens) and move the range of outlier channels into the\n"
    "                     weights before quantizing (SmoothQuant's idea; the model's f32\n"
    "                     function is unchanged, per-token INT8 gets closer to it: MiniLM\n"
    "                     embeddings cosine 0.9989 -> 0.9993); off: plain. auto (default):\n"
    "                     on with per-token activations, off with --calibrate (one static\n"
    "                     range per layer measured worse smoothed on MiniLM: 0.991 vs 0.993)\n"
    "  --smooth-alpha A   migration strength in [0, 1] (default 0.5: a channel's\n"
    "                     factor is |x|max^A / |w|max^(1-A))\n"
    "  -o, --output FILE  the .spnl to write (written atomically: nothing on failure)\n"
    "  -h, --help         this text\n";

void print_quant_report(const ConvertReport& r) {
  int sparse_layers = 0;
  std::fprintf(stderr, "      INT8: %-52s %-11s %9s %s\n", "Linear", "K x N", "4x1 zero", "kernel");
  for (const auto& q : r.quantized) {
    sparse_layers += q.precision == Precision::S8Sparse;
    const std::string shape = std::to_string(q.K) + "x" + std::to_string(q.N);
    const std::string name = q.name.size() > 52 ? "..." + q.name.substr(q.name.size() - 49) : q.name;
    std::fprintf(stderr, "            %-52s %-11s %8.1f%% %s\n", name.c_str(), shape.c_str(),
                 100 * q.block_sparsity, precision_name(q.precision));
  }
  std::fprintf(stderr, "      %zu Linear layers quantized to INT8, %d on the block-sparse kernel\n",
               r.quantized.size(), sparse_layers);
  int smoothed = 0;
  float max_f = 1.f;
  for (const auto& q : r.quantized) {
    smoothed += q.smoothed;
    max_f = std::max(max_f, q.max_smooth);
  }
  if (smoothed > 0)
    std::fprintf(stderr, "      %d layers smoothed (input channel factors up to %.3g)\n", smoothed, max_f);
  if (r.static_layers > 0)
    std::fprintf(stderr, "      %d layers use calibrated static activation scales\n", r.static_layers);
}

}  // namespace

int cmd_convert(int argc, char** argv) {
  try {
    Args args(argc, argv,
              {"tokenizer", "output", "quant", "sparse", "sparse-threshold", "calibrate", "smooth",
               "smooth-alpha"},
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
    const std::string smooth = args.get("smooth", "auto");
    if (smooth != "auto" && smooth != "on" && smooth != "off")
      throw UsageError{"--smooth must be auto, on or off, not '" + smooth + "'"};
    qopts.smooth = smooth == "on" || (smooth == "auto" && !args.has("calibrate"));
    if (args.has("smooth-alpha")) {
      const std::string v = args.get("smooth-alpha");
      char* end = nullptr;
      qopts.smooth_alpha = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !(qopts.smooth_alpha >= 0 && qopts.smooth_alpha <= 1))
        throw UsageError{"--smooth-alpha must be a number in [0, 1], not '" + v + "'"};
      if (!qopts.smooth)
        throw UsageError{"--smooth-alpha applies when smoothing is on (--smooth on, or auto without --calibrate)"};
    }
    if (quant == "f32" && (args.has("sparse") || args.has("sparse-threshold") || args.has("calibrate") ||
                           args.has("smooth") || args.has("smooth-alpha")))
      throw UsageError{"--sparse, --sparse-threshold, --calibrate and --smooth apply to --quant int8"};

    ConvertOptions opts;
    opts.onnx_path = onnx_path;
    opts.output_path = out_path;
    opts.tokenizer_path = args.get("tokenizer");
    opts.lowercase = !args.has("no-lowercase");
    opts.int8 = quant == "int8";
    opts.quant = qopts;
    opts.calibration_path = args.get("calibrate");

    std::optional<Progress> bar;
    auto on_progress = [&](const ConvertProgress& p, const ConvertReport& r) {
      switch (p.step) {
        case ConvertStep::Tokenizer:
          if (!p.finished)
            std::fprintf(stderr, "[1/3] reading tokenizer %s\n", r.tokenizer_path.c_str());
          else
            std::fprintf(stderr, "      %zu tokens\n", r.vocab_size);
          break;
        case ConvertStep::Graph:
          if (!p.finished) {
            std::fprintf(stderr, "[2/3] reading %s\n", onnx_path.c_str());
          } else {
            const ImportReport& i = r.import;
            std::fprintf(stderr,
                         "      %lld ONNX nodes (opset %d, %s) -> %zu spinel ops; LayerNorm %s, GELU %s, "
                         "mask %s\n",
                         (long long)i.onnx_nodes, i.opset, i.producer.c_str(), r.ir_ops,
                         i.layer_norm_form.c_str(), i.gelu_form.c_str(), i.mask_form.c_str());
          }
          break;
        case ConvertStep::Calibrate:
          if (!bar) bar.emplace(r.synthetic_samples ? "      measuring inputs (random tokens)" : "      calibrating", p.total);
          if (p.finished)
            bar->finish();
          else
            bar->update(p.done);
          break;
        case ConvertStep::Quantize:
          if (p.finished) print_quant_report(r);
          break;
        case ConvertStep::Write:
          if (!p.finished) std::fprintf(stderr, "[3/3] writing %s\n", out_path.c_str());
          break;
      }
    };
    const ConvertReport rep = convert(opts, on_progress);
    std::fprintf(stderr, "done: %s (%.1f MiB, %lld layers, hidden %lld, %lld heads)\n", out_path.c_str(),
                 rep.output_bytes / 1048576.0, (long long)rep.config.num_layers,
                 (long long)rep.config.hidden_size, (long long)rep.config.num_heads);
    return 0;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "spinel convert: %s\n\n%s", e.message.c_str(), kHelp);
    return 2;
  } catch (const ConvertOptionError& e) {
    std::fprintf(stderr, "spinel convert: %s\n\n%s", e.what(), kHelp);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "spinel convert: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace spinel::cli
