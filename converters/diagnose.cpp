#include "converters/diagnose.h"

#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <sstream>

#include "converters/onnx_tensors.h"
#include "models/registry.h"
#include "runtime/error.h"
#include "runtime/util/json.h"

namespace spinel::onnx_import {
namespace {

// The reasons are one line each; a few are enough to see what broke, and a
// reason quoting a long list of nodes is cut.
constexpr size_t kMaxProblems = 4;
constexpr size_t kMaxProblemChars = 300;

// ONNX Runtime's transformer optimizer fuses subgraphs into these contrib ops
// (onnxruntime/python/tools/transformers); any com.microsoft op means the same.
bool is_ort_fused(const onnx::NodeProto& n) {
  return n.domain() == "com.microsoft" || n.domain() == "com.microsoft.nchwc";
}

// Ops a quantized file holds (quantize_dynamic, quantize_static, QDQ).
bool is_quantized_op(const onnx::NodeProto& n) {
  static const char* const kOps[] = {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul",
                                     "QuantizeLinear", "DequantizeLinear", "ConvInteger",
                                     "QLinearConv", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
                                     "QGemm", "QAttention", "QEmbedLayerNormalization",
                                     "DynamicQuantizeLSTM"};
  for (const char* op : kOps)
    if (n.op_type() == op) return true;
  return false;
}

// The ops the encoder patterns are made of (bert_match, onnx_patterns).
bool is_pattern_op(const onnx::NodeProto& n) {
  static const char* const kOps[] = {
      "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Erf", "Tanh", "Exp", "Neg", "Sigmoid", "MatMul",
      "Gemm", "Gather", "Reshape", "Transpose", "Softmax", "Shape", "Unsqueeze", "Squeeze", "Concat",
      "Slice", "Cast", "Constant", "Identity", "LayerNormalization", "ReduceMean", "Expand", "Range",
      "Where", "Equal", "ConstantOfShape", "Less", "Not", "ReduceSum", "Clip", "Max"};
  if (!(n.domain().empty() || n.domain() == "ai.onnx")) return false;
  for (const char* op : kOps)
    if (n.op_type() == op) return true;
  return false;
}

std::string op_label(const onnx::NodeProto& n) {
  const bool std_domain = n.domain().empty() || n.domain() == "ai.onnx";
  return std_domain ? n.op_type() : n.domain() + "." + n.op_type();
}

// HF model_type -> the name people know it by.
std::string family_display(const std::string& model_type) {
  static const std::map<std::string, std::string> kNames = {
      {"roberta", "RoBERTa"},     {"xlm-roberta", "XLM-RoBERTa"}, {"camembert", "CamemBERT"},
      {"electra", "ELECTRA"},     {"deberta", "DeBERTa"},         {"deberta-v2", "DeBERTa-v2"},
      {"mpnet", "MPNet"},         {"albert", "ALBERT"},           {"xlnet", "XLNet"},
      {"longformer", "Longformer"}, {"bart", "BART"},             {"t5", "T5"},
      {"gpt2", "GPT-2"},          {"llama", "Llama"},             {"mistral", "Mistral"},
      {"nomic_bert", "NomicBERT"}, {"modernbert", "ModernBERT"},  {"bge-m3", "BGE-M3"},
      {"mobilebert", "MobileBERT"}, {"squeezebert", "SqueezeBERT"}, {"convbert", "ConvBERT"},
      {"funnel", "Funnel Transformer"}, {"ernie", "ERNIE"},       {"nezha", "NEZHA"},
      {"roformer", "RoFormer"},   {"megatron-bert", "Megatron-BERT"}, {"xlm", "XLM"},
      {"flaubert", "FlauBERT"},   {"layoutlm", "LayoutLM"},       {"distilroberta", "DistilRoBERTa"},
      {"bert", "BERT"},           {"distilbert", "DistilBERT"}};
  auto it = kNames.find(model_type);
  return it != kNames.end() ? it->second : "'" + model_type + "'";
}

std::string supported_families() {
  std::string s;
  for (const models::FamilyInfo& f : models::families()) s += (s.empty() ? "" : ", ") + std::string(f.display);
  return s;
}

// At most about n bytes of s: its beginning and its end (a recogniser's
// reason often ends with the conclusion, after a list of nodes).
std::string clip(const std::string& s, size_t n) {
  if (s.size() <= n) return s;
  auto boundary = [&](size_t i) {  // back to the start of a UTF-8 character
    while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
    return i;
  };
  const size_t head = boundary(n * 2 / 3);
  const size_t tail = boundary(s.size() - n / 3);
  return s.substr(0, head) + " ... " + s.substr(tail);
}

}  // namespace

std::optional<std::string> unsupported_family(const std::string& onnx_path) {
  const std::string path = model_directory(onnx_path) + "/config.json";
  struct stat st {};
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (1 << 22)) return std::nullopt;
  try {
    const json::Value cfg = json::parse_file(path);
    const json::Value* mt = cfg.find("model_type");
    if (!mt || !mt->is_string() || mt->str.empty()) return std::nullopt;
    if (models::find_family(mt->str)) return std::nullopt;
    return family_display(mt->str) + " is not supported yet (supported: " + supported_families() +
           "); config.json beside the model says model_type \"" + clip(mt->str, 64) + "\"";
  } catch (const std::exception&) {
    return std::nullopt;  // a hint only: a broken config.json is not the error being reported
  }
}

void reject_graph(const GraphIndex& g, const std::vector<int>& uncovered,
                  const std::vector<std::string>& problems, const std::string& onnx_path) {
  // What to do instead, when the cause is a known one.
  std::vector<std::string> fixes;
  if (auto fam = unsupported_family(onnx_path)) fixes.push_back(*fam);
  std::map<std::string, int> fused, quantized;
  for (int i = 0; i < g.num_nodes(); ++i) {
    const onnx::NodeProto& n = g.node(i);
    if (is_quantized_op(n))
      ++quantized[op_label(n)];
    else if (is_ort_fused(n))
      ++fused[op_label(n)];
  }
  auto list = [](const std::map<std::string, int>& m) {
    std::string s;
    for (const auto& [op, count] : m) s += (s.empty() ? "" : ", ") + op + " x" + std::to_string(count);
    return s;
  };
  if (!quantized.empty())
    fixes.push_back("this file is already quantized (" + list(quantized) +
                    "); convert the f32 export with --quant int8 instead");
  if (!fused.empty())
    fixes.push_back("this is an ONNX Runtime-optimized file (" + list(fused) +
                    "); convert the unoptimized export (the one given to onnxruntime.transformers.optimizer)");

  std::ostringstream os;
  os << "the graph is not an encoder spinel supports (" << supported_families() << ")";
  for (const std::string& f : fixes) os << "\n  " << f;

  if (!uncovered.empty()) {
    os << "\n  unsupported nodes (" << uncovered.size() << "): ";
    // Named first: ops no recogniser is built from (the likely culprits: a
    // stray node breaks the match of everything around it); then the rest;
    // Constants last (left over because what reads them was not recognised).
    // With a known cause, fewer names are enough.
    auto rank = [&](int n) {
      const onnx::NodeProto& node = g.node(n);
      if (node.op_type() == "Constant" || node.op_type() == "Identity") return 2;
      return is_pattern_op(node) ? 1 : 0;
    };
    std::vector<int> order(uncovered);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return rank(a) < rank(b); });
    const size_t named = std::min(order.size(), fixes.empty() ? kMaxNamedNodes : kMaxNamedNodes / 2);
    for (size_t i = 0; i < named; ++i) os << (i ? ", " : "") << g.describe(order[i]);
    if (order.size() > named) os << ", and " << order.size() - named << " more";
    // By op type, most frequent first, when there is more than one node.
    if (uncovered.size() > 1) {
      std::map<std::string, size_t> by_op;
      for (int n : uncovered) ++by_op[op_label(g.node(n))];
      std::vector<std::pair<std::string, size_t>> ops(by_op.begin(), by_op.end());
      std::stable_sort(ops.begin(), ops.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
      os << "\n  by op type: ";
      const size_t shown = std::min<size_t>(ops.size(), 12);
      for (size_t i = 0; i < shown; ++i) os << (i ? ", " : "") << ops[i].first << " x" << ops[i].second;
      if (ops.size() > shown) os << ", and " << ops.size() - shown << " more op types";
    }
  }
  // With a known cause the recognisers' reasons are noise: one is enough.
  const size_t max_problems = fixes.empty() ? kMaxProblems : 1;
  for (size_t i = 0; i < problems.size() && i < max_problems; ++i)
    os << "\n  - " << clip(problems[i], kMaxProblemChars);
  if (problems.size() > max_problems) os << "\n  - and " << problems.size() - max_problems << " more reasons";
  throw Error(os.str());
}

}  // namespace spinel::onnx_import
