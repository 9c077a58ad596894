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
// compare against); "cuda" (kernels/cuda/, built with -DSPINEL_CUDA=ON). A
// session holds a Backend and an Executor and nothing device-specific: the
// Executor owns the session's memory (activation arena, scratch, the staged
// batch) in the backend's memory, and brings results back to the host. On a
// host-memory backend (cpu, reference) that costs nothing: the arena is host
// memory, staging and to_host return the pointers they were given.
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
  // The weights of any op of the graph, by index: for a fusion that reads a
  // neighbour's (the cpu backend's Linear chain applies the next Linear's
  // input scale as it writes).
  std::function<OpWeights(size_t)> weights_of;
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
  // Bytes of weights one run of the op reads (a Linear's packed or
  // referenced weights, the parts its kernel uses; 0 for ops without
  // weights): the session's slicing rule (SessionOptions::slice_tokens).
  virtual size_t run_weight_bytes() const { return 0; }
};

// The packed batch every op of one run sees: as staged by the session's
// Executor, so its arrays are in the backend's memory (host memory on cpu and
// reference; device memory on cuda). The counts are host values.
struct BatchView {
  const int32_t* ids = nullptr;        // [tokens]
  const int32_t* type_ids = nullptr;   // [tokens]
  const int32_t* positions = nullptr;  // [tokens]
  int64_t tokens = 0;
  const int64_t* seq_offsets = nullptr;  // [num_seqs + 1]
  int64_t num_seqs = 0;
  int64_t max_len = 0;
};

// How a Workspace (or an Executor's arena) gets memory: host memory by
// default, device memory on a device backend. free(nullptr) must be a no-op.
struct Allocator {
  void* (*alloc)(size_t bytes) = nullptr;  // 64-byte aligned (or more); throws on failure
  void (*free)(void* p) = nullptr;
};
Allocator host_allocator();

// A session's grow-only scratch memory, by slot (each op kind uses its own
// slots). Pointers are valid until the next request of the same slot.
class Workspace {
 public:
  Workspace() : Workspace(host_allocator()) {}
  explicit Workspace(Allocator a) : alloc_(a) {}
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  ~Workspace();
  void* get(int slot_id, size_t bytes);
  template <typename T>
  T* get(int slot_id, size_t count) {
    return static_cast<T*>(get(slot_id, count * sizeof(T)));
  }
  size_t bytes() const;

 private:
  struct Block {
    void* mem = nullptr;
    size_t size = 0;
  };
  Allocator alloc_;
  std::vector<Block> blocks_;
};

class Executor;

// An op's buffers, in the executor's memory (see Executor::host_memory).
struct OpIO {
  const float* in0 = nullptr;
  const float* in1 = nullptr;
  int64_t in_rows = 0;  // rows of in0 (and in1)
  float* out = nullptr;
  int64_t out_rows = 0;
  int64_t in_width = 0, out_width = 0;
  // The output of the graph's next op (null for the last): for a backend
  // whose op, as decided when the model was prepared, does the next op's
  // work as well (the cpu backend's Linear running the LayerNorm after it).
  float* next_out = nullptr;
};

// What ops of one run see: the batch as staged by the executor (in its
// memory), its scratch, and the executor itself (a device backend's ops get
// their stream from it).
struct RunContext {
  const BatchView& batch;
  Workspace& ws;
  int threads = 1;
  Executor* exec = nullptr;
  // Every op writes its output value, because the caller reads intermediate
  // values (a Linear observer). Otherwise a backend may pass a value that
  // only the next op reads in a layout of its own, without writing it (the
  // cpu backend's Linear chain).
  bool keep_values = false;
};

// One op kind on one backend.
class OpImpl {
 public:
  virtual ~OpImpl() = default;
  virtual std::unique_ptr<PreparedOp> prepare(const PrepareArgs& args) const = 0;
  virtual void run(const Op& op, const PreparedOp& state, const OpIO& io, RunContext& ctx) const = 0;
};

// Runs a session's work with its thread budget (the cpu backend: a TBB arena
// and the OpenMP thread count oneDNN reads) and owns the session's memory in
// the backend's memory space. The defaults are host memory with no copies,
// which is what the cpu and reference backends use; a device backend
// overrides the memory duties below (and host_memory()).
class Executor {
 public:
  Executor() : Executor(host_allocator()) {}
  explicit Executor(Allocator a) : alloc_(a), ws_(a) {}
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;
  virtual ~Executor();
  virtual void execute(const std::function<void()>& fn) = 0;

  // True when the pointers ops see (arena, scratch, staged batch) are host
  // memory that the caller may read directly.
  virtual bool host_memory() const { return true; }
  // The activation arena: at least `bytes`, grow-only, 64-byte aligned;
  // contents are not kept when it grows.
  void* arena(size_t bytes);
  size_t arena_capacity() const { return arena_size_; }
  // The session's scratch, in the same memory.
  Workspace& workspace() { return ws_; }
  // Bytes held by the arena, the scratch and any staging buffers.
  virtual size_t bytes() const { return arena_size_ + ws_.bytes(); }
  // The batch the ops of the next run see: on the host, `host` itself; on a
  // device, copies of its arrays in device memory (valid until the next call).
  virtual BatchView stage(const BatchView& host) { return host; }
  // Copies between host memory and this executor's memory (ordered with the
  // work of execute(); copy_to_host waits for it). Plain memcpy on the host.
  virtual void copy_from_host(void* dst, const void* src, size_t bytes);
  virtual void copy_to_host(void* dst, const void* src, size_t bytes);
  // A host-readable view of `floats` floats at `p` (executor memory) after a
  // run: `p` itself on the host; on a device, a copy in host buffer `slot`
  // (valid until the next to_host of the same slot).
  virtual const float* to_host(int slot, const float* p, size_t floats) { return p; }
  // Waits for the work submitted by execute() (a no-op on the host, where
  // execute() returns when the work is done).
  virtual void synchronize() {}

 private:
  Allocator alloc_;
  void* arena_ = nullptr;
  size_t arena_size_ = 0;
  Workspace ws_;
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
  // Empty when this backend can run here; else why not (e.g. "no CUDA
  // device: ..."). backend_or_fail refuses such a backend with this reason.
  virtual std::string unavailable() const { return {}; }
};

// The registered backends by name ("cpu", "reference", and "cuda" in a build
// with -DSPINEL_CUDA=ON); null if unknown. The first call registers the
// built-in ones.
const Backend* find_backend(const std::string& name);
// Why a backend name this build does not register is missing, when the name
// is a known one ("cuda" in a build without CUDA: "spinel was built without
// CUDA (configure with -DSPINEL_CUDA=ON)"); empty for other names.
std::string backend_missing_reason(const std::string& name);
std::vector<std::string> backend_names();
// Registers a backend (kept for the process's lifetime). Names are unique.
void register_backend(std::unique_ptr<Backend> b);

// The built-in backends (defined in kernels/cpu and kernels/reference).
std::unique_ptr<Backend> make_cpu_backend();
std::unique_ptr<Backend> make_reference_backend();
#ifdef SPINEL_HAVE_CUDA
std::unique_ptr<Backend> make_cuda_backend();  // kernels/cuda/
#endif

}  // namespace spinel
