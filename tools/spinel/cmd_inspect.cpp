#include <algorithm>
#include <cstdio>
#include <string>

#include "runtime/error.h"
#include "runtime/platform.h"
#include "runtime/prepared.h"
#include "runtime/spnl.h"
#include "runtime/tokenizer/wordpiece.h"
#include "runtime/util/json.h"
#include "tools/spinel/args.h"
#include "tools/spinel/commands.h"

namespace spinel::cli {
namespace {

const char* kHelp =
    "usage: spinel inspect MODEL.spnl [--json] [--tensors]\n"
    "\n"
    "Checks a .spnl file and shows its architecture, configuration, tokenizer, the spinel\n"
    "ops it runs with their shapes, and where its bytes go.\n"
    "\n"
    "options:\n"
    "  --json      one JSON object on stdout instead of tables\n"
    "  --tensors   also list every weight tensor (name, dtype, shape, bytes)\n"
    "  -h, --help  this text\n";

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "x" : "") + std::to_string(s[i]);
  return r + "]";
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string shape_json(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "," : "") + std::to_string(s[i]);
  return r + "]";
}

// The 4x1 block sparsity the converter stored for a Linear (0 if none).
double block_sparsity(const Op& op) {
  if (op.kind != OpKind::Linear) return 0;
  return op.block_sparsity >= 0 ? op.block_sparsity : 0;
}

// How a session here runs the op, in the file's precision vocabulary
// ("s8-sparse" layers go dense where the AMX dense kernel beats the sparse one).
std::string runs_here(const Op& op, const OpKernel& k) {
  if (op.kind != OpKind::Linear) return "f32";
  if (k.kernel.rfind("spmm_u8s8", 0) == 0) return precision_name(Precision::S8Sparse);
  if (k.kernel == "dnnl_matmul_u8s8" || k.kernel == "amx_u8s8_dense") return precision_name(Precision::S8Dense);
  return precision_name(Precision::F32);
}

std::string op_precision(const Op& op, const OpKernel& k) {
  if (op.kind != OpKind::Linear) return "f32";
  std::string p = precision_name(op.precision);
  // An f32 layer on the block-sparse f32 kernel: its stored sparsity.
  if (op.precision == Precision::F32 && k.kernel.rfind("spmm_f32", 0) == 0) {
    char buf[32];
    std::snprintf(buf, sizeof buf, " %.1f%%", 100 * block_sparsity(op));
    p += buf;
  }
  if (op.precision == Precision::S8Dense && runs_here(op, k) != precision_name(op.precision)) p += " (sparse here)";
  if (op.precision == Precision::S8Sparse) {
    p += " " + num(100 * block_sparsity(op)) + "%";
    if (runs_here(op, k) != precision_name(op.precision)) p += " (dense here, AMX)";
  }
  return p;
}

std::string op_detail(const Model& m, const Op& op) {
  const Graph& g = m.graph();
  std::string d;
  switch (op.kind) {
    case OpKind::Embedding:
      d = "word" + shape_str(m.tensors()[op.w[slot::kWord]].shape);
      if (op.w[slot::kPosition] >= 0) d += " + position";
      if (op.w[slot::kTokenType] >= 0) d += " + token_type";
      d += " -> LayerNorm";
      break;
    case OpKind::Linear:
      d = std::to_string(g.values[op.in0].width) + " -> " + std::to_string(g.values[op.out].width);
      if (op.w[slot::kBias] >= 0) d += " +bias";
      if (op.w[slot::kInScale] >= 0) d += " smoothed";
      if (op.act != Activation::None) d += std::string(" ") + activation_name(op.act);
      if (op.in1 >= 0) d += " +residual";
      break;
    case OpKind::Attention: {
      const int64_t h = g.values[op.out].width;
      d = std::to_string(op.num_heads) + " heads x " + std::to_string(h / op.num_heads) +
          ", scale " + num(op.scale);
      break;
    }
    case OpKind::LayerNorm:
      d = std::string(op.in1 >= 0 ? "residual + " : "") + "LN eps " + num(op.eps);
      break;
    case OpKind::Pool:
      d = std::string(pool_kind_name(op.pool)) + " row per sequence";
      break;
  }
  return d;
}

}  // namespace

int cmd_inspect(int argc, char** argv) {
  try {
    Args args(argc, argv, {}, {"help", "json", "tensors"});
    if (args.has("help")) {
      std::fputs(kHelp, stdout);
      return 0;
    }
    if (args.positionals().size() != 1) throw UsageError{"expected exactly one MODEL.spnl"};
    const auto m = Model::load(args.positionals()[0]);
    const ModelConfig& c = m->config();
    // What a cpu session here runs each op with (prepares the model once).
    const std::vector<OpKernel> kernels = kernel_report(*m, backend_or_fail("cpu"));
    const CpuReport cpu = cpu_report();
    uint64_t weight_bytes = 0;
    for (const auto& t : m->tensors()) weight_bytes += t.nbytes;

    if (args.has("json")) {
      std::string o = "{";
      o += "\"path\":" + json::quote(m->path());
      o += ",\"format_version\":" + std::to_string(m->format_version());
      o += ",\"file_bytes\":" + std::to_string(m->file_size());
      o += ",\"checksums_verified\":true";
      o += ",\"weight_bytes\":" + std::to_string(weight_bytes);
      o += ",\"config\":{\"architecture\":" + json::quote(c.architecture) +
           ",\"vocab_size\":" + std::to_string(c.vocab_size) +
           ",\"hidden_size\":" + std::to_string(c.hidden_size) +
           ",\"num_layers\":" + std::to_string(c.num_layers) +
           ",\"num_heads\":" + std::to_string(c.num_heads) +
           ",\"intermediate_size\":" + std::to_string(c.intermediate_size) +
           ",\"max_position\":" + std::to_string(c.max_position) +
           ",\"type_vocab_size\":" + std::to_string(c.type_vocab_size) +
           ",\"layer_norm_eps\":" + num(c.layer_norm_eps) +
           ",\"hidden_act\":" + json::quote(activation_name(c.hidden_act)) +
           ",\"default_pool\":" + json::quote(c.default_pool) +
           ",\"normalize\":" + (c.normalize ? "true" : "false") +
           ",\"source\":" + json::quote(c.source) + "}";
      o += ",\"outputs\":[\"last_hidden_state\"";
      for (const GraphOutput& go : m->graph().outputs) o += "," + json::quote(go.name);
      o += "]";
      const auto& tk = m->tokenizer();
      o += ",\"tokenizer\":{\"type\":" + json::quote(tk.kind()) +
           ",\"vocab_size\":" + std::to_string(tk.vocab_size());
      if (const auto* wp = dynamic_cast<const WordPieceTokenizer*>(&tk))
        o += std::string(",\"lowercase\":") + (wp->options().lowercase ? "true" : "false") +
             ",\"strip_accents\":" + (wp->options().strip_accents ? "true" : "false");
      o += ",\"description\":" + json::quote(tk.describe()) + "}";
      o += ",\"ops\":[";
      for (size_t i = 0; i < m->graph().ops.size(); ++i) {
        const Op& op = m->graph().ops[i];
        if (i) o += ',';
        o += "{\"kind\":" + json::quote(op_kind_name(op.kind)) + ",\"name\":" + json::quote(op.name) +
             ",\"detail\":" + json::quote(op_detail(*m, op)) +
             ",\"kernel\":" + json::quote(kernels[i].kernel) +
             ",\"precision\":" + json::quote(op.kind == OpKind::Linear ? precision_name(op.precision) : "f32");
        if (op.kind != OpKind::Linear && !kernels[i].why.empty())
          o += ",\"why\":" + json::quote(kernels[i].why);
        if (op.kind == OpKind::Linear) {
          o += ",\"runs_here\":" + json::quote(runs_here(op, kernels[i]));
          o += ",\"why\":" + json::quote(kernels[i].why);
          o += ",\"block_sparsity\":" + num(block_sparsity(op));
          o += std::string(",\"activation_quant\":") +
               (op.precision == Precision::F32 ? "null" : op.act_scale > 0.f ? "\"static\"" : "\"dynamic\"");
          o += std::string(",\"smoothed\":") + (op.w[slot::kInScale] >= 0 ? "true" : "false");
        }
        o += "}";
      }
      o += "],\"cpu\":{\"detected_isa\":" + json::quote(cpu.detected_isa) +
           ",\"active_isa\":" + json::quote(cpu.active_isa) +
           ",\"amx_int8\":" + (cpu.amx_int8 ? "true" : "false") +
           ",\"dense_int8_on_sparse\":" + (cpu.dense_int8_on_sparse ? "true" : "false") +
           ",\"sparse_int8_kernel\":" + json::quote(cpu.sparse_int8_kernel) +
           ",\"f32_row_kernels\":" + json::quote(cpu.f32_row_kernels) +
           ",\"int8_attention\":" + json::quote(cpu.int8_attention.empty() ? "f32" : cpu.int8_attention) +
           ",\"model\":" + json::quote(cpu.model_name) +
           ",\"omp_spin_policy\":" + json::quote(cpu.omp_spin_policy) + "}";
      o += ",\"tensors\":[";
      for (size_t i = 0; i < m->tensors().size(); ++i) {
        const auto& t = m->tensors()[i];
        if (i) o += ',';
        o += "{\"name\":" + json::quote(t.name) + ",\"dtype\":" + json::quote(dtype_name(t.dtype)) +
             ",\"shape\":" + shape_json(t.shape) + ",\"bytes\":" + std::to_string(t.nbytes) + "}";
      }
      o += "]}";
      std::puts(o.c_str());
      return 0;
    }

    std::printf("model          %s\n", m->path().c_str());
    std::printf("format         .spnl version %u, %.2f MiB on disk (weights %.2f MiB), "
                "checksums verified (metadata and %zu weights)\n",
                m->format_version(), m->file_size() / 1048576.0, weight_bytes / 1048576.0,
                m->tensors().size());
    std::printf("architecture   %s, %lld layers, hidden %lld, %lld heads, intermediate %lld\n",
                c.architecture.c_str(), (long long)c.num_layers, (long long)c.hidden_size,
                (long long)c.num_heads, (long long)c.intermediate_size);
    std::printf("vocabulary     %lld tokens, %lld positions, %lld token types\n",
                (long long)c.vocab_size, (long long)c.max_position, (long long)c.type_vocab_size);
    std::printf("activation     %s; LayerNorm eps %g\n", activation_name(c.hidden_act),
                c.layer_norm_eps);
    std::printf("tokenizer      %s\n", m->tokenizer().describe().c_str());
    int s8 = 0, sparse = 0, linears = 0, static_act = 0, smoothed = 0;
    for (const Op& op : m->graph().ops) {
      if (op.kind != OpKind::Linear) continue;
      ++linears;
      smoothed += op.w[slot::kInScale] >= 0;
      s8 += op.precision != Precision::F32;
      sparse += op.precision == Precision::S8Sparse;
      static_act += op.act_scale > 0.f;
    }
    if (s8 == 0)
      std::printf("precision      all ops f32 (weights f32)\n");
    else
      std::printf("precision      %d/%d Linear layers INT8 (s8 weights per channel, u8 activations %s), "
                  "%d of them 4x1 block-sparse;\n               embeddings, LayerNorm, "
                  "softmax f32; attention products f32 or BF16 (op table: kernel);\n"
                  "               %d of the INT8 layers smoothed (per-channel input scales, convert --smooth)\n",
                  s8, linears,
                  static_act == s8 ? "with calibrated static scales"
                  : static_act == 0 ? "per token at run time" : "partly static, partly per token",
                  sparse, smoothed);
    std::printf("source         %s\n", c.source.c_str());
    // What this machine will run it with (CPUID + XGETBV, capped by SPINEL_ISA).
    std::string isa = cpu.active_isa;
    if (cpu.active_isa != cpu.detected_isa) isa += " (capped; CPU runs " + cpu.detected_isa + ")";
    const std::string attn =
        cpu.int8_attention.empty()
            ? std::string()
            : "; INT8 models' attention in BF16 on " +
                  std::string(cpu.int8_attention == "amx_bf16" ? "AMX-BF16 tiles" : "AVX512_BF16 dot products") +
                  (cpu.int8_qk_vnni ? ", Q.K^T in INT8 on VNNI for heads of 64 or more" : "") +
                  " (SPINEL_ATTENTION=f32: off)";
    std::printf("kernels here   %s; sparse INT8 %s, f32 rows %s%s%s\n", isa.c_str(),
                cpu.sparse_int8_kernel.c_str(), cpu.f32_row_kernels.c_str(),
                cpu.amx_int8 && !cpu.dense_int8_on_sparse
                    ? "; AMX-INT8 for dense INT8 (amx_u8s8_dense; SPINEL_DENSE_S8=dnnl: oneDNN)"
                : cpu.dense_int8_on_sparse
                    ? "; dense INT8 on the sparse kernel too, every block kept (SPINEL_DENSE_S8=dnnl: oneDNN)"
                    : "",
                attn.c_str());
    std::string outs = "last_hidden_state";
    for (const GraphOutput& go : m->graph().outputs) outs += ", " + go.name;
    std::printf("outputs        %s; default pooling %s%s\n\n", outs.c_str(), c.default_pool.c_str(),
                c.normalize ? " + L2 normalize" : "");
    // The precision column as wide as its widest entry (" (sparse here)" and the like).
    int prec_w = 16;
    for (size_t i = 0; i < m->graph().ops.size(); ++i)
      prec_w = std::max(prec_w, static_cast<int>(op_precision(m->graph().ops[i], kernels[i]).size()));
    std::printf("%-4s %-10s %-40s %-*s %-30s %s\n", "#", "op", "name", prec_w, "precision", "kernel here",
                "detail");
    for (size_t i = 0; i < m->graph().ops.size(); ++i) {
      const Op& op = m->graph().ops[i];
      std::string name = op.name.size() > 40 ? "..." + op.name.substr(op.name.size() - 37) : op.name;
      std::string detail = op_detail(*m, op);
      // The cpu backend's Linear chain (its why says so): the output goes to
      // the next op in the kernel's own layout.
      if (kernels[i].why.find("output passed to the next Linear") != std::string::npos)
        detail += " => #" + std::to_string(i + 1) + " (chained)";
      // QKV written in head panels for the attention that reads it.
      if (kernels[i].why.find("output in head panels") != std::string::npos)
        detail += " => #" + std::to_string(i + 1) + " (head panels)";
      // QKV written as BF16 rows for the BF16 attention that reads it.
      if (kernels[i].why.find("output in BF16 for the BF16 attention") != std::string::npos)
        detail += " => #" + std::to_string(i + 1) + " (BF16)";
      // And K (and V) as BF16 pair words, multiplied in place by the attention.
      if (kernels[i].why.find("K as BF16 pair words for the BF16 attention") != std::string::npos)
        detail += " => #" + std::to_string(i + 1) + " (K pairs)";
      if (kernels[i].why.find("V as BF16 pair words for the BF16 attention") != std::string::npos)
        detail += " => #" + std::to_string(i + 1) + " (V pairs)";
      // The LayerNorm after it runs on its kernel's threads.
      if (kernels[i].why.find("the LayerNorm after it runs") != std::string::npos)
        detail += " => #" + std::to_string(i + 1) + " (LayerNorm on its threads)";
      // Its output quantized for the next Linear on its kernel's threads.
      if (kernels[i].why.find("output quantized per token for the next Linear") != std::string::npos)
        detail += " => #" + std::to_string(i + 1) + " (quantized for it)";
      // GELU as the coarse polynomial: the output only feeds 8-bit quantization.
      if (kernels[i].why.find("GELU to 2e-5") != std::string::npos) detail += " (GELU to 2e-5)";
      std::printf("%-4zu %-10s %-40s %-*s %-30s %s\n", i, op_kind_name(op.kind), name.c_str(), prec_w,
                  op_precision(op, kernels[i]).c_str(), kernels[i].kernel.c_str(), detail.c_str());
    }
    if (args.has("tensors")) {
      std::printf("\n%-56s %-5s %-14s %s\n", "tensor", "dtype", "shape", "bytes");
      for (const auto& t : m->tensors())
        std::printf("%-56s %-5s %-14s %llu\n", t.name.c_str(), dtype_name(t.dtype),
                    shape_str(t.shape).c_str(), (unsigned long long)t.nbytes);
    }
    return 0;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "spinel inspect: %s\n\n%s", e.message.c_str(), kHelp);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "spinel inspect: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace spinel::cli
