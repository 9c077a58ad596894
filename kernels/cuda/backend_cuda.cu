// The cuda backend (built with -DSPINEL_CUDA=ON): every op kind of the
// operator interface on one CUDA device (device 0), with plain kernels of our
// own and cuBLAS for the FP32 matmul. Not yet run on a GPU by our CI (it has
// none): what CI checks is that this compiles and links, and that without a
// device the backend refuses with "no CUDA device: <reason>".
//
// Memory: weights are uploaded once per model in prepare() (the PreparedOp
// owns its device buffers); a session's CudaExecutor owns the activation
// arena, the scratch and the staged batch in device memory, one non-blocking
// stream, and pageable host copies of the results (to_host).
//
// Kernels and why:
//   Embedding(+LN), LayerNorm(+residual): one block per row, statistics in
//     double (as the reference), one pass to write.
//   Linear FP32: cublasSgemm (row-major Y = X W as column-major Y^T = W^T X^T,
//     FP32 compute, no TF32) then one epilogue kernel (bias, activation,
//     residual or the GEGLU gate). cuBLASLt's epilogues cover bias+GELU(erf)
//     but not tanh or the gate; one small kernel covers all forms alike.
//   Linear INT8 (dense and 4x1 block-sparse): the INT8 contract of
//     kernels/int8.h in plain kernels: per-token u8 quantization, exact int32
//     accumulation over the s8 weights [K, N], one fma to dequantize. The
//     sparse precision runs the same dense loop over its stored s8 weights
//     (the function is the same; the 4x1 structure is not exploited yet):
//     cuBLASLt's IMMA wants s8 x s8 with layouts (COL32) and cuSPARSE's BSR
//     int8 SpMM wants other block shapes; a plain kernel keeps the contract
//     exact and is simple enough to be right without a GPU to test on.
//   Attention: one block per (sequence, head, query row): scores in FP32 in
//     shared memory, softmax in FP32, ALiBi bias when the op has it.
//   Pool: one thread per (sequence, column), mean in double.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
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

// --- executor ---------------------------------------------------------------

class CudaExecutor : public Executor {
 public:
  CudaExecutor() : Executor(device_allocator()) {
    SPINEL_CU(cudaSetDevice(0));
    SPINEL_CU(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    const cublasStatus_t s = cublasCreate(&blas_);
    if (s != CUBLAS_STATUS_SUCCESS) {
      (void)cudaStreamDestroy(stream_);
      cublas_check(s, "cublasCreate");
    }
    cublas_check(cublasSetStream(blas_, stream_), "cublasSetStream");
    // FP32 products in FP32 (no TF32 down-conversion): the tolerances of
    // tests/unit/test_backend_ops.cpp assume float accumulation.
    cublas_check(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  }
  ~CudaExecutor() override {
    (void)cudaStreamSynchronize(stream_);
    device_free(staging_);
    (void)cublasDestroy(blas_);
    (void)cudaStreamDestroy(stream_);
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

 private:
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
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

// Dynamic per-token u8 quantization (ref::quantize_rows_u8), one block per row.
__global__ void quantize_rows_kernel(const float* x, int64_t K, uint8_t* xq, float* scale, int32_t* zp,
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
  uint8_t* q = xq + m * K;
  if (!finite || !(hi > lo)) {
    if (threadIdx.x == 0) {
      scale[m] = finite ? 1.f : __int_as_float(0x7fc00000);
      zp[m] = 0;
    }
    for (int64_t k = threadIdx.x; k < K; k += kThreads) q[k] = 0;
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
    q[k] = static_cast<uint8_t>(min(max(v, 0), 255));
  }
}

// Static quantization (calibrated scale and zero point), one block per row.
__global__ void quantize_rows_static_kernel(const float* x, int64_t K, float scale_in, int32_t zp_in,
                                            uint8_t* xq, float* scale, int32_t* zp, const float* mul) {
  __shared__ int nan_s;
  const int64_t m = blockIdx.x;
  if (threadIdx.x == 0) nan_s = 0;
  __syncthreads();
  const float inv = __fdiv_rn(1.f, scale_in);
  int nan = 0;
  for (int64_t k = threadIdx.x; k < K; k += kThreads) {
    const float q = __fadd_rn(rintf(__fmul_rn(scaled_in(x + m * K, mul, k), inv)), static_cast<float>(zp_in));
    if (q != q) {
      nan = 1;
      xq[m * K + k] = 0;
    } else {
      xq[m * K + k] = static_cast<uint8_t>(fminf(fmaxf(q, 0.f), 255.f));
    }
  }
  if (nan) atomicOr(&nan_s, 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    scale[m] = nan_s ? __int_as_float(0x7fc00000) : scale_in;
    zp[m] = zp_in;
  }
}

// The INT8 contract on dense s8 W [K, N]: one thread per (m, n).
__global__ void linear_u8s8_kernel(const uint8_t* xq, int64_t M, int64_t K, const float* xs, const int32_t* xz,
                                   const int8_t* W, const int32_t* wsum, int64_t N, const float* scale_w,
                                   const float* bias, int post_act, int gelu_erf, const float* residual,
                                   float* y) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= M * N) return;
  const int64_t m = idx / N, n = idx % N;
  const uint8_t* xr = xq + m * K;
  int32_t acc = 0;
  for (int64_t k = 0; k < K; ++k) acc += static_cast<int32_t>(xr[k]) * static_cast<int32_t>(W[k * N + n]);
  const int32_t corr = acc - xz[m] * wsum[n];
  float v = fmaf(static_cast<float>(corr), __fmul_rn(xs[m], scale_w[n]), bias ? bias[n] : 0.f);
  if (gelu_erf) v = static_cast<float>(act_d(v, 1));
  // GELU(tanh) and tanh come after the contract's epilogue, as on the other
  // backends, then the residual.
  if (post_act) v = static_cast<float>(act_d(v, post_act));
  if (residual) v = __fadd_rn(v, residual[idx]);
  y[idx] = v;
}

unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// --- ops ---------------------------------------------------------------------

struct CudaState : PreparedOp {
  const char* name;
  std::string why_;
  std::vector<std::unique_ptr<DeviceBuffer>> bufs;  // by slot (null when unused)
  std::unique_ptr<DeviceBuffer> wsum;               // INT8: sum_k W[k][n]
  std::unique_ptr<DeviceBuffer> slopes;             // ALiBi
  size_t bytes_ = 0;
  explicit CudaState(const char* n) : name(n), bufs(slot::kCount) {}
  std::string kernel() const override { return name; }
  std::string why() const override { return why_; }
  size_t bytes() const override { return bytes_; }
  template <typename T>
  const T* get(int s) const {
    const auto& b = bufs[static_cast<size_t>(s)];
    return b ? b->get<T>() : nullptr;
  }
};

// Uploads every weight slot the op has.
std::unique_ptr<CudaState> upload(const PrepareArgs& a, const char* name) {
  if (!probe().empty()) throw Error("the cuda backend cannot prepare: " + probe());
  SPINEL_CU(cudaSetDevice(0));
  auto st = std::make_unique<CudaState>(name);
  for (int s = 0; s < slot::kCount; ++s) {
    const void* d = a.weights.data[static_cast<size_t>(s)];
    const TensorInfo* t = a.weights.info[static_cast<size_t>(s)];
    if (!d || !t) continue;
    const size_t n = static_cast<size_t>(t->nbytes);
    st->bufs[static_cast<size_t>(s)] = std::make_unique<DeviceBuffer>(d, n);
    st->bytes_ += n;
  }
  return st;
}

enum : int { kQuantX = 0, kQuantScale = 1, kQuantZp = 2, kGemm = 3 };

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

class LinearOp : public OpImpl {
 public:
  std::unique_ptr<PreparedOp> prepare(const PrepareArgs& a) const override {
    const Op& op = a.op;
    if (op.precision == Precision::F32) return upload(a, "cublas_sgemm_f32+epilogue");
    auto st = upload(a, op.precision == Precision::S8Dense ? "cuda_u8s8_dense_loop"
                                                           : "cuda_u8s8_dense_loop(sparse weights)");
    if (op.precision == Precision::S8Sparse)
      st->why_ = "4x1 block sparsity not exploited on cuda yet: the s8 weights run dense";
    // wsum[n] = sum_k W[k][n], exact in int32.
    const int64_t K = a.in_width, N = linear_weight_cols(op, a.out_width);
    const int8_t* W = a.weights.get<int8_t>(slot::kWeight);
    if (!W) throw Error("cuda linear: op '" + op.name + "' has no weight");
    std::vector<int32_t> wsum(static_cast<size_t>(N), 0);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t n = 0; n < N; ++n) wsum[static_cast<size_t>(n)] += W[k * N + n];
    st->wsum = std::make_unique<DeviceBuffer>(wsum.data(), wsum.size() * sizeof(int32_t));
    st->bytes_ += wsum.size() * sizeof(int32_t);
    return st;
  }

  void run(const Op& op, const PreparedOp& ps, const OpIO& io, RunContext& ctx) const override {
    const auto& st = static_cast<const CudaState&>(ps);
    CudaExecutor& ex = cuda_exec(ctx);
    const int64_t T = io.in_rows, K = io.in_width;
    if (T == 0) return;
    const bool gated = op.gate != Gate::None;
    const int64_t N = linear_weight_cols(op, io.out_width);
    float* y = gated ? ctx.ws.get<float>(kGemm + 1, static_cast<size_t>(T * N)) : io.out;
    const float* residual = gated ? nullptr : io.in1;
    const float* bias = st.get<float>(slot::kBias);
    if (op.precision == Precision::F32) {
      // Row-major Y[T,N] = X[T,K] W[K,N] is column-major Y^T = W^T X^T.
      float* acc = ctx.ws.get<float>(kGemm, static_cast<size_t>(T * N));
      const float one = 1.f, zero = 0.f;
      cublas_check(cublasSgemm(ex.blas(), CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(T),
                               static_cast<int>(K), &one, st.get<float>(slot::kWeight), static_cast<int>(N),
                               io.in0, static_cast<int>(K), &zero, acc, static_cast<int>(N)),
                   "cublasSgemm");
      linear_epilogue_kernel<<<blocks_for(T * N), kThreads, 0, ex.stream()>>>(
          acc, bias, static_cast<int>(op.act), residual, T, N, y);
      check_launch("linear_epilogue_kernel");
    } else {
      uint8_t* xq = ctx.ws.get<uint8_t>(kQuantX, static_cast<size_t>(T * K));
      float* xs = ctx.ws.get<float>(kQuantScale, static_cast<size_t>(T));
      int32_t* xz = ctx.ws.get<int32_t>(kQuantZp, static_cast<size_t>(T));
      if (op.act_scale > 0.f)
        quantize_rows_static_kernel<<<static_cast<unsigned>(T), kThreads, 0, ex.stream()>>>(
            io.in0, K, op.act_scale, op.act_zp, xq, xs, xz, st.get<float>(slot::kInScale));
      else
        quantize_rows_kernel<<<static_cast<unsigned>(T), kThreads, 0, ex.stream()>>>(
            io.in0, K, xq, xs, xz, st.get<float>(slot::kInScale));
      check_launch("quantize_rows_kernel");
      const bool after = op.act == Activation::GeluTanh || op.act == Activation::Tanh;
      linear_u8s8_kernel<<<blocks_for(T * N), kThreads, 0, ex.stream()>>>(
          xq, T, K, xs, xz, st.get<int8_t>(slot::kWeight), st.wsum->get<int32_t>(), N,
          st.get<float>(slot::kWeightScale), bias, after ? static_cast<int>(op.act) : 0,
          op.act == Activation::GeluErf ? 1 : 0, residual, y);
      check_launch("linear_u8s8_kernel");
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
