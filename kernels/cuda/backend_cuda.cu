// The cuda backend (built with -DSPINEL_CUDA=ON): every op kind of the
// operator interface on one CUDA device (device 0), with plain kernels of our
// own, cuBLASLt for the dense Linears and a 4x1 block-sparse kernel of our own
// for the sparse ones. Not yet run on a GPU by our CI (it has none): what CI
// checks is that this compiles and links, and that without a device the
// backend refuses with "no CUDA device: <reason>".
//
// Memory: weights are uploaded once per model in prepare() (the PreparedOp
// owns its device buffers); a session's CudaExecutor owns the activation
// arena, the scratch and the staged batch in device memory, one non-blocking
// stream, its cuBLAS and cuBLASLt handles with the cuBLASLt plans it has
// looked up (per shape and token count), and pageable host copies of the
// results (to_host). cuBLASLt's workspace is a slot of the session's scratch.
//
// Kernels and why:
//   Embedding(+LN), LayerNorm(+residual): one block per row, statistics in
//     double (as the reference), one pass to write.
//   Linear FP32 ("cublaslt_f32+epilogue"): cublasLtMatmul (row-major
//     Y = X W as column-major Y^T = W^T X^T, CUBLAS_COMPUTE_32F: FP32 math,
//     no TF32), then one epilogue kernel (bias, activation, residual or the
//     GEGLU gate): cuBLASLt's epilogues cover bias+GELU(erf) but not tanh or
//     the gate, and one small kernel covers all forms alike. cublasSgemm runs
//     instead where cublasLtMatmulAlgoGetHeuristic returns no algorithm.
//   Linear INT8 dense ("cublaslt_s8s8s32+epilogue"): the INT8 contract of
//     kernels/int8.h with cuBLASLt's integer matmul (s8 x s8 -> s32). The
//     activations are u8, so the quantizer writes them shifted to s8 (x - 128,
//     an XOR of the top bit) and the epilogue adds 128 * wsum[n] back, exact in
//     int32: corr = acc_s8 + (128 - zp[m]) * wsum[n] = acc_u8 - zp[m] * wsum[n].
//     The weight is stored transposed, [N, K] (cuBLASLt's integer kernels want
//     A transposed and B not, the "TN" form), and those kernels want K and N
//     multiples of 4; other shapes, and a token count for which the heuristic
//     returns no algorithm, run the plain loop ("cuda_u8s8_dense_loop": one
//     thread per output, exact int32 accumulation).
//   Linear INT8 4x1 block-sparse ("cuda_spmm_u8s8_4x1_32x8"): our own kernel,
//     not cuSPARSE. The legacy bsrmm takes square blocks larger than 1x1 and
//     float/double/complex values only; for the generic cusparseSpMM's BSR
//     algorithm (CUSPARSE_SPMM_BSR_ALG1, row-major blocks) we found no
//     documented int8 x int8 -> int32 case on rectangular 4x1 blocks, its
//     int8 is signed (our activations are u8), and a library call we cannot
//     run here should not be one whose support we guess at. Our kernel also
//     applies the epilogue from its accumulators (no int32 [T, N] round trip
//     through memory). prepare() packs, per block-row (4 output channels), the
//     input channels of its nonzero blocks and their 4 weights (one char4); the
//     kernel runs one thread per (token, block-row) with 4 exact int32
//     accumulators, then the same epilogue as the dense paths. The
//     activations are quantized transposed, [K, tokens], so that the 32
//     threads of a warp (32 tokens of one block-row) read 32 adjacent bytes
//     and share the block-row's weights (a broadcast, and the same trip count).
//   Attention: one block per (sequence, head, query row): scores in FP32 in
//     shared memory, softmax in FP32, ALiBi bias when the op has it.
//   Pool: one thread per (sequence, column), mean in double.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/backend.h"
#include "runtime/error.h"
#include "runtime/ir.h"

namespace spinel {
namespace {

[[noreturn]] void cuda_fail(const char* what, cudaError_t e) {
  std::string msg = std::string("CUDA: ") + what + ": ";
  if (e == cudaErrorMemoryAllocation) msg += "out of device memory: ";
  if (e == cudaErrorLaunchFailure || e == cudaErrorIllegalAddress) msg += "kernel launch failed: ";
  msg += std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")";
  throw Error(msg);
}

#define SPINEL_CU(x)                             \
  do {                                           \
    const cudaError_t e_ = (x);                  \
    if (e_ != cudaSuccess) cuda_fail(#x, e_);    \
  } while (0)

// After every launch: a bad configuration or an earlier asynchronous fault.
void check_launch(const char* kernel) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) cuda_fail(kernel, e);
}

void cublas_check(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  std::string msg = std::string("cuBLAS: ") + what + ": status " + std::to_string(static_cast<int>(s));
  if (s == CUBLAS_STATUS_ALLOC_FAILED) msg += " (out of device memory)";
  if (s == CUBLAS_STATUS_EXECUTION_FAILED) msg += " (kernel launch failed)";
  throw Error(msg);
}

const char* or_unknown(const char* s) { return s ? s : "unknown"; }

void lt_check(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  std::string msg = std::string("cuBLASLt: ") + what + ": " + or_unknown(cublasLtGetStatusName(s)) +
                    " (status " + std::to_string(static_cast<int>(s)) + ": " +
                    or_unknown(cublasLtGetStatusString(s)) + ")";
  if (s == CUBLAS_STATUS_ALLOC_FAILED) msg += " (out of device memory)";
  if (s == CUBLAS_STATUS_EXECUTION_FAILED) msg += " (kernel launch failed)";
  throw Error(msg);
}

// The device probe, once per process: empty when device 0 is usable.
const std::string& probe() {
  static const std::string why = [] {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();  // clear the sticky error of the probe
      return std::string("no CUDA device: ") + cudaGetErrorString(e) + " (" + cudaGetErrorName(e) + ")";
    }
    if (n <= 0) return std::string("no CUDA device: cudaGetDeviceCount found none");
    return std::string();
  }();
  return why;
}

void* device_alloc(size_t bytes) {
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    cuda_fail(("cudaMalloc of " + std::to_string(bytes) + " bytes").c_str(), e);
  }
  return p;
}
void device_free(void* p) {
  if (p) (void)cudaFree(p);
}
Allocator device_allocator() {
  Allocator a;
  a.alloc = device_alloc;
  a.free = device_free;
  return a;
}

// A device copy of a host array, owned (PreparedOp weights).
struct DeviceBuffer {
  void* p = nullptr;
  size_t bytes = 0;
  DeviceBuffer() = default;
  DeviceBuffer(const void* host, size_t n) : bytes(n) {
    if (!host || n == 0) return;
    p = device_alloc(n);
    const cudaError_t e = cudaMemcpy(p, host, n, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
      device_free(p);
      p = nullptr;
      cuda_fail("cudaMemcpy of weights to the device", e);
    }
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { device_free(p); }
  template <typename T>
  const T* get() const {
    return static_cast<const T*>(p);
  }
};

// --- cuBLASLt ------------------------------------------------------------------

// Owns one of cuBLASLt's host-side objects (handle, descriptors).
template <typename T, cublasStatus_t (*Destroy)(T)>
class LtOwned {
 public:
  LtOwned() = default;
  LtOwned(const LtOwned&) = delete;
  LtOwned& operator=(const LtOwned&) = delete;
  LtOwned(LtOwned&& o) noexcept : p_(o.p_) { o.p_ = nullptr; }
  LtOwned& operator=(LtOwned&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = o.p_;
      o.p_ = nullptr;
    }
    return *this;
  }
  ~LtOwned() { reset(); }
  T get() const { return p_; }
  T* put() {
    reset();
    return &p_;
  }
  void reset() {
    if (p_) (void)Destroy(p_);
    p_ = nullptr;
  }

 private:
  T p_ = nullptr;
};
using LtHandle = LtOwned<cublasLtHandle_t, cublasLtDestroy>;
using LtDesc = LtOwned<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>;
using LtLayout = LtOwned<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>;
using LtPref = LtOwned<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>;

// One Linear product, row-major Y[T, N] = X[T, K] W, as cuBLASLt sees it
// (column-major): C = Y^T [N, T] (ld N), B = X^T [K, T] (ld K), and
//   F32: A = W as stored, [K, N] row-major = W^T [N, K] column-major (ld N), op N;
//   S8:  A = the weight stored transposed, Wt [N, K] row-major = [K, N]
//        column-major (ld K), op T (the "TN" form cuBLASLt's integer kernels
//        want); C is int32.
// The alignments (bytes, powers of two up to 256) of the A, B and C
// pointers go into the heuristic's preferences: an algorithm it returns
// then works on pointers aligned at least as much.
enum class LtKind : int { F32 = 0, S8 = 1 };
struct LtShape {
  LtKind kind = LtKind::F32;
  int64_t N = 0, T = 0, K = 0;
  uint32_t align_a = 256, align_b = 256, align_c = 256;
  bool operator<(const LtShape& o) const {
    return std::tie(kind, N, T, K, align_a, align_b, align_c) <
           std::tie(o.kind, o.N, o.T, o.K, o.align_a, o.align_b, o.align_c);
  }
};

// The descriptors and the algorithm of one LtShape; found is false when
// cublasLtMatmulAlgoGetHeuristic returned none (the caller falls back).
struct LtPlan {
  LtDesc desc;
  LtLayout a, b, c;
  bool found = false;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;  // bytes the algorithm needs
};

uint32_t alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al >>= 1;
  return al;
}

void lt_layout(LtLayout& l, cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld) {
  lt_check(cublasLtMatrixLayoutCreate(l.put(), type, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), ld),
           "cublasLtMatrixLayoutCreate");
}

LtPlan make_lt_plan(cublasLtHandle_t h, const LtShape& s, size_t max_workspace) {
  LtPlan p;
  const bool s8 = s.kind == LtKind::S8;
  lt_check(cublasLtMatmulDescCreate(p.desc.put(), s8 ? CUBLAS_COMPUTE_32I : CUBLAS_COMPUTE_32F,
                                    s8 ? CUDA_R_32I : CUDA_R_32F),
           "cublasLtMatmulDescCreate");
  const cublasOperation_t ta = s8 ? CUBLAS_OP_T : CUBLAS_OP_N, tb = CUBLAS_OP_N;
  lt_check(cublasLtMatmulDescSetAttribute(p.desc.get(), CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)),
           "cublasLtMatmulDescSetAttribute(TRANSA)");
  lt_check(cublasLtMatmulDescSetAttribute(p.desc.get(), CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)),
           "cublasLtMatmulDescSetAttribute(TRANSB)");
  if (s8)
    lt_layout(p.a, CUDA_R_8I, s.K, s.N, s.K);
  else
    lt_layout(p.a, CUDA_R_32F, s.N, s.K, s.N);
  lt_layout(p.b, s8 ? CUDA_R_8I : CUDA_R_32F, s.K, s.T, s.K);
  lt_layout(p.c, s8 ? CUDA_R_32I : CUDA_R_32F, s.N, s.T, s.N);

  LtPref pref;
  lt_check(cublasLtMatmulPreferenceCreate(pref.put()), "cublasLtMatmulPreferenceCreate");
  const uint64_t ws = max_workspace;
  lt_check(cublasLtMatmulPreferenceSetAttribute(pref.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)),
           "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)");
  const struct {
    cublasLtMatmulPreferenceAttributes_t attr;
    uint32_t bytes;
    const char* what;
  } aligns[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, s.align_a, "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT_A_BYTES)"},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, s.align_b, "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT_B_BYTES)"},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, s.align_c, "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT_C_BYTES)"},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, s.align_c, "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT_D_BYTES)"},
  };
  for (const auto& al : aligns)
    lt_check(cublasLtMatmulPreferenceSetAttribute(pref.get(), al.attr, &al.bytes, sizeof(al.bytes)), al.what);

  cublasLtMatmulHeuristicResult_t r{};
  int n = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(h, p.desc.get(), p.a.get(), p.b.get(), p.c.get(),
                                                           p.c.get(), pref.get(), 1, &r, &n);
  // NOT_SUPPORTED: no heuristic for this configuration (e.g. a device
  // without integer tensor cores); like no result, the caller falls back.
  if (st == CUBLAS_STATUS_NOT_SUPPORTED) return p;
  lt_check(st, "cublasLtMatmulAlgoGetHeuristic");
  if (n > 0 && r.state == CUBLAS_STATUS_SUCCESS && r.workspaceSize <= max_workspace) {
    p.found = true;
    p.algo = r.algo;
    p.workspace = r.workspaceSize;
  }
  return p;
}

// cuBLASLt's workspace limit: what NVIDIA recommends per device generation
// (32 MiB from Hopper on, 4 MiB before). Taken from the scratch only as far
// as the chosen algorithm needs it.
size_t lt_max_workspace(int cc_major) { return (cc_major >= 9 ? 32u : 4u) << 20; }

// At prepare time: whether cuBLASLt has an algorithm for an N x K Linear
// (at 128 tokens, the pointer alignments the run will have at worst), with
// a handle of its own (prepare() has no executor; a handle is cheap).
bool lt_has_algorithm(LtKind kind, int64_t N, int64_t K) {
  LtHandle h;
  lt_check(cublasLtCreate(h.put()), "cublasLtCreate");
  LtShape s;
  s.kind = kind;
  s.N = N;
  s.T = 128;
  s.K = K;
  // S8: every operand is a cudaMalloc'd buffer (weights, scratch slots).
  // F32: X is a value in the activation arena, aligned to its float only.
  s.align_b = kind == LtKind::S8 ? 256 : 4;
  return make_lt_plan(h.get(), s, lt_max_workspace(0)).found;
}

// --- executor ---------------------------------------------------------------

class CudaExecutor : public Executor {
 public:
  CudaExecutor() : Executor(device_allocator()) {
    SPINEL_CU(cudaSetDevice(0));
    try {
      SPINEL_CU(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
      cublas_check(cublasCreate(&blas_), "cublasCreate");
      cublas_check(cublasSetStream(blas_, stream_), "cublasSetStream");
      // FP32 products in FP32 (no TF32 down-conversion): the tolerances of
      // tests/unit/test_backend_ops.cpp assume float accumulation.
      cublas_check(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
      lt_check(cublasLtCreate(lt_.put()), "cublasLtCreate");
      int major = 0;
      SPINEL_CU(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
      lt_max_workspace_ = lt_max_workspace(major);
    } catch (...) {
      release();
      throw;
    }
  }
  ~CudaExecutor() override {
    (void)cudaStreamSynchronize(stream_);
    device_free(staging_);
    release();
  }
  void execute(const std::function<void()>& fn) override {
    fn();
    check_launch("a run's kernels");
  }
  bool host_memory() const override { return false; }
  size_t bytes() const override { return Executor::bytes() + staging_size_; }

  BatchView stage(const BatchView& h) override {
    const size_t T = static_cast<size_t>(h.tokens), S = static_cast<size_t>(h.num_seqs);
    const size_t i32 = (T * sizeof(int32_t) + 255) / 256 * 256;
    const size_t need = 3 * i32 + (S + 1) * sizeof(int64_t);
    if (staging_size_ < need) {
      SPINEL_CU(cudaStreamSynchronize(stream_));
      device_free(staging_);
      staging_ = nullptr;
      staging_size_ = 0;
      staging_ = device_alloc(need);
      staging_size_ = need;
    }
    uint8_t* base = static_cast<uint8_t*>(staging_);
    BatchView d = h;
    auto put = [&](const void* src, size_t off, size_t n) -> void* {
      if (!src || n == 0) return nullptr;
      SPINEL_CU(cudaMemcpyAsync(base + off, src, n, cudaMemcpyHostToDevice, stream_));
      return base + off;
    };
    d.ids = static_cast<const int32_t*>(put(h.ids, 0, T * sizeof(int32_t)));
    d.type_ids = static_cast<const int32_t*>(put(h.type_ids, i32, T * sizeof(int32_t)));
    d.positions = static_cast<const int32_t*>(put(h.positions, 2 * i32, T * sizeof(int32_t)));
    d.seq_offsets = static_cast<const int64_t*>(put(h.seq_offsets, 3 * i32, (S + 1) * sizeof(int64_t)));
    // Pageable sources: the copies above may still read them after return,
    // and the caller's vectors change on the next run.
    SPINEL_CU(cudaStreamSynchronize(stream_));
    return d;
  }
  void copy_from_host(void* dst, const void* src, size_t bytes) override {
    if (!bytes) return;
    SPINEL_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    SPINEL_CU(cudaStreamSynchronize(stream_));
  }
  void copy_to_host(void* dst, const void* src, size_t bytes) override {
    if (!bytes) return;
    SPINEL_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    SPINEL_CU(cudaStreamSynchronize(stream_));
  }
  const float* to_host(int slot, const float* p, size_t floats) override {
    if (slot < 0) throw Error("cuda executor: negative host slot");
    if (host_.size() <= static_cast<size_t>(slot)) host_.resize(static_cast<size_t>(slot) + 1);
    std::vector<float>& h = host_[static_cast<size_t>(slot)];
    h.resize(floats);
    copy_to_host(h.data(), p, floats * sizeof(float));
    return h.data();
  }
  void synchronize() override { SPINEL_CU(cudaStreamSynchronize(stream_)); }

  cudaStream_t stream() const { return stream_; }
  cublasHandle_t blas() const { return blas_; }
  cublasLtHandle_t lt() const { return lt_.get(); }

  // The cuBLASLt plan of a shape, looked up once per executor (the
  // heuristic's answer depends on the token count, so batches of new sizes
  // add plans; the cache is dropped when it grows past kMaxPlans).
  const LtPlan& lt_plan(const LtShape& s) {
    const auto it = plans_.find(s);
    if (it != plans_.end()) return it->second;
    if (plans_.size() >= kMaxPlans) plans_.clear();
    return plans_.emplace(s, make_lt_plan(lt_.get(), s, lt_max_workspace_)).first->second;
  }

 private:
  static constexpr size_t kMaxPlans = 4096;
  void release() noexcept {
    plans_.clear();
    lt_.reset();
    if (blas_) (void)cublasDestroy(blas_);
    blas_ = nullptr;
    if (stream_) (void)cudaStreamDestroy(stream_);
    stream_ = nullptr;
  }

  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  LtHandle lt_;
  size_t lt_max_workspace_ = 4u << 20;
  std::map<LtShape, LtPlan> plans_;
  void* staging_ = nullptr;
  size_t staging_size_ = 0;
  std::vector<std::vector<float>> host_;
};

CudaExecutor& cuda_exec(RunContext& ctx) {
  auto* e = dynamic_cast<CudaExecutor*>(ctx.exec);
  if (!e) throw Error("a cuda op was run outside a cuda executor (RunContext::exec)");
  return *e;
}

// --- device helpers -----------------------------------------------------------

constexpr int kThreads = 256;

__device__ double act_d(double v, int act) {
  switch (act) {
    case 1: return 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
    case 2: return 0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
    case 3: return tanh(v);
    default: return v;
  }
}

// Block-wide sum of a double (blockDim.x == kThreads).
__device__ double block_sum(double v, double* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (static_cast<int>(threadIdx.x) < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  const double r = sh[0];
  __syncthreads();
  return r;
}

// Row r of y = LayerNorm(v) where v is in `row` (cols floats, may be y).
__device__ void layernorm_row(const float* row, const float* gamma, const float* beta, float eps,
                              int64_t cols, float* y, double* sh) {
  double s = 0.0;
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) s += row[c];
  const double mean = block_sum(s, sh) / static_cast<double>(cols);
  double q = 0.0;
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
    const double d = row[c] - mean;
    q += d * d;
  }
  const double var = block_sum(q, sh) / static_cast<double>(cols);
  const double rstd = 1.0 / sqrt(var + static_cast<double>(eps));
  // Every thread has read its elements of `row` (block_sum syncs) before any
  // writes: y may be `row`.
  for (int64_t c = threadIdx.x; c < cols; c += kThreads)
    y[c] = static_cast<float>((row[c] - mean) * rstd * gamma[c] + beta[c]);
}

__global__ void embedding_kernel(const int32_t* ids, const int32_t* type_ids, const int32_t* positions,
                                 int64_t hidden, const float* word, const float* pos, const float* type,
                                 const float* gamma, const float* beta, float eps, float* out) {
  __shared__ double sh[kThreads];
  const int64_t t = blockIdx.x;
  float* y = out + t * hidden;
  for (int64_t c = threadIdx.x; c < hidden; c += kThreads) {
    float v = word[static_cast<int64_t>(ids[t]) * hidden + c];
    if (pos) v += pos[static_cast<int64_t>(positions ? positions[t] : t) * hidden + c];
    if (type) v += type[static_cast<int64_t>(type_ids ? type_ids[t] : 0) * hidden + c];
    y[c] = v;
  }
  __syncthreads();
  layernorm_row(y, gamma, beta, eps, hidden, y, sh);
}

__global__ void layernorm_kernel(const float* x, const float* residual, const float* gamma,
                                 const float* beta, float eps, int64_t cols, float* out) {
  __shared__ double sh[kThreads];
  const int64_t r = blockIdx.x;
  float* y = out + r * cols;
  // The sum in float as the reference does, then the statistics in double.
  for (int64_t c = threadIdx.x; c < cols; c += kThreads)
    y[c] = x[r * cols + c] + (residual ? residual[r * cols + c] : 0.0f);
  __syncthreads();
  layernorm_row(y, gamma, beta, eps, cols, y, sh);
}

// One block per (query row, head, sequence); scores for up to `max_len` keys
// in dynamic shared memory (floats).
__global__ void attention_kernel(const float* qkv, const int64_t* seq_offsets, int64_t num_heads,
                                 int64_t head_dim, float scale, const float* slopes, float* out) {
  extern __shared__ float p[];
  __shared__ float red[kThreads];
  const int64_t s = blockIdx.z, h = blockIdx.y, i = blockIdx.x;
  const int64_t first = seq_offsets[s], len = seq_offsets[s + 1] - first;
  if (i >= len) return;  // uniform per block
  const int64_t hidden = num_heads * head_dim, stride = 3 * hidden;
  const float* q = qkv + (first + i) * stride + h * head_dim;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < len; j += kThreads) {
    const float* k = qkv + (first + j) * stride + hidden + h * head_dim;
    float dot = 0.f;
    for (int64_t d = 0; d < head_dim; ++d) dot = fmaf(q[d], k[d], dot);
    float v = dot * scale;
    if (slopes) v -= slopes[h] * static_cast<float>(j > i ? j - i : i - j);
    p[j] = v;
    mx = fmaxf(mx, v);
  }
  red[threadIdx.x] = mx;
  __syncthreads();
  for (int st = kThreads / 2; st > 0; st >>= 1) {
    if (static_cast<int>(threadIdx.x) < st) red[threadIdx.x] = fmaxf(red[threadIdx.x], red[threadIdx.x + st]);
    __syncthreads();
  }
  mx = red[0];
  __syncthreads();
  float sum = 0.f;
  for (int64_t j = threadIdx.x; j < len; j += kThreads) {
    const float e = expf(p[j] - mx);
    p[j] = e;
    sum += e;
  }
  red[threadIdx.x] = sum;
  __syncthreads();
  for (int st = kThreads / 2; st > 0; st >>= 1) {
    if (static_cast<int>(threadIdx.x) < st) red[threadIdx.x] += red[threadIdx.x + st];
    __syncthreads();
  }
  const float inv = 1.f / red[0];
  // p[] is complete (the reductions synced).
  float* o = out + (first + i) * hidden + h * head_dim;
  for (int64_t d = threadIdx.x; d < head_dim; d += kThreads) {
    float acc = 0.f;
    for (int64_t j = 0; j < len; ++j) acc = fmaf(p[j], qkv[(first + j) * stride + 2 * hidden + h * head_dim + d], acc);
    o[d] = acc * inv;
  }
}

__global__ void pool_kernel(const float* x, const int64_t* seq_offsets, int64_t num_seqs, int64_t width,
                            int cls, float* out) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= num_seqs * width) return;
  const int64_t s = idx / width, j = idx % width;
  const int64_t b = seq_offsets[s], e = seq_offsets[s + 1];
  if (cls) {
    out[idx] = x[b * width + j];
    return;
  }
  double acc = 0.0;
  for (int64_t t = b; t < e; ++t) acc += x[t * width + j];
  out[idx] = static_cast<float>(acc / static_cast<double>(e - b));
}

// y[m, n] = act(acc[m, n] + bias[n]) + residual[m, n] (acc: the GEMM's output, [M, N]).
__global__ void linear_epilogue_kernel(const float* acc, const float* bias, int act, const float* residual,
                                       int64_t M, int64_t N, float* y) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= M * N) return;
  const int64_t n = idx % N;
  const double v = act_d(static_cast<double>(acc[idx]) + (bias ? bias[n] : 0.0), act);
  y[idx] = static_cast<float>(v) + (residual ? residual[idx] : 0.0f);
}

// The GEGLU gate: x [M, 2N] -> y [M, N] = gelu_erf(x[:, :N]) * x[:, N:] + residual.
__global__ void gate_kernel(const float* x, int64_t M, int64_t N, const float* residual, float* y) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= M * N) return;
  const int64_t r = idx / N, c = idx % N;
  const double a = x[r * 2 * N + c], g = x[r * 2 * N + N + c];
  y[idx] = static_cast<float>(act_d(a, 1) * g + (residual ? residual[idx] : 0.0f));
}

// x[m, k] times the Linear's input scale mul[k] (nullable), rounded once.
__device__ __forceinline__ float scaled_in(const float* r, const float* mul, int64_t k) {
  return mul ? __fmul_rn(r[k], mul[k]) : r[k];
}

// Where the quantizers write x[m, k]: xq[m * ld_m + k * ld_k], as u8, or
// XOR flip: flip 0x80 writes the s8 value x - 128 (cuBLASLt's s8 x s8), 0
// the u8 itself. Row-major is (K, 1); transposed, [K, M], is (1, M).
struct QuantOut {
  uint8_t* xq;
  int64_t ld_m, ld_k;
  uint8_t flip;
};

// Dynamic per-token u8 quantization (ref::quantize_rows_u8), one block per row.
__global__ void quantize_rows_kernel(const float* x, int64_t K, QuantOut o, float* scale, int32_t* zp,
                                     const float* mul) {
  __shared__ float lo_s[kThreads], hi_s[kThreads];
  __shared__ int fin_s[kThreads];
  const int64_t m = blockIdx.x;
  const float* r = x + m * K;
  float lo = 0.f, hi = 0.f;
  int finite = 1;
  for (int64_t k = threadIdx.x; k < K; k += kThreads) {
    const float v = scaled_in(r, mul, k);
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
    finite &= isfinite(v) ? 1 : 0;
  }
  lo_s[threadIdx.x] = lo;
  hi_s[threadIdx.x] = hi;
  fin_s[threadIdx.x] = finite;
  __syncthreads();
  for (int st = kThreads / 2; st > 0; st >>= 1) {
    if (static_cast<int>(threadIdx.x) < st) {
      lo_s[threadIdx.x] = fminf(lo_s[threadIdx.x], lo_s[threadIdx.x + st]);
      hi_s[threadIdx.x] = fmaxf(hi_s[threadIdx.x], hi_s[threadIdx.x + st]);
      fin_s[threadIdx.x] &= fin_s[threadIdx.x + st];
    }
    __syncthreads();
  }
  lo = lo_s[0];
  hi = hi_s[0];
  finite = fin_s[0];
  uint8_t* q = o.xq + m * o.ld_m;
  if (!finite || !(hi > lo)) {
    if (threadIdx.x == 0) {
      scale[m] = finite ? 1.f : __int_as_float(0x7fc00000);
      zp[m] = 0;
    }
    for (int64_t k = threadIdx.x; k < K; k += kThreads) q[k * o.ld_k] = o.flip;
    return;
  }
  const float s = __fdiv_rn(hi - lo, 255.f);
  const float inv = __fdiv_rn(1.f, s);
  const int32_t z = min(max(static_cast<int32_t>(rintf(-lo * inv)), 0), 255);
  if (threadIdx.x == 0) {
    scale[m] = s;
    zp[m] = z;
  }
  for (int64_t k = threadIdx.x; k < K; k += kThreads) {
    const int32_t v = static_cast<int32_t>(rintf(__fmul_rn(scaled_in(r, mul, k), inv))) + z;
    q[k * o.ld_k] = static_cast<uint8_t>(min(max(v, 0), 255)) ^ o.flip;
  }
}

// Static quantization (calibrated scale and zero point), one block per row.
__global__ void quantize_rows_static_kernel(const float* x, int64_t K, float scale_in, int32_t zp_in, QuantOut o,
                                            float* scale, int32_t* zp, const float* mul) {
  __shared__ int nan_s;
  const int64_t m = blockIdx.x;
  if (threadIdx.x == 0) nan_s = 0;
  __syncthreads();
  const float inv = __fdiv_rn(1.f, scale_in);
  uint8_t* q = o.xq + m * o.ld_m;
  int nan = 0;
  for (int64_t k = threadIdx.x; k < K; k += kThreads) {
    const float v = __fadd_rn(rintf(__fmul_rn(scaled_in(x + m * K, mul, k), inv)), static_cast<float>(zp_in));
    if (v != v) {
      nan = 1;
      q[k * o.ld_k] = o.flip;
    } else {
      q[k * o.ld_k] = static_cast<uint8_t>(fminf(fmaxf(v, 0.f), 255.f)) ^ o.flip;
    }
  }
  if (nan) atomicOr(&nan_s, 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    scale[m] = nan_s ? __int_as_float(0x7fc00000) : scale_in;
    zp[m] = zp_in;
  }
}

// The INT8 contract's epilogue (kernels/int8.h) of output [m, n], from the
// zero-point corrected accumulator corr = acc - zp[m] * wsum[n], shared by
// every INT8 path so that they agree bit for bit.
struct S8Epilogue {
  const float* xs;       // [M] per-token scale
  const int32_t* xz;     // [M] per-token zero point
  const int32_t* wsum;   // [N] sum_k W[k][n]
  const float* scale_w;  // [N]
  const float* bias;     // [N] or null
  int gelu_erf;          // GELU(erf): inside the contract, before the residual
  int post_act;          // GELU(tanh) or tanh (Activation values), after it as on the other backends
  const float* residual; // [M, N] or null
};

__device__ __forceinline__ float s8_output(const S8Epilogue& e, int32_t corr, int64_t m, int64_t n, int64_t N) {
  float v = fmaf(static_cast<float>(corr), __fmul_rn(e.xs[m], e.scale_w[n]), e.bias ? e.bias[n] : 0.f);
  if (e.gelu_erf) v = static_cast<float>(act_d(v, 1));
  if (e.post_act) v = static_cast<float>(act_d(v, e.post_act));
  if (e.residual) v = __fadd_rn(v, e.residual[m * N + n]);
  return v;
}

// The INT8 contract on dense s8 weights, one thread per (m, n): the loop
// kernel, for shapes and batches cuBLASLt does not take. W[k][n] is
// W[k * w_k + n * w_n]: (N, 1) for W [K, N] as stored, (1, K) for the
// transposed copy the cuBLASLt path keeps.
__global__ void linear_u8s8_kernel(const uint8_t* xq, int64_t M, int64_t K, const int8_t* W, int64_t w_k,
                                   int64_t w_n, int64_t N, S8Epilogue e, float* y) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= M * N) return;
  const int64_t m = idx / N, n = idx % N;
  const uint8_t* xr = xq + m * K;
  const int8_t* wc = W + n * w_n;
  int32_t acc = 0;
  for (int64_t k = 0; k < K; ++k) acc += static_cast<int32_t>(xr[k]) * static_cast<int32_t>(wc[k * w_k]);
  y[idx] = s8_output(e, acc - e.xz[m] * e.wsum[n], m, n, N);
}

// After cuBLASLt's s8 x s8 product of the shifted activations,
// acc[m, n] = sum_k (x[m][k] - 128) W[k][n] = acc_u8 - 128 wsum[n], so
// corr = acc + (128 - zp[m]) wsum[n] (exact in int32). One thread per output.
__global__ void s8_shifted_epilogue_kernel(const int32_t* acc, int64_t M, int64_t N, S8Epilogue e, float* y) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= M * N) return;
  const int64_t m = idx / N, n = idx % N;
  y[idx] = s8_output(e, acc[idx] + (128 - e.xz[m]) * e.wsum[n], m, n, N);
}

// The 4x1 block-sparse INT8 Linear. Block-row br (output channels 4br ..
// 4br+3; channels past N are padding, never written) has the nonzero blocks
// row_ptr[br] .. row_ptr[br+1]-1, block j at input channel kidx[j] with the
// 4 weights w[j] (.x is channel 4br). xT is the quantized input transposed,
// [K, M] u8. One thread per (token, block-row): lanes of a warp take 32
// consecutive tokens of one block-row (coalesced xT bytes, broadcast
// weights, one trip count); 4 exact int32 accumulators, then the epilogue.
constexpr int kSpTokens = 32, kSpRows = 8;
__global__ void spmm_u8s8_4x1_kernel(const uint8_t* xT, int64_t M, const int32_t* row_ptr, const int32_t* kidx,
                                     const char4* w, int64_t block_rows, int64_t N, S8Epilogue e, float* y) {
  const int64_t m = static_cast<int64_t>(blockIdx.x) * kSpTokens + threadIdx.x;
  const int64_t br = static_cast<int64_t>(blockIdx.y) * kSpRows + threadIdx.y;
  if (m >= M || br >= block_rows) return;
  int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  const int32_t end = row_ptr[br + 1];
  for (int32_t j = row_ptr[br]; j < end; ++j) {
    const int32_t x = xT[static_cast<int64_t>(kidx[j]) * M + m];
    const char4 b = w[j];
    a0 += x * static_cast<int32_t>(b.x);
    a1 += x * static_cast<int32_t>(b.y);
    a2 += x * static_cast<int32_t>(b.z);
    a3 += x * static_cast<int32_t>(b.w);
  }
  const int32_t acc[4] = {a0, a1, a2, a3};
  float* yr = y + m * N;
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    const int64_t n = 4 * br + c;
    if (n < N) yr[n] = s8_output(e, acc[c] - e.xz[m] * e.wsum[n], m, n, N);
  }
}

unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// --- ops ---------------------------------------------------------------------

struct CudaState : PreparedOp {
  std::string name;
  std::string why_;
  std::vector<std::unique_ptr<DeviceBuffer>> bufs;  // by slot (null when unused)
  std::unique_ptr<DeviceBuffer> slopes;             // ALiBi
  size_t bytes_ = 0;
  explicit CudaState(std::string n) : name(std::move(n)), bufs(slot::kCount) {}
  std::string kernel() const override { return name; }
  std::string why() const override { return why_; }
  size_t bytes() const override { return bytes_; }
  template <typename T>
  const T* get(int s) const {
    const auto& b = bufs[static_cast<size_t>(s)];
    return b ? b->get<T>() : nullptr;
  }
  // A device copy of `v`, counted in bytes().
  template <typename T>
  std::unique_ptr<DeviceBuffer> put(const std::vector<T>& v) {
    bytes_ += v.size() * sizeof(T);
    return std::make_unique<DeviceBuffer>(v.data(), v.size() * sizeof(T));
  }
};

void check_device() {
  if (!probe().empty()) throw Error("the cuda backend cannot prepare: " + probe());
  SPINEL_CU(cudaSetDevice(0));
}

// Uploads every weight slot the op has (but slot `skip`, when >= 0).
void upload_slots(const PrepareArgs& a, CudaState& st, int skip = -1) {
  for (int s = 0; s < slot::kCount; ++s) {
    const void* d = a.weights.data[static_cast<size_t>(s)];
    const TensorInfo* t = a.weights.info[static_cast<size_t>(s)];
    if (!d || !t || s == skip) continue;
    const size_t n = static_cast<size_t>(t->nbytes);
    st.bufs[static_cast<size_t>(s)] = std::make_unique<DeviceBuffer>(d, n);
    st.bytes_ += n;
  }
}

std::unique_ptr<CudaState> upload(const PrepareArgs& a, const char* name) {
  check_device();
  auto st = std::make_unique<CudaState>(name);
  upload_slots(a, *st);
  return st;
}

enum : int { kQuantX = 0, kQuantScale = 1, kQuantZp = 2, kGemm = 3, kGated = 4, kLtWork = 5 };

class EmbeddingOp : public OpImpl {
 public:
  std::unique_ptr<PreparedOp> prepare(const PrepareArgs& a) const override { return upload(a, "cuda_embedding_ln"); }
  void run(const Op& op, const PreparedOp& ps, const OpIO& io, RunContext& ctx) const override {
    const auto& st = static_cast<const CudaState&>(ps);
    const BatchView& b = ctx.batch;
    if (b.tokens == 0) return;
    embedding_kernel<<<static_cast<unsigned>(b.tokens), kThreads, 0, cuda_exec(ctx).stream()>>>(
        b.ids, b.type_ids, b.positions, io.out_width, st.get<float>(slot::kWord), st.get<float>(slot::kPosition),
        st.get<float>(slot::kTokenType), st.get<float>(slot::kEmbGamma), st.get<float>(slot::kEmbBeta), op.eps,
        io.out);
    check_launch("embedding_kernel");
  }
};

class LayerNormOp : public OpImpl {
 public:
  std::unique_ptr<PreparedOp> prepare(const PrepareArgs& a) const override { return upload(a, "cuda_layernorm"); }
  void run(const Op& op, const PreparedOp& ps, const OpIO& io, RunContext& ctx) const override {
    const auto& st = static_cast<const CudaState&>(ps);
    if (io.in_rows == 0) return;
    layernorm_kernel<<<static_cast<unsigned>(io.in_rows), kThreads, 0, cuda_exec(ctx).stream()>>>(
        io.in0, io.in1, st.get<float>(slot::kGamma), st.get<float>(slot::kBeta), op.eps, io.in_width, io.out);
    check_launch("layernorm_kernel");
  }
};

class AttentionOp : public OpImpl {
 public:
  std::unique_ptr<PreparedOp> prepare(const PrepareArgs& a) const override {
    auto st = upload(a, "cuda_attention_f32");
    if (a.op.alibi) {
      const std::vector<float> s = alibi_slopes(a.op.num_heads);
      st->slopes = std::make_unique<DeviceBuffer>(s.data(), s.size() * sizeof(float));
      st->why_ = "ALiBi bias";
    }
    return st;
  }
  void run(const Op& op, const PreparedOp& ps, const OpIO& io, RunContext& ctx) const override {
    const auto& st = static_cast<const CudaState&>(ps);
    const BatchView& b = ctx.batch;
    if (b.num_seqs == 0 || b.max_len == 0) return;
    const size_t shmem = static_cast<size_t>(b.max_len) * sizeof(float);
    // 48 KiB of shared memory per block without opting in: the scores plus
    // the kernel's reduction array (kThreads floats).
    if (shmem + kThreads * sizeof(float) > 48 * 1024)
      throw Error("cuda attention: a sequence of " + std::to_string(b.max_len) +
                  " tokens needs more than 48 KiB of shared memory for its scores");
    const dim3 grid(static_cast<unsigned>(b.max_len), static_cast<unsigned>(op.num_heads),
                    static_cast<unsigned>(b.num_seqs));
    attention_kernel<<<grid, kThreads, shmem, cuda_exec(ctx).stream()>>>(
        io.in0, b.seq_offsets, op.num_heads, io.out_width / op.num_heads, op.scale,
        st.slopes ? st.slopes->get<float>() : nullptr, io.out);
    check_launch("attention_kernel");
  }
};

class PoolOp : public OpImpl {
 public:
  std::unique_ptr<PreparedOp> prepare(const PrepareArgs& a) const override { return upload(a, "cuda_pool"); }
  void run(const Op& op, const PreparedOp&, const OpIO& io, RunContext& ctx) const override {
    const BatchView& b = ctx.batch;
    const int64_t n = b.num_seqs * io.in_width;
    if (n == 0) return;
    pool_kernel<<<blocks_for(n), kThreads, 0, cuda_exec(ctx).stream()>>>(
        io.in0, b.seq_offsets, b.num_seqs, io.in_width, op.pool == PoolKind::Cls ? 1 : 0, io.out);
    check_launch("pool_kernel");
  }
};

// How a prepared Linear runs (the kernel() names in the file comment).
enum class LinearPath { F32Lt, F32Sgemm, S8Lt, S8Loop, S8Sparse };

struct LinearState : CudaState {
  LinearPath path = LinearPath::F32Sgemm;
  int64_t K = 0, NW = 0;                 // weight rows and columns (NW = 2N when gated)
  std::unique_ptr<DeviceBuffer> wsum;    // INT8: [NW] sum_k W[k][n]
  std::unique_ptr<DeviceBuffer> wt;      // S8Lt: the weight transposed, [NW, K] s8
  // S8Sparse, the 4x1 blocks (see spmm_u8s8_4x1_kernel): row_ptr [block_rows
  // + 1], kidx [blocks] input channels, w [blocks] char4 weights.
  std::unique_ptr<DeviceBuffer> row_ptr, kidx, w;
  int64_t block_rows = 0;
  LinearState() : CudaState("") {}
};

void lt_matmul(CudaExecutor& ex, Workspace& ws, const LtPlan& p, const void* alpha, const void* A, const void* B,
               const void* beta, void* C) {
  void* work = p.workspace ? ws.get(kLtWork, p.workspace) : nullptr;
  lt_check(cublasLtMatmul(ex.lt(), p.desc.get(), alpha, A, p.a.get(), B, p.b.get(), beta, C, p.c.get(), C,
                          p.c.get(), &p.algo, work, p.workspace, ex.stream()),
           "cublasLtMatmul");
}

// Packs s8 W [K, NW] into 4x1 blocks per block-row (the last block-row is
// padded with zero channels when NW is not a multiple of 4) and uploads them.
void pack_sparse(const int8_t* W, int64_t K, int64_t NW, const std::string& op_name, LinearState& st) {
  const int64_t block_rows = (NW + 3) / 4;
  std::vector<int32_t> row_ptr(static_cast<size_t>(block_rows) + 1, 0), kidx;
  std::vector<int8_t> w;  // 4 per block: channels 4br .. 4br+3
  for (int64_t br = 0; br < block_rows; ++br) {
    for (int64_t k = 0; k < K; ++k) {
      int8_t b[4] = {0, 0, 0, 0};
      bool nonzero = false;
      for (int64_t c = 0; c < 4 && 4 * br + c < NW; ++c) {
        b[c] = W[k * NW + 4 * br + c];
        nonzero |= b[c] != 0;
      }
      if (!nonzero) continue;
      if (kidx.size() >= static_cast<size_t>(INT32_MAX))
        throw Error("cuda linear: op '" + op_name + "' has more than 2^31 nonzero 4x1 blocks");
      kidx.push_back(static_cast<int32_t>(k));
      w.insert(w.end(), b, b + 4);
    }
    row_ptr[static_cast<size_t>(br) + 1] = static_cast<int32_t>(kidx.size());
  }
  st.block_rows = block_rows;
  st.row_ptr = st.put(row_ptr);
  st.kidx = st.put(kidx);
  st.w = st.put(w);
  const double total = static_cast<double>(K) * static_cast<double>(block_rows);
  char buf[160];
  std::snprintf(buf, sizeof(buf), "4x1 block sparsity %.3f (%zu of %.0f blocks nonzero)",
                total > 0 ? 1.0 - static_cast<double>(kidx.size()) / total : 0.0, kidx.size(), total);
  st.why_ = std::string(buf) + "; our kernel (no documented cuSPARSE BSR path for u8 x s8 -> s32 on 4x1 blocks)";
}

class LinearOp : public OpImpl {
 public:
  std::unique_ptr<PreparedOp> prepare(const PrepareArgs& a) const override {
    check_device();
    const Op& op = a.op;
    const int64_t K = a.in_width, NW = linear_weight_cols(op, a.out_width);
    const std::string shape = "K=" + std::to_string(K) + " N=" + std::to_string(NW);
    auto st = std::make_unique<LinearState>();
    st->K = K;
    st->NW = NW;
    if (op.precision == Precision::F32) {
      upload_slots(a, *st);
      if (K > 0 && NW > 0 && lt_has_algorithm(LtKind::F32, NW, K)) {
        st->path = LinearPath::F32Lt;
        st->name = "cublaslt_f32+epilogue";
        st->why_ = "cuBLASLt FP32 (CUBLAS_COMPUTE_32F, no TF32); cublasSgemm for a batch it has no algorithm for";
      } else {
        st->path = LinearPath::F32Sgemm;
        st->name = "cublas_sgemm_f32+epilogue";
        st->why_ = "cublasLtMatmulAlgoGetHeuristic returned no FP32 algorithm for " + shape;
      }
      return st;
    }

    const int8_t* W = a.weights.get<int8_t>(slot::kWeight);
    if (!W) throw Error("cuda linear: op '" + op.name + "' has no weight");
    // wsum[n] = sum_k W[k][n], exact in int32.
    std::vector<int32_t> wsum(static_cast<size_t>(NW), 0);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t n = 0; n < NW; ++n) wsum[static_cast<size_t>(n)] += W[k * NW + n];
    st->wsum = st->put(wsum);

    if (op.precision == Precision::S8Sparse) {
      upload_slots(a, *st, slot::kWeight);  // the blocks replace the dense weight
      pack_sparse(W, K, NW, op.name, *st);
      st->path = LinearPath::S8Sparse;
      st->name = "cuda_spmm_u8s8_4x1_32x8";
      return st;
    }

    std::string why_not;
    if (K <= 0 || NW <= 0 || K % 4 != 0 || NW % 4 != 0)
      why_not = shape + ": cuBLASLt's int8 matmul needs K and N to be multiples of 4";
    else if (!lt_has_algorithm(LtKind::S8, NW, K))
      why_not = "cublasLtMatmulAlgoGetHeuristic returned no s8 x s8 -> s32 algorithm for " + shape;
    if (!why_not.empty()) {
      upload_slots(a, *st);
      st->path = LinearPath::S8Loop;
      st->name = "cuda_u8s8_dense_loop";
      st->why_ = why_not;
      return st;
    }
    upload_slots(a, *st, slot::kWeight);  // the transposed copy replaces it
    std::vector<int8_t> wt(static_cast<size_t>(K * NW));
    for (int64_t k = 0; k < K; ++k)
      for (int64_t n = 0; n < NW; ++n) wt[static_cast<size_t>(n * K + k)] = W[k * NW + n];
    st->wt = st->put(wt);
    st->path = LinearPath::S8Lt;
    st->name = "cublaslt_s8s8s32+epilogue";
    st->why_ =
        "cuBLASLt int8 (u8 activations shifted to s8, 128 * wsum folded back); cuda_u8s8_dense_loop for a batch "
        "it has no algorithm for";
    return st;
  }

  void run(const Op& op, const PreparedOp& ps, const OpIO& io, RunContext& ctx) const override {
    const auto& st = static_cast<const LinearState&>(ps);
    CudaExecutor& ex = cuda_exec(ctx);
    const int64_t T = io.in_rows, K = io.in_width;
    const int64_t NW = linear_weight_cols(op, io.out_width);
    if (K != st.K || NW != st.NW)
      throw Error("cuda linear: op '" + op.name + "' was prepared for K=" + std::to_string(st.K) + " N=" +
                  std::to_string(st.NW) + ", run with K=" + std::to_string(K) + " N=" + std::to_string(NW));
    if (T == 0 || NW == 0) return;
    const bool gated = op.gate != Gate::None;
    float* y = gated ? ctx.ws.get<float>(kGated, static_cast<size_t>(T * NW)) : io.out;
    const float* residual = gated ? nullptr : io.in1;
    const float* bias = st.get<float>(slot::kBias);

    if (st.path == LinearPath::F32Lt || st.path == LinearPath::F32Sgemm) {
      float* acc = ctx.ws.get<float>(kGemm, static_cast<size_t>(T * NW));
      const float* W = st.get<float>(slot::kWeight);
      const float one = 1.f, zero = 0.f;
      bool done = false;
      if (st.path == LinearPath::F32Lt) {
        LtShape sh;
        sh.kind = LtKind::F32;
        sh.N = NW;
        sh.T = T;
        sh.K = K;
        sh.align_a = alignment_of(W);
        sh.align_b = alignment_of(io.in0);
        sh.align_c = alignment_of(acc);
        const LtPlan& p = ex.lt_plan(sh);
        if (p.found) {
          lt_matmul(ex, ctx.ws, p, &one, W, io.in0, &zero, acc);
          done = true;
        }
      }
      if (!done)
        // Row-major Y[T,N] = X[T,K] W[K,N] is column-major Y^T = W^T X^T.
        cublas_check(cublasSgemm(ex.blas(), CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(NW), static_cast<int>(T),
                                 static_cast<int>(K), &one, W, static_cast<int>(NW), io.in0, static_cast<int>(K),
                                 &zero, acc, static_cast<int>(NW)),
                     "cublasSgemm");
      linear_epilogue_kernel<<<blocks_for(T * NW), kThreads, 0, ex.stream()>>>(
          acc, bias, static_cast<int>(op.act), residual, T, NW, y);
      check_launch("linear_epilogue_kernel");
    } else {
      uint8_t* xq = ctx.ws.get<uint8_t>(kQuantX, static_cast<size_t>(T * K));
      float* xs = ctx.ws.get<float>(kQuantScale, static_cast<size_t>(T));
      int32_t* xz = ctx.ws.get<int32_t>(kQuantZp, static_cast<size_t>(T));
      const LtPlan* plan = nullptr;
      int32_t* acc = nullptr;
      if (st.path == LinearPath::S8Lt) {
        acc = ctx.ws.get<int32_t>(kGemm, static_cast<size_t>(T * NW));
        LtShape sh;
        sh.kind = LtKind::S8;
        sh.N = NW;
        sh.T = T;
        sh.K = K;
        sh.align_a = alignment_of(st.wt->p);
        sh.align_b = alignment_of(xq);
        sh.align_c = alignment_of(acc);
        const LtPlan& p = ex.lt_plan(sh);
        if (p.found) plan = &p;
      }
      // cuBLASLt reads s8 (x - 128); the sparse kernel reads x transposed.
      QuantOut qo{xq, K, 1, 0};
      if (plan) qo.flip = 0x80;
      if (st.path == LinearPath::S8Sparse) {
        qo.ld_m = 1;
        qo.ld_k = T;
      }
      if (op.act_scale > 0.f)
        quantize_rows_static_kernel<<<static_cast<unsigned>(T), kThreads, 0, ex.stream()>>>(
            io.in0, K, op.act_scale, op.act_zp, qo, xs, xz, st.get<float>(slot::kInScale));
      else
        quantize_rows_kernel<<<static_cast<unsigned>(T), kThreads, 0, ex.stream()>>>(
            io.in0, K, qo, xs, xz, st.get<float>(slot::kInScale));
      check_launch("quantize_rows_kernel");

      const bool after = op.act == Activation::GeluTanh || op.act == Activation::Tanh;
      S8Epilogue e;
      e.xs = xs;
      e.xz = xz;
      e.wsum = st.wsum->get<int32_t>();
      e.scale_w = st.get<float>(slot::kWeightScale);
      e.bias = bias;
      e.gelu_erf = op.act == Activation::GeluErf ? 1 : 0;
      e.post_act = after ? static_cast<int>(op.act) : 0;
      e.residual = residual;
      if (plan) {
        const int32_t one = 1, zero = 0;
        lt_matmul(ex, ctx.ws, *plan, &one, st.wt->p, xq, &zero, acc);
        s8_shifted_epilogue_kernel<<<blocks_for(T * NW), kThreads, 0, ex.stream()>>>(acc, T, NW, e, y);
        check_launch("s8_shifted_epilogue_kernel");
      } else if (st.path == LinearPath::S8Sparse) {
        const int64_t gy = (st.block_rows + kSpRows - 1) / kSpRows;
        if (gy > 65535)
          throw Error("cuda linear: op '" + op.name + "' has " + std::to_string(st.block_rows) +
                      " block-rows, more than the sparse kernel's grid takes (" + std::to_string(65535 * kSpRows) + ")");
        const dim3 grid(static_cast<unsigned>((T + kSpTokens - 1) / kSpTokens), static_cast<unsigned>(gy));
        spmm_u8s8_4x1_kernel<<<grid, dim3(kSpTokens, kSpRows), 0, ex.stream()>>>(
            xq, T, st.row_ptr->get<int32_t>(), st.kidx->get<int32_t>(), st.w->get<char4>(), st.block_rows, NW, e,
            y);
        check_launch("spmm_u8s8_4x1_kernel");
      } else {
        // The loop: on W [K, NW] as stored (S8Loop), or on the transposed copy
        // (S8Lt for a batch cuBLASLt has no algorithm for).
        const bool t = st.path == LinearPath::S8Lt;
        const int8_t* W = t ? st.wt->get<int8_t>() : st.get<int8_t>(slot::kWeight);
        linear_u8s8_kernel<<<blocks_for(T * NW), kThreads, 0, ex.stream()>>>(
            xq, T, K, W, t ? 1 : NW, t ? K : 1, NW, e, y);
        check_launch("linear_u8s8_kernel");
      }
    }
    if (gated) {
      gate_kernel<<<blocks_for(T * io.out_width), kThreads, 0, ex.stream()>>>(y, T, io.out_width, io.in1, io.out);
      check_launch("gate_kernel");
    }
  }
};

class CudaBackend : public Backend {
 public:
  const char* name() const override { return "cuda"; }
  const OpImpl* op(OpKind kind) const override {
    switch (kind) {
      case OpKind::Embedding: return &embedding_;
      case OpKind::Linear: return &linear_;
      case OpKind::Attention: return &attention_;
      case OpKind::LayerNorm: return &layernorm_;
      case OpKind::Pool: return &pool_;
    }
    return nullptr;
  }
  std::unique_ptr<Executor> make_executor(int) const override {
    if (!probe().empty()) throw Error("the cuda backend cannot run: " + probe());
    return std::make_unique<CudaExecutor>();
  }
  std::string unavailable() const override { return probe(); }
  std::string describe() const override {
    if (!probe().empty()) return "cuda: " + probe();
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) return "cuda: device 0";
    return std::string("cuda: ") + p.name + " (sm_" + std::to_string(p.major) + std::to_string(p.minor) +
           ", " + std::to_string(p.totalGlobalMem >> 20) + " MiB)";
  }

 private:
  EmbeddingOp embedding_;
  LinearOp linear_;
  AttentionOp attention_;
  LayerNormOp layernorm_;
  PoolOp pool_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend() { return std::make_unique<CudaBackend>(); }

}  // namespace spinel
