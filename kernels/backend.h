// The operator interface: an IR op (runtime/ir.h) is defined once, and each
// backend implements every op kind in two steps.
//
//   prepare(args) -> PreparedOp   once per model, backend and ISA: packing,
//                                 reordering, the kernel choice. The result is
//                                 shared read-only by every session of the
//                                 model, so run() must not modify it.
//   run(op, prepared, io, ctx)    per batch, on the session's buffers, inside
//                                 the session's Executor (its thread budget).
//
// Backends: "cpu" (kernels/cpu/: oneDNN, TBB, our kernels on every ISA path)
// and "reference" (kernels/reference/: plain loops, the definition the tests
// compare against); "cuda" (kernels/cuda/) joins them later. A session holds a
// Backend, an Executor and a Workspace and nothing device-specific.
//
// Buffers: every value is a row-major f32 matrix [rows, width] where rows is
// the batch's token count (Rows::Tokens) or its sequence count
// (Rows::Sequences). The output never aliases an input.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "runtime/ir.h"

namespace spinel {

// The weights of one op, resolved from the model (pointers into its mapping,
// valid for the model's lifetime). Slots follow slot:: in ir.h; unused ones
// are null.
struct OpWeights {
  std::array<const void*, slot::kCount> data{};
  std::array<const TensorInfo*, slot::kCount> info{};
  template <typename T>
  const T* get(int s) const {
    return static_cast<const T*>(data[static_cast<size_t>(s)]);
  }
};

struct PrepareArgs {
  const Op& op;
  const Graph& graph;
  const ModelConfig& config;
  OpWeights weights;
  int64_t in_width = 0;   // width of in0 (0 when the op has no input)
  int64_t out_width = 0;  // width of out
};

// What prepare() made for one op. Immutable after prepare.
class PreparedOp {
 public:
  virtual ~PreparedOp() = default;
  // The kernel this op runs, e.g. "spmm_u8s8_4x1_64x4_avx512vnni", "dnnl_matmul_f32".
  virtual std::string kernel() const = 0;
  // Why this kernel (one line, may be empty), e.g. "block sparsity 0.91 >= 0.70".
  virtual std::string why() const { return {}; }
  // Bytes this state holds beyond the model's own weights (packed copies).
  virtual size_t bytes() const { return 0; }
};

// The packed batch every op of one run sees.
struct BatchView {
  const int32_t* ids = nullptr;        // [tokens]
  const int32_t* type_ids = nullptr;   // [tokens]
  const int32_t* positions = nullptr;  // [tokens]
  int64_t tokens = 0;
  const int64_t* seq_offsets = nullptr;  // [num_seqs + 1]
  int64_t num_seqs = 0;
  int64_t max_len = 0;
};

// A session's grow-only scratch memory, by slot (each op kind uses its own
// slots). Pointers are valid until the next request of the same slot.
class Workspace {
 public:
  void* get(int slot_id, size_t bytes);
  template <typename T>
  T* get(int slot_id, size_t count) {
    return static_cast<T*>(get(slot_id, count * sizeof(T)));
  }
  size_t bytes() const;

 private:
  struct AlignedDelete {
    void operator()(uint8_t* p) const { ::operator delete[](p, std::align_val_t(64)); }
  };
  struct Block {
    std::unique_ptr<uint8_t[], AlignedDelete> mem;
    size_t size = 0;
  };
  std::vector<Block> blocks_;
};

struct OpIO {
  const float* in0 = nullptr;
  const float* in1 = nullptr;
  int64_t in_rows = 0;  // rows of in0 (and in1)
  float* out = nullptr;
  int64_t out_rows = 0;
  int64_t in_width = 0, out_width = 0;
};

struct RunContext {
  const BatchView& batch;
  Workspace& ws;
  int threads = 1;
};

// One op kind on one backend.
class OpImpl {
 public:
  virtual ~OpImpl() = default;
  virtual std::unique_ptr<PreparedOp> prepare(const PrepareArgs& args) const = 0;
  virtual void run(const Op& op, const PreparedOp& state, const OpIO& io, RunContext& ctx) const = 0;
};

// Runs a session's work with its thread budget (the cpu backend: a TBB arena
// and the OpenMP thread count oneDNN reads).
class Executor {
 public:
  virtual ~Executor() = default;
  virtual void execute(const std::function<void()>& fn) = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  // The implementation of `kind`, or null when this backend lacks it.
  virtual const OpImpl* op(OpKind kind) const = 0;
  // Distinguishes prepared states of one backend that must not be shared,
  // e.g. the cpu backend's active ISA level (a cap set after a model was
  // prepared gets its own preparation).
  virtual std::string variant() const { return {}; }
  virtual std::unique_ptr<Executor> make_executor(int threads) const = 0;
  // A line about the device: "cpu: avx2 (AMD EPYC ...)", for inspect and logs.
  virtual std::string describe() const { return name(); }
};

// The registered backends by name ("cpu", "reference"); null if unknown.
// The first call registers the built-in ones.
const Backend* find_backend(const std::string& name);
std::vector<std::string> backend_names();
// Registers a backend (kept for the process's lifetime). Names are unique.
void register_backend(std::unique_ptr<Backend> b);

// The built-in backends (defined in kernels/cpu and kernels/reference).
std::unique_ptr<Backend> make_cpu_backend();
std::unique_ptr<Backend> make_reference_backend();

}  // namespace spinel
