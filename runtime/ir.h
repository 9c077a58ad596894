// spinel's intermediate representation: a handful of fused transformer ops
// over packed token matrices. Every value is a row-major float matrix, either
// [total_tokens, width] (sequences packed back to back without padding;
// attention works per sequence, so masks do not exist here) or, after a Pool
// op, [num_sequences, width] (heads such as BERT's pooler).
//
// An op is defined once, here: a kind, its inputs/outputs, weight slots and
// typed attributes. Backends (kernels/backend.h) implement each kind; the
// .spnl file stores the attributes as tagged records (runtime/spnl.cpp).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace spinel {

enum class DType : uint32_t { F32 = 1, I8 = 2, I32 = 3, U8 = 4, I64 = 5 };
size_t dtype_size(DType t);
const char* dtype_name(DType t);

// A weight tensor stored in the .spnl data section (offset relative to it).
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t offset = 0;
  uint64_t nbytes = 0;
  uint64_t checksum = 0;  // XXH3-64 of the nbytes bytes (set by the writer)
  int64_t numel() const;
};

enum class OpKind : uint32_t { Embedding = 1, Linear = 2, Attention = 3, LayerNorm = 4, Pool = 5 };
constexpr uint32_t kNumOpKinds = 6;  // codes are 1 .. kNumOpKinds - 1
const char* op_kind_name(OpKind k);

enum class Activation : uint32_t { None = 0, GeluErf = 1, GeluTanh = 2, Tanh = 3 };
const char* activation_name(Activation a);

// A gated Linear (GLU family): the weight is [K, 2N] and the bias [2N]; with
// a = the first N columns of x W + b and g = the last N, out = f(a) * g, then
// the residual. Geglu: f = exact (erf) GELU (DNABERT-2's gated_layers). Other
// gated activations (SwiGLU, ReGLU, tanh GEGLU) are further values.
enum class Gate : uint32_t { None = 0, Geglu = 1 };
const char* gate_name(Gate g);

// ALiBi (Press et al.; DNABERT-2): per-head slopes for `heads` heads. For a
// power of two n, start = 2^(-2^-(log2 n - 3)) and slope_h = start^(h+1);
// otherwise the slopes of the closest smaller power of two c, followed by
// every other slope of 2c, the first n - c of them. The Attention op adds
// -slope_h * |j - i| to the scaled score of query i and key j.
std::vector<float> alibi_slopes(int heads);

// How a Linear computes. S8: weights s8 [K,N] symmetric per output channel
// (scale in slot kWeightScale), activations quantized to u8 per token at run
// time; S8Sparse runs the 4x1 block-sparse kernel, S8Dense a dense one (or the
// sparse one, every block kept, where kernels/cpu/select.h chooses it).
enum class Precision : uint32_t { F32 = 0, S8Dense = 1, S8Sparse = 2 };
const char* precision_name(Precision p);

// Pool: one row per sequence from its token rows.
enum class PoolKind : uint32_t { Cls = 0, Mean = 1 };
const char* pool_kind_name(PoolKind p);

// Weight slots, by op kind. Unused slots hold -1.
namespace slot {
// Embedding: word [V,H]; position [P,H] (optional); token type [T,H] (optional);
// LayerNorm gamma/beta [H] applied to the summed embeddings.
constexpr int kWord = 0, kPosition = 1, kTokenType = 2, kEmbGamma = 3, kEmbBeta = 4;
// Linear: weight [K,N] (y = x W + b, K = in features); bias [N] (optional);
// for S8 precisions the per-output-channel weight scale [N], and optionally the
// input scale [K] (f32, finite, > 0): the input quantized is x[m, k] * s[k]
// and the stored weight's row k is the model's divided by s[k] (so x W is
// unchanged): "smoothing" moves the range of outlier input channels into the
// weights (converters/quantize.h).
constexpr int kWeight = 0, kBias = 1, kWeightScale = 2, kInScale = 3;
// LayerNorm: gamma [H], beta [H].
constexpr int kGamma = 0, kBeta = 1;
constexpr int kCount = 5;
}  // namespace slot

struct Op {
  OpKind kind = OpKind::Linear;
  std::string name;  // where it came from (ONNX node names), for messages
  // Linear: in0 = x, in1 = residual added after the activation (or -1).
  // LayerNorm: in0 = x, in1 = residual added before normalising (or -1).
  // Attention: in0 = fused qkv [T, 3*H] laid out Q | K | V, heads major.
  // Embedding: no inputs (reads token ids, positions and token types).
  // Pool: in0 = token rows; out has one row per sequence.
  int32_t in0 = -1, in1 = -1;
  int32_t out = -1;
  std::array<int32_t, slot::kCount> w{-1, -1, -1, -1, -1};
  Activation act = Activation::None;
  // Linear: gated (weight, bias and weight scale are 2x the output width); act
  // is then None.
  Gate gate = Gate::None;
  Precision precision = Precision::F32;  // Linear
  // S8 Linear: calibrated static quantization of the input (scale > 0), or
  // per-token dynamic quantization at run time (scale = 0).
  float act_scale = 0.f;
  int32_t act_zp = 0;
  int32_t num_heads = 0;  // Attention
  bool alibi = false;     // Attention: ALiBi bias with alibi_slopes(num_heads)
  float eps = 0.f;        // LayerNorm, Embedding
  float scale = 0.f;      // Attention: multiplier of Q.K^T (1/sqrt(head_dim))
  PoolKind pool = PoolKind::Cls;  // Pool
  // Linear: fraction of all-zero 4x1 blocks of the stored weight (s8, or f32
  // for an F32 Linear), measured at convert time (-1: not recorded); the
  // kernel choice reads it.
  float block_sparsity = -1.f;
};

// Columns of a Linear's weight (and bias, weight scale) for an output width n.
inline int64_t linear_weight_cols(const Op& op, int64_t n) { return op.gate == Gate::None ? n : 2 * n; }

// What a value's rows are.
enum class Rows : uint32_t { Tokens = 0, Sequences = 1 };

struct Value {
  std::string name;
  int64_t width = 0;
  Rows rows = Rows::Tokens;
};

struct ModelConfig {
  std::string architecture = "bert";
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t intermediate_size = 0;
  int64_t max_position = 0;  // longest sequence the position table allows
  int64_t type_vocab_size = 0;
  float layer_norm_eps = 1e-12f;
  Activation hidden_act = Activation::GeluErf;
  std::string source;  // free text: producer, opset
  // The embedding a user gets without asking: "cls", "mean" or the name of a
  // per-sequence graph output (e.g. "pooler_output"); normalize = L2 after it.
  std::string default_pool = "mean";
  bool normalize = false;
};

// A named model output (ONNX output names: last_hidden_state, pooler_output).
struct GraphOutput {
  std::string name;
  int32_t value = -1;
};

struct Graph {
  std::vector<Value> values;
  std::vector<Op> ops;
  int32_t output = -1;  // value holding last_hidden_state
  // Further outputs besides last_hidden_state (per-sequence heads such as
  // pooler_output); names are unique and not "last_hidden_state".
  std::vector<GraphOutput> outputs;
  // Index of the output named `name` in `outputs`, or -1.
  int find_output(const std::string& name) const;
};

// Checks every size field and number (finite, in range); throws spinel::Error.
void validate_config(const ModelConfig& cfg);
// Checks the config, every op's value and weight indices (in range, computed
// before use, each value computed once, unused inputs absent), widths, weight
// shapes and numeric attributes; throws spinel::Error naming the op.
void validate_graph(const Graph& g, const std::vector<TensorInfo>& tensors, const ModelConfig& cfg);

}  // namespace spinel
