#include "kernels/cpu/select.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <tbb/task_arena.h>

#include "kernels/cpu/isa.h"
#include "kernels/cpu/qgemm.h"

namespace spinel::kernels {

const char* linear_impl_name(LinearImpl impl) {
  switch (impl) {
    case LinearImpl::DnnlF32: return "dnnl-f32";
    case LinearImpl::DnnlU8S8: return "dnnl-u8s8";
    case LinearImpl::SparseU8S8: return "sparse-u8s8";
    case LinearImpl::SparseF32: return "sparse-f32";
  }
  return "?";
}

F32SparseMode f32_sparse_mode() {
  const char* v = std::getenv("SPINEL_F32_SPARSE");
  if (!v || !*v || !std::strcmp(v, "auto")) return F32SparseMode::Auto;
  if (!std::strcmp(v, "0") || !std::strcmp(v, "off")) return F32SparseMode::Off;
  if (!std::strcmp(v, "1") || !std::strcmp(v, "on")) return F32SparseMode::On;
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true))
    std::fprintf(stderr, "spinel: warning: SPINEL_F32_SPARSE=%s is not one of auto, 0/off, 1/on; "
                 "using auto\n", v);
  return F32SparseMode::Auto;
}

namespace {
bool amx_in_use() { return cpu_has_amx_int8() && active_isa() == Isa::Avx512Vnni; }
}  // namespace

const SparseCrossover& crossover_here() { return amx_in_use() ? kCrossoverAmx : kCrossoverVnni; }

namespace {

LinearChoice choose_f32(double block_sparsity, const float* W32, int64_t K, int64_t N) {
  LinearChoice c;
  char buf[200];
  const double s = block_sparsity >= 0 ? block_sparsity
                   : W32                ? block_sparsity_4x1_f32(W32, K, N)
                                        : -1;
  switch (f32_sparse_mode()) {
    case F32SparseMode::Off:
      c.impl = LinearImpl::DnnlF32;
      c.why = "f32 weights; SPINEL_F32_SPARSE=0 forces dense";
      return c;
    case F32SparseMode::On:
      c.impl = LinearImpl::SparseF32;
      std::snprintf(buf, sizeof buf, "f32 weights, block sparsity %.2f; SPINEL_F32_SPARSE=1 forces sparse",
                    s < 0 ? 0.0 : s);
      c.why = buf;
      return c;
    case F32SparseMode::Auto:
      break;
  }
  if (s < 0) {
    c.impl = LinearImpl::DnnlF32;
    c.why = "f32 weights, block sparsity unknown";
    return c;
  }
  const F32Crossover& x = kCrossoverF32;
  c.impl = s >= x.min_sparsity ? LinearImpl::SparseF32 : LinearImpl::DnnlF32;
  std::snprintf(buf, sizeof buf, "f32 weights, block sparsity %.2f %s %.2f, the crossover against %s",
                s, s >= x.min_sparsity ? ">=" : "<", x.min_sparsity, x.dense_kernel);
  c.why = buf;
  return c;
}

}  // namespace

LinearChoice choose_linear(Precision precision, double block_sparsity, const int8_t* W, int64_t K,
                           int64_t N, const float* W32) {
  LinearChoice c;
  char buf[160];
  switch (precision) {
    case Precision::F32:
      return choose_f32(block_sparsity, W32, K, N);
    case Precision::S8Dense:
      // (pack_s8_sparse takes K and N in multiples of 4.)
      if (dense_s8_on_sparse_kernel() && K > 0 && N > 0 && K % 4 == 0 && N % 4 == 0) {
        c.impl = LinearImpl::SparseU8S8;
        std::snprintf(buf, sizeof buf, "stored dense; %s kernel at %s, every block kept (%s)", "4x1",
                      isa_name(active_isa()),
                      dense_s8_mode() == DenseS8Mode::Sparse ? "SPINEL_DENSE_S8=sparse"
                                                             : "its unpacks are free on this CPU");
        c.why = buf;
        return c;
      }
      c.impl = LinearImpl::DnnlU8S8;
      c.why = "stored dense";
      return c;
    case Precision::S8Sparse:
      break;
  }
  if (!amx_in_use()) {
    c.impl = LinearImpl::SparseU8S8;
    std::snprintf(buf, sizeof buf, "stored block-sparse; %s kernel at %s", "4x1",
                  isa_name(active_isa()));
    c.why = buf;
    return c;
  }
  const double s = block_sparsity >= 0 ? block_sparsity : block_sparsity_4x1(W, K, N);
  const SparseCrossover& x = kCrossoverAmx;
  c.impl = s >= x.min_sparsity ? LinearImpl::SparseU8S8 : LinearImpl::DnnlU8S8;
  std::snprintf(buf, sizeof buf, "block sparsity %.2f %s %.2f, the crossover against %s", s,
                s >= x.min_sparsity ? ">=" : "<", x.min_sparsity, x.dense_kernel);
  c.why = buf;
  return c;
}

DenseS8Mode dense_s8_mode() {
  const char* v = std::getenv("SPINEL_DENSE_S8");
  if (!v || !*v || !std::strcmp(v, "auto")) return DenseS8Mode::Auto;
  if (!std::strcmp(v, "amx")) return DenseS8Mode::Amx;
  if (!std::strcmp(v, "dnnl")) return DenseS8Mode::Dnnl;
  if (!std::strcmp(v, "sparse")) return DenseS8Mode::Sparse;
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true))
    std::fprintf(stderr, "spinel: warning: SPINEL_DENSE_S8=%s is not one of auto, amx, dnnl, sparse; "
                 "using auto\n", v);
  return DenseS8Mode::Auto;
}

bool dense_s8_on_sparse_kernel() {
  switch (dense_s8_mode()) {
    case DenseS8Mode::Sparse: return true;
    case DenseS8Mode::Amx:
    case DenseS8Mode::Dnnl: return false;
    case DenseS8Mode::Auto: break;
  }
  return !amx_in_use() && active_isa() == Isa::Avx512Vnni && cpu_vnni_unpacks_free();
}

AttentionMode attention_mode() {
  const char* v = std::getenv("SPINEL_ATTENTION");
  if (!v || !*v || !std::strcmp(v, "auto")) return AttentionMode::Auto;
  if (!std::strcmp(v, "f32")) return AttentionMode::F32;
  if (!std::strcmp(v, "bf16")) return AttentionMode::Bf16;
  if (!std::strcmp(v, "s8qk")) return AttentionMode::S8Qk;
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true))
    std::fprintf(stderr, "spinel: warning: SPINEL_ATTENTION=%s is not one of auto, f32, bf16, s8qk; "
                 "using auto\n", v);
  return AttentionMode::Auto;
}

AttentionChoice choose_attention(bool int8_model, int64_t head_dim) {
  AttentionChoice c;
  const bool level = active_isa() == Isa::Avx512Vnni;
  const bool amx = level && cpu_has_amx_bf16();
  const bool dot = level && cpu_has_avx512_bf16();
  const AttentionMode mode = attention_mode();
  if (mode == AttentionMode::F32) {
    c.why = "SPINEL_ATTENTION=f32";
    return c;
  }
  const char* lacking = !level && (cpu_has_amx_bf16() || cpu_has_avx512_bf16())
                            ? "the ISA level is capped below avx512vnni"
                            : "this CPU has neither AMX-BF16 nor AVX512_BF16";
  if (mode == AttentionMode::S8Qk) {
    if (dot) {
      c.products = AttentionProducts::Avx512S8Qk;
      c.why = "INT8 Q.K^T on AVX-512 VNNI, P.V on AVX512_BF16: SPINEL_ATTENTION=s8qk";
    } else {
      static std::atomic<bool> warned{false};
      if (!warned.exchange(true))
        std::fprintf(stderr, "spinel: warning: SPINEL_ATTENTION=s8qk but %s; attention runs in FP32\n",
                     level ? "this CPU has no AVX512_BF16" : "the ISA level is capped below avx512vnni");
      c.why = std::string("FP32: ") + (level ? "this CPU has no AVX512_BF16" : "the ISA level is capped below avx512vnni");
    }
    return c;
  }
  if (mode == AttentionMode::Bf16) {
    if (amx) {
      c.products = AttentionProducts::AmxBf16;
      c.why = "AMX-BF16: SPINEL_ATTENTION=bf16";
    } else if (dot) {
      c.products = AttentionProducts::Avx512Bf16;
      c.why = "AVX512_BF16: SPINEL_ATTENTION=bf16";
    } else {
      static std::atomic<bool> warned{false};
      if (!warned.exchange(true))
        std::fprintf(stderr, "spinel: warning: SPINEL_ATTENTION=bf16 but %s; attention runs in FP32\n",
                     lacking);
      c.why = std::string("FP32: ") + lacking;
    }
    return c;
  }
  if (!int8_model) {
    c.why = "FP32: FP32 model (SPINEL_ATTENTION=bf16 for BF16)";
  } else if (amx) {
    c.products = AttentionProducts::AmxBf16;
    c.why = "AMX-BF16: INT8 model, CPU has AMX-BF16";
  } else if (dot && cpu_bf16_dot_full_rate() && head_dim >= kS8QkMinHeadDim) {
    c.products = AttentionProducts::Avx512S8Qk;
    c.why = "INT8 Q.K^T on AVX-512 VNNI, P.V on AVX512_BF16: INT8 model, no AMX-BF16, vdpbf16ps at full "
            "rate on this CPU, heads of " + std::to_string(head_dim) + " (>= " +
            std::to_string(kS8QkMinHeadDim) + ")";
  } else if (dot && cpu_bf16_dot_full_rate()) {
    c.products = AttentionProducts::Avx512Bf16;
    c.why = "AVX512_BF16: INT8 model, no AMX-BF16, vdpbf16ps at full rate on this CPU";
  } else if (dot) {
    c.why = "FP32: no AMX-BF16, and AVX512_BF16 is no faster than FMA on this CPU";
  } else {
    c.why = std::string("FP32: ") + lacking;
  }
  return c;
}

namespace {
// An auto/on/off switch read from the environment (unset means auto).
bool switch_enabled(const char* name, std::atomic<bool>& warned) {
  const char* v = std::getenv(name);
  if (!v || !*v || !std::strcmp(v, "auto") || !std::strcmp(v, "on") || !std::strcmp(v, "1"))
    return true;
  if (!std::strcmp(v, "off") || !std::strcmp(v, "0")) return false;
  if (!warned.exchange(true))
    std::fprintf(stderr, "spinel: warning: %s=%s is not one of auto, on, off; using auto\n", name, v);
  return true;
}

bool chain_enabled() {
  static std::atomic<bool> warned{false};
  return switch_enabled("SPINEL_LINEAR_CHAIN", warned);
}

bool ln_quant_enabled() {
  static std::atomic<bool> warned{false};
  return switch_enabled("SPINEL_LN_QUANT", warned);
}

bool kernel_quant_enabled() {
  static std::atomic<bool> warned{false};
  return switch_enabled("SPINEL_KERNEL_QUANT", warned);
}

bool qkv_heads_enabled() {
  static std::atomic<bool> warned{false};
  return switch_enabled("SPINEL_QKV_HEADS", warned);
}

bool ln_fuse_enabled() {
  static std::atomic<bool> warned{false};
  return switch_enabled("SPINEL_LN_FUSE", warned);
}

bool linear_quant_enabled() {
  static std::atomic<bool> warned{false};
  return switch_enabled("SPINEL_LINEAR_QUANT", warned);
}

bool panels_enabled() {
  static std::atomic<bool> warned{false};
  return switch_enabled("SPINEL_QKV_PANELS", warned);
}

// Op p's output is read by op p + 1 alone and is not a graph output.
bool read_only_by_next(const Graph& g, size_t p) {
  const int32_t out = g.ops[p].out;
  if (out < 0 || g.output == out) return false;
  for (const GraphOutput& o : g.outputs)
    if (o.value == out) return false;
  for (size_t i = 0; i < g.ops.size(); ++i)
    if (i != p + 1 && (g.ops[i].in0 == out || g.ops[i].in1 == out)) return false;
  return true;
}

// The layer runs the block-sparse INT8 kernel, judged from what the file
// stores (choose_linear measures W only when the sparsity is not stored and
// AMX is in use; then this says no) and, for dense layers, from the
// weight's shape in g.
bool runs_sparse_u8s8(const Graph& g, const Op& op) {
  if (op.kind != OpKind::Linear || op.precision == Precision::F32) return false;
  if (op.precision == Precision::S8Dense) {
    const auto width = [&g](int32_t v) {
      return v >= 0 && static_cast<size_t>(v) < g.values.size() ? g.values[static_cast<size_t>(v)].width : 0;
    };
    const int64_t K = width(op.in0), N = linear_weight_cols(op, width(op.out));
    return choose_linear(op.precision, -1, nullptr, K, N).impl == LinearImpl::SparseU8S8;
  }
  if (op.block_sparsity < 0 && amx_in_use()) return false;
  return choose_linear(op.precision, op.block_sparsity, nullptr, 0, 0).impl == LinearImpl::SparseU8S8;
}
}  // namespace

bool output_only_quantized(const Graph& g, size_t p) {
  if (p >= g.ops.size()) return false;
  if (const char* v = std::getenv("SPINEL_GELU_COARSE"); v && (!std::strcmp(v, "off") || !std::strcmp(v, "0")))
    return false;
  const int32_t out = g.ops[p].out;
  if (out < 0 || g.output == out) return false;
  for (const GraphOutput& o : g.outputs)
    if (o.value == out) return false;
  bool read = false;
  for (const Op& op : g.ops) {
    if (op.in1 == out) return false;
    if (op.in0 != out) continue;
    if (op.kind != OpKind::Linear || op.precision == Precision::F32) return false;
    read = true;
  }
  return read;
}

bool chain_linears(const Graph& g, size_t p) {
  if (p + 1 >= g.ops.size() || !spmm_u8s8_chain_available() || !chain_enabled()) return false;
  const Op& a = g.ops[p];
  const Op& b = g.ops[p + 1];
  if (!runs_sparse_u8s8(g, a) || !runs_sparse_u8s8(g, b)) return false;
  // One link at a time: a layer whose input already comes blocked cannot
  // pass its output on blocked too (its kernel call takes row-major u8).
  if (p > 0 && chain_linears(g, p - 1)) return false;
  if (a.gate != Gate::None || a.in1 >= 0 || a.out < 0) return false;
  if (a.act != Activation::None && a.act != Activation::GeluErf) return false;
  if (b.in0 != a.out || b.in1 == a.out || b.act_scale > 0.f) return false;
  return read_only_by_next(g, p);
}

namespace {
// The Attention ops that alone read Linear a's output as their qkv input
// (nothing else reads it, it is not a graph output, and they agree on the
// heads' width): that width and how many read it; {0, 0} otherwise.
struct QkvReaders {
  int64_t head_dim = 0;
  int count = 0;
};
QkvReaders attention_readers(const Graph& g, const Op& a) {
  if (a.out < 0 || g.output == a.out || static_cast<size_t>(a.out) >= g.values.size()) return {};
  for (const GraphOutput& o : g.outputs)
    if (o.value == a.out) return {};
  const int64_t width = g.values[static_cast<size_t>(a.out)].width;
  QkvReaders r;
  for (const Op& op : g.ops) {
    if (op.in1 == a.out) return {};
    if (op.in0 != a.out) continue;
    if (op.kind != OpKind::Attention || op.num_heads <= 0 || width % (3 * op.num_heads) != 0) return {};
    const int64_t hd = width / (3 * op.num_heads);
    if (r.count > 0 && hd != r.head_dim) return {};
    r.head_dim = hd;
    ++r.count;
  }
  return r;
}
}  // namespace

int64_t qkv_head_panel(const Graph& g, size_t p) {
  if (p >= g.ops.size() || !panels_enabled()) return 0;
  const Op& a = g.ops[p];
  if (!runs_sparse_u8s8(g, a)) return 0;
  if (a.gate != Gate::None || a.in1 >= 0 || a.act != Activation::None) return 0;
  if (p > 0 && chain_linears(g, p - 1)) return 0;  // its input then comes blocked, not its output as rows
  const QkvReaders r = attention_readers(g, a);
  return r.head_dim % 16 == 0 ? r.head_dim : 0;
}

int64_t qkv_bf16_rows(const Graph& g, size_t p, bool int8_model) {
  static std::atomic<bool> warned{false};
  if (p >= g.ops.size() || !switch_enabled("SPINEL_QKV_BF16", warned)) return 0;
  const Op& a = g.ops[p];
  if (a.kind != OpKind::Linear || a.precision == Precision::F32) return 0;
  if (a.gate != Gate::None || a.in1 >= 0 || a.act != Activation::None) return 0;
  // Only where the Linear's kernel writes BF16 (the backend asks its kernel
  // the same): else the Attention would say it reads BF16 it never gets.
  if (!(runs_sparse_u8s8(g, a) ? spmm_u8s8_bf16_available() : dense_u8s8_writes_bf16())) return 0;
  // One reader: it takes the Linear's word for the run (the backend's tag) and clears it.
  const QkvReaders r = attention_readers(g, a);
  if (r.count != 1) return 0;
  return attention_reads_bf16(choose_attention(int8_model, r.head_dim).products) ? r.head_dim : 0;
}

int64_t qkv_k_pairs(const Graph& g, size_t p, bool int8_model) {
  static std::atomic<bool> warned{false};
  if (!switch_enabled("SPINEL_QKV_K2", warned)) return 0;
  const int64_t hd = qkv_head_panel(g, p);
  // (qkv_bf16_rows says the attention runs one of the BF16 blocks.)
  return hd > 0 && hd % 32 == 0 && qkv_bf16_rows(g, p, int8_model) == hd ? hd : 0;
}

bool qkv_v_pairs(const Graph& g, size_t p, bool int8_model) {
  static std::atomic<bool> warned{false};
  const int64_t hd = qkv_k_pairs(g, p, int8_model);
  return hd > 0 && switch_enabled("SPINEL_QKV_V2", warned);
}

bool layernorm_quantizes_next(const Graph& g, size_t p) {
  if (p + 1 >= g.ops.size() || !ln_quant_enabled()) return false;
  const Op& ln = g.ops[p];
  const Op& lin = g.ops[p + 1];
  return ln.kind == OpKind::LayerNorm && ln.out >= 0 && lin.kind == OpKind::Linear &&
         lin.precision != Precision::F32 && lin.act_scale <= 0.f && lin.in0 == ln.out;
}

bool sparse_quantizes_in_kernel() { return kernel_quant_enabled(); }

bool linear_runs_layernorm(const Graph& g, size_t p) {
  if (p + 1 >= g.ops.size() || !ln_fuse_enabled()) return false;
  const Op& a = g.ops[p];
  const Op& ln = g.ops[p + 1];
  if (a.kind != OpKind::Linear || a.precision == Precision::F32 || a.gate != Gate::None || a.out < 0) return false;
  if (a.act != Activation::None && a.act != Activation::GeluErf) return false;
  if (ln.kind != OpKind::LayerNorm || ln.in0 != a.out || ln.in1 >= 0 || ln.out < 0) return false;
  return read_only_by_next(g, p);
}

bool linear_quantizes_next(const Graph& g, size_t p) {
  if (p + 1 >= g.ops.size() || !linear_quant_enabled()) return false;
  const Op& a = g.ops[p];
  const Op& b = g.ops[p + 1];
  if (a.kind != OpKind::Linear || a.precision == Precision::F32 || a.gate != Gate::None || a.out < 0) return false;
  if (a.act != Activation::None && a.act != Activation::GeluErf) return false;
  if (b.kind != OpKind::Linear || b.precision == Precision::F32 || b.act_scale > 0.f) return false;
  if (b.in0 != a.out || b.in1 == a.out || runs_sparse_u8s8(g, b)) return false;
  if (chain_linears(g, p) || (p > 0 && linear_quantizes_next(g, p - 1))) return false;
  return read_only_by_next(g, p);
}

int64_t qkv_head_pieces(int64_t N, int64_t panel, int64_t M) {
  if (M <= 0 || M > spmm_u8s8_token_block() || panel <= 0 || N % panel != 0 || (N / panel) % 3 != 0 || !qkv_heads_enabled()) return 0;
  const int64_t heads = N / panel / 3;
  const int64_t pieces = tbb::this_task_arena::max_concurrency();
  return pieces > 1 && heads % pieces == 0 ? pieces : 0;
}

}  // namespace spinel::kernels
