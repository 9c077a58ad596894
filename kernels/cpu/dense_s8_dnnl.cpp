// DenseLinearU8S8: dense u8 x s8 -> int32 through oneDNN's matmul, then the
// INT8 epilogue of qgemm.h done here.
//
// Why int32 out and our own epilogue: the contract has a per-token scale and
// a per-token zero point; oneDNN 2.6 takes source zero points per tensor
// only, and its output scales per column only. The zero-point term
// zp[m] * wsum[n] is a rank-1 correction that no single post-op expresses, so
// oneDNN computes the raw accumulators and the epilogue (zero point, scales,
// bias, GELU, residual, requantize) runs right after, on the thread that
// computed them: TBB tasks over row ranges or column parts of W, each a
// single-threaded oneDNN call (dense_pool_tbb in parallel_util.h), or, with
// SPINEL_DENSE_POOL=omp, oneDNN's OpenMP threads, then the same threads in a
// region of ours.
//
// W is reordered once, at construction, into the layout oneDNN prefers at
// M = 128 (blocked, VNNI-friendly); primitives are created per M on first use
// and cached (bounded), and run with a thread-local user scratchpad so one
// object can serve concurrent sessions.
#include <omp.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "kernels/cpu/f32_isa.h"
#include "kernels/cpu/dnnl_engine.h"
#include "kernels/cpu/huge_slab.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/parallel_util.h"
#include "kernels/cpu/qgemm.h"
#include "kernels/cpu/select.h"

namespace spinel::kernels {

namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

dnnl::engine& engine() { return dnnl_engine(); }

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<void, FreeDeleter>;

Buffer alloc64(size_t n) {
  void* p = std::aligned_alloc(64, std::max<size_t>(64, (n + 63) / 64 * 64));
  if (!p) throw std::bad_alloc();
  return Buffer(p);
}

// Grows only. Slot 0: oneDNN scratchpad; 1: int32 accumulators; 2: a
// contiguous copy of a strided input; 3, 4: the two halves of a split input
// and the accumulators of the second half (see u8s8_exact_here); 5: the AMX
// kernel's padded rows.
void* thread_buffer(int slot, size_t bytes) {
  thread_local Buffer buf[6];
  thread_local size_t cap[6] = {0, 0, 0, 0, 0, 0};
  if (bytes > cap[slot]) {
    buf[slot] = alloc64(bytes);
    cap[slot] = bytes;
  }
  return buf[slot].get();
}

// Without VNNI, oneDNN's u8 x s8 kernels multiply with vpmaddubsw, whose
// int16 sums of two u8*s8 products saturate (255*127*2 > 32767): results go
// silently wrong for inputs that use the whole u8 range (seen on an AVX2-only
// AMD EPYC). With VNNI (or AMX) the products accumulate in int32 exactly.
bool u8s8_exact_here() {
  static const bool exact = [] {
    const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
    const auto vnni = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_vnni);
    return (isa & vnni) == vnni;
  }();
  return exact;
}

// Our AMX-INT8 kernel (dense_s8_amx.cpp) instead of oneDNN's matmul: where
// the CPU has AMX-INT8, the active level is avx512vnni, and SPINEL_DENSE_S8
// (select.h dense_s8_mode) is auto or "amx".
bool use_amx_kernel() {
  if (!cpu_has_amx_int8() || active_isa() != Isa::Avx512Vnni) return false;
  const DenseS8Mode m = dense_s8_mode();
  return m == DenseS8Mode::Auto || m == DenseS8Mode::Amx;
}

struct Primitive {
  dnnl::matmul matmul;
  bool packed;
  size_t scratch_bytes;
  std::string impl;  // oneDNN's name of the kernel it runs
};

// As for DenseLinearF32 (dense_linear_dnnl.cpp): one primitive with a
// run-time M per layer; fixed-M ones only where oneDNN has another kernel
// for them, and at most this many.
constexpr size_t kMaxPrimitives = 32;

void epilogue_rows_scalar(const int32_t* acc, int64_t ldacc, int64_t m0, int64_t rows, int64_t N,
                          const float* bias, const float* scale_w, const int32_t* wsum,
                          const float* x_scale, const int32_t* x_zp, const QEpilogue& ep, void* y,
                          int64_t ldy) {
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t m = m0 + i;
    for (int64_t n = 0; n < N; ++n) {
      const float v = qgemm_detail::epilogue_value(acc[i * ldacc + n], m, n, nullptr, bias,
                                                   scale_w, wsum, x_scale, x_zp, ep);
      if (ep.requantize)
        static_cast<uint8_t*>(y)[m * ldy + n] = qgemm_detail::requantize_value(v, ep);
      else
        static_cast<float*>(y)[m * ldy + n] = v;
    }
  }
}

}  // namespace

namespace {

// Columns [n0, n0 + N) of W as oneDNN multiplies them: the weights in its
// preferred layout and the primitives that read them.
struct Part {
  int64_t K = 0, N = 0;
  std::vector<int8_t> plain;  // [K, N], kept for M where the packed layout is refused
  memory::desc packed_md;
  Buffer packed;
  std::mutex mu;
  std::map<std::pair<int64_t, int64_t>, std::shared_ptr<const Primitive>> cache;
  DnnlArgsPerThread call_args;

  // The source's row stride is part of the primitive (a primitive created for
  // a contiguous source reads a strided one wrongly), hence the (M, ldx) key.
  dnnl::matmul::primitive_desc make_pd(int64_t M, int64_t ldx, const memory::desc& wmd) const {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const memory::desc src({M, K}, dt::u8, memory::dims{ldx, 1}), dst({M, N}, dt::s32, memory::dims{N, 1});
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wmd, dst), attr, engine());
  }

  std::shared_ptr<const Primitive> runtime;  // M = DNNL_RUNTIME_DIM_VAL, contiguous source
  bool fixed_differs = false;

  std::shared_ptr<const Primitive> create(int64_t M, int64_t ldx) const {
    if (packed) {
      try {
        auto pd = make_pd(M, ldx, packed_md);
        return std::make_shared<Primitive>(
            Primitive{dnnl::matmul(pd), true, pd.scratchpad_desc().get_size(), pd.impl_info_str()});
      } catch (const dnnl::error&) {
        // This M has no implementation for the packed layout: use W as given.
      }
    }
    auto pd = make_pd(M, ldx, memory::desc({K, N}, dt::s8, tag::ab));
    return std::make_shared<Primitive>(
        Primitive{dnnl::matmul(pd), false, pd.scratchpad_desc().get_size(), pd.impl_info_str()});
  }

  void make_runtime_primitive() {
    try {
      runtime = create(DNNL_RUNTIME_DIM_VAL, K);
      // On oneDNN's reference loops: refused (dnnl_engine.h; the FP32
      // Linear's in-place residual ran on them, dense_linear_dnnl.cpp).
      if (dnnl_reference_impl(runtime->impl)) runtime = nullptr;
    } catch (const dnnl::error&) {
      // Refused: fixed-M primitives only.
    }
    fixed_differs = !runtime || create(128, K)->impl != runtime->impl;
  }

  std::shared_ptr<const Primitive> get(int64_t M, int64_t ldx) {
    if (runtime && ldx == K && !fixed_differs) return runtime;
    const auto key = std::make_pair(M, ldx);
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = cache.find(key);
      if (it != cache.end()) return it->second;
      if (runtime && ldx == K && cache.size() >= kMaxPrimitives) return runtime;
    }
    auto p = create(M, ldx);
    std::lock_guard<std::mutex> lock(mu);
    if (cache.size() >= kMaxPrimitives && !cache.count(key)) cache.erase(cache.begin());
    return cache.emplace(key, std::move(p)).first->second;
  }

  // acc [M, N] int32 (row stride N).
  void matmul(const uint8_t* x, int64_t M, int64_t ldx, int32_t* acc) {
    if (ldx != K) {
      // oneDNN 2.6 runs a strided u8 source through its reference matmul
      // (measured ~100x slower); a contiguous copy costs O(M K).
      uint8_t* xc = static_cast<uint8_t*>(thread_buffer(2, static_cast<size_t>(M * K)));
      for (int64_t m = 0; m < M; ++m) std::memcpy(xc + m * K, x + m * ldx, K);
      x = xc;
      ldx = K;
    }
    if (!u8s8_exact_here()) {
      // x = 128 hi + lo with hi in {0, 1} and lo in [0, 127]: two products
      // of at most 2 * 127 * 127 per pair, which int16 holds; then combine.
      const size_t n = static_cast<size_t>(M * K);
      uint8_t* hi = static_cast<uint8_t*>(thread_buffer(3, 2 * n));
      uint8_t* lo = hi + n;
      for (int64_t m = 0; m < M; ++m)
        for (int64_t k = 0; k < K; ++k) {
          const uint8_t v = x[m * ldx + k];
          hi[m * K + k] = v >> 7;
          lo[m * K + k] = v & 127;
        }
      int32_t* acc_lo = static_cast<int32_t*>(thread_buffer(4, sizeof(int32_t) * M * N));
      matmul_once(hi, M, K, acc);
      matmul_once(lo, M, K, acc_lo);
      for (int64_t i = 0; i < M * N; ++i) acc[i] = acc[i] * 128 + acc_lo[i];
      return;
    }
    matmul_once(x, M, ldx, acc);
  }

  void matmul_once(const uint8_t* x, int64_t M, int64_t ldx, int32_t* acc) {
    const auto prim = get(M, ldx);
    DnnlArgs& a = call_args.local();
    a.set(DNNL_ARG_SRC, memory::desc({M, K}, dt::u8, memory::dims{ldx, 1}), x);
    a.set(DNNL_ARG_DST, memory::desc({M, N}, dt::s32, tag::ab), acc);
    if (prim->packed)
      a.set(DNNL_ARG_WEIGHTS, packed_md, packed.get());
    else
      a.set(DNNL_ARG_WEIGHTS, memory::desc({K, N}, dt::s8, tag::ab), plain.data());
    if (prim->scratch_bytes > 0)
      a.set(DNNL_ARG_SCRATCHPAD, memory::desc({static_cast<memory::dim>(prim->scratch_bytes)}, dt::u8, tag::a),
            thread_buffer(0, prim->scratch_bytes));
    a.execute(prim->matmul);
  }

  // Columns [n0, n0 + cols) of W [K, ldw].
  Part(const int8_t* W, int64_t ldw, int64_t K_, int64_t n0, int64_t cols) : K(K_), N(cols) {
    plain.resize(static_cast<size_t>(K * N));
    for (int64_t k = 0; k < K; ++k) std::memcpy(plain.data() + k * N, W + k * ldw + n0, static_cast<size_t>(N));
    const auto pd = make_pd(128, K, memory::desc({K, N}, dt::s8, tag::any));
    const memory::desc plain_md({K, N}, dt::s8, tag::ab);
    if (!(pd.weights_desc() == plain_md)) {
      packed_md = pd.weights_desc();
      packed = alloc64(packed_md.get_size());
      dnnl_reorder(plain_md, plain.data(), packed_md, packed.get());
    }
    make_runtime_primitive();
  }
};

}  // namespace

struct DenseLinearU8S8::Impl {
  int64_t K = 0, N = 0;
  SlabBuffer amx;  // W packed for dense_s8_amx.cpp (then no oneDNN state at all)
  std::vector<int32_t> wsum;
  std::vector<float> scale_w;
  const float* bias = nullptr;
  // The matmuls run as single-threaded oneDNN calls in TBB tasks (see
  // dense_pool_tbb), every primitive made for one thread; else on oneDNN's
  // OpenMP threads, one part.
  bool on_tbb = false;
  int split = 0;  // dense_split_forced()
  std::vector<std::unique_ptr<Part>> parts;
  std::vector<int64_t> part_n0;  // first column of each part
};

DenseLinearU8S8::DenseLinearU8S8(const int8_t* W, int64_t K, int64_t N, const float* scale_w,
                                 const float* bias)
    : impl_(std::make_unique<Impl>()), K_(K), N_(N) {
  if (!W || !scale_w || K <= 0 || N <= 0)
    throw std::invalid_argument("DenseLinearU8S8: bad weight [K=" + std::to_string(K) +
                                ", N=" + std::to_string(N) + "] or null pointer");
  Impl& im = *impl_;
  im.K = K;
  im.N = N;
  im.bias = bias;
  im.scale_w.assign(scale_w, scale_w + N);
  im.wsum.assign(N, 0);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) im.wsum[n] += W[k * N + n];
  if (use_amx_kernel()) {
    im.amx = SlabBuffer(slab_alloc(static_cast<size_t>(qgemm_detail::amx_s8_packed_bytes(K, N))));
    qgemm_detail::amx_s8_pack(W, K, N, static_cast<int8_t*>(im.amx.get()));
    return;
  }
  im.on_tbb = dense_pool_tbb(true);
  im.split = dense_split_forced();
  std::unique_ptr<OneOmpThread> one;  // primitives made here run in one-thread tasks
  if (im.on_tbb) one = std::make_unique<OneOmpThread>();
  const int64_t P = im.on_tbb ? dense_column_parts(N) : 1;
  try {
    for (int64_t p = 0; p < P; ++p) {
      const int64_t n0 = N * p / P, n1 = N * (p + 1) / P;
      im.parts.push_back(std::make_unique<Part>(W, N, K, n0, n1 - n0));
      im.part_n0.push_back(n0);
    }
  } catch (const dnnl::error& e) {
    throw std::runtime_error(std::string("DenseLinearU8S8: oneDNN setup failed: ") + e.what());
  }
}

DenseLinearU8S8::~DenseLinearU8S8() = default;

const char* DenseLinearU8S8::kernel_name() const {
  return impl_->amx ? "amx_u8s8_dense" : "dnnl_matmul_u8s8";
}

namespace {
// The AMX kernel over the caller's TBB arena: one contiguous range of column
// panels per thread.
void run_amx(const qgemm_detail::AmxS8Args& a) {
  const int64_t panels = qgemm_detail::amx_s8_panels(a.N);
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(tbb::this_task_arena::max_concurrency(), panels));
  const size_t pad = static_cast<size_t>(qgemm_detail::amx_s8_pad_bytes(a.M, a.K, a.x, a.ldx));
  note_pool(Pool::Tbb);
  auto part = [&](int64_t t) {
    const int64_t p0 = panels * t / threads, p1 = panels * (t + 1) / threads;
    if (p1 > p0) qgemm_detail::amx_s8_run(a, p0, p1, static_cast<uint8_t*>(thread_buffer(5, pad)));
  };
  if (threads == 1) {
    part(0);
    return;
  }
  tbb::parallel_for(
      tbb::blocked_range<int64_t>(0, threads, 1),
      [&](const tbb::blocked_range<int64_t>& r) {
        for (int64_t t = r.begin(); t < r.end(); ++t) part(t);
      },
      tbb::static_partitioner());
}
}  // namespace

bool DenseLinearU8S8::writes_bf16() const { return impl_->amx && cpu_has_avx512_bf16(); }

bool dense_u8s8_writes_bf16() { return use_amx_kernel() && cpu_has_avx512_bf16(); }

void DenseLinearU8S8::run_acc(const uint8_t* x, int64_t M, int64_t ldx, int32_t* acc,
                              int64_t ldacc) const {
  if (M <= 0) return;
  Impl& im = *impl_;
  if (im.amx) {
    run_amx(qgemm_detail::AmxS8Args{static_cast<const int8_t*>(im.amx.get()), im.K, im.N, x, M, ldx,
                                    nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                    qgemm_detail::OutKind::S32Raw, acc, ldacc});
    return;
  }
  // Rows [m0, m1) x part p into acc.
  auto unit = [&](int64_t m0, int64_t m1, size_t p) {
    Part& part = *im.parts[p];
    const int64_t n0 = im.part_n0[p];
    if (ldacc == part.N) {
      part.matmul(x + m0 * ldx, m1 - m0, ldx, acc + m0 * ldacc + n0);
      return;
    }
    int32_t* tmp = static_cast<int32_t*>(thread_buffer(1, sizeof(int32_t) * (m1 - m0) * part.N));
    part.matmul(x + m0 * ldx, m1 - m0, ldx, tmp);
    for (int64_t m = m0; m < m1; ++m)
      std::memcpy(acc + m * ldacc + n0, tmp + (m - m0) * part.N, sizeof(int32_t) * part.N);
  };
  try {
    if (!im.on_tbb) {
      note_pool(Pool::OpenMP);  // oneDNN's threads: see parallel_util.h
      unit(0, M, 0);
      return;
    }
    note_pool(Pool::Tbb);
    for_dense_tasks(M, im.K, im.N, 1, im.parts.size(), im.split, unit, [](int64_t, int64_t) {});
  } catch (const dnnl::error& e) {
    throw std::runtime_error(std::string("DenseLinearU8S8: oneDNN matmul failed: ") + e.what());
  }
}

namespace {
// The f32 output per thread from which the AMX kernel streams it when the
// output is read back only after the whole call (the quantization for the
// next Linear): about half a core's L2 on the AMX machines we measured.
constexpr int64_t kStreamMinBytesPerThread = int64_t{1} << 20;
// The same for its f16 form: streamed lines leave every cache, so a later
// op writing the same memory (the planner reuses it) waits for them again.
// Dense MiniLM INT8 at 8 x 128 tokens (1.5 MB of f16 per thread) streamed:
// FFN1 4.9 -> 4.5 ms per run but the next QKV Linear 2.1 -> 3.1 ms; BERT-base
// (3 MB per thread) gains more from the stores than that costs.
constexpr int64_t kStreamF16MinBytesPerThread = int64_t{2} << 20;

// DenseLinearU8S8::QuantOut where y is written: its rows quantized when final.
struct QuantizeFinalRows {
  const float* y;
  int64_t ldy, N;
  const DenseLinearU8S8::QuantOut* q;
  static void run(const void* c, int64_t m0, int64_t rows) {
    const auto& r = *static_cast<const QuantizeFinalRows*>(c);
    qgemm_detail::quantize_rows_u8_here(r.y + m0 * r.ldy, rows, r.N, r.ldy, r.q->xq + m0 * r.N, r.q->scale + m0,
                                        r.q->zp + m0, r.q->mul);
  }
};

// The same from the AMX kernel's f16 rows (AmxS8Args::y_f16, row stride N).
// A row that holds a non-finite value (its scale comes out NaN) sets
// not_finite: where y * mul left the f16 range, the call is redone in f32.
struct QuantizeF16Rows {
  const uint16_t* h;
  int64_t N;
  const DenseLinearU8S8::QuantOut* q;
  std::atomic<bool>* not_finite;
  static void run(const void* c, int64_t m0, int64_t rows) {
    const auto& r = *static_cast<const QuantizeF16Rows*>(c);
    qgemm_detail::quantize_rows_u8_f16_here(r.h + m0 * r.N, rows, r.N, r.N, r.q->xq + m0 * r.N, r.q->scale + m0,
                                            r.q->zp + m0);
    for (int64_t m = m0; m < m0 + rows; ++m)
      if (std::isnan(r.q->scale[m])) r.not_finite->store(true, std::memory_order_relaxed);
  }
};
}  // namespace

void DenseLinearU8S8::run(const uint8_t* x, int64_t M, int64_t ldx, const float* x_scale,
                          const int32_t* x_zp, const QEpilogue& ep, void* y, int64_t ldy,
                          const RowsDone* done, const QuantOut* qout) const {
  if (done && (ep.requantize || !done->fn))
    throw std::invalid_argument("DenseLinearU8S8: work on finished rows (RowsDone) needs a function and f32 "
                                "output (no requantize)");
  if (qout && (ep.requantize || ep.residual || done || !qout->xq || !qout->scale || !qout->zp))
    throw std::invalid_argument("DenseLinearU8S8: the output quantized for the next Linear (QuantOut) needs f32 "
                                "output without a residual or RowsDone, and its buffers");
  if (ep.out_bf16 && (ep.gelu || ep.requantize || ep.residual || done || qout))
    throw std::invalid_argument("DenseLinearU8S8: BF16 output takes no GELU, requantization, residual, RowsDone "
                                "or QuantOut");
  if (ep.out_bf16 && !writes_bf16())
    throw std::logic_error("DenseLinearU8S8: BF16 output is written by the AMX kernel on a CPU with AVX512_BF16 only");
  if (M <= 0) return;
  if (ep.requantize && !(ep.out_scale > 0.f))
    throw std::invalid_argument("DenseLinearU8S8: requantize needs out_scale > 0");
  Impl& im = *impl_;
  const int64_t N = im.N;
  QEpilogue e = ep;
  if (e.residual && e.ld_residual == 0) e.ld_residual = N;
  const bool vec = active_isa() >= Isa::Avx512Vnni;
  // The epilogue of rows [m0, m1) x columns [n0, n0 + cols) from their
  // accumulators acc (row stride cols) into out (row stride ld; column 0 of
  // the layer at out).
  // The AMX kernel's arguments for this call (im.amx only).
  auto amx_args = [&](qgemm_detail::OutKind out) {
    return qgemm_detail::AmxS8Args{static_cast<const int8_t*>(im.amx.get()), im.K, im.N, x, M, ldx, im.bias,
                                   im.scale_w.data(), im.wsum.data(), x_scale, x_zp, &e, out, y, ldy};
  };
  auto finish = [&](const int32_t* acc, int64_t m0, int64_t m1, int64_t n0, int64_t cols, void* out, int64_t ld) {
    QEpilogue ec = e;
    if (ec.residual) ec.residual += n0;
    const size_t out_bytes = ep.requantize ? 1 : sizeof(float);
    void* yc = static_cast<char*>(out) + static_cast<size_t>(n0) * out_bytes;
    const float* bias = im.bias ? im.bias + n0 : nullptr;
    if (vec) {
      thread_local std::vector<float> row;
      if (static_cast<int64_t>(row.size()) < cols + 16) row.resize(cols + 16);
      qgemm_detail::epilogue_rows_s32_avx512(acc, cols, m0, m1 - m0, cols, bias, im.scale_w.data() + n0,
                                             im.wsum.data() + n0, x_scale, x_zp, ec, yc, ld, row.data());
    } else {
      epilogue_rows_scalar(acc, cols, m0, m1 - m0, cols, bias, im.scale_w.data() + n0, im.wsum.data() + n0,
                           x_scale, x_zp, ec, yc, ld);
    }
  };
  // The AMX kernel with rows split between threads (whole 16-row tiles),
  // every column each, and each thread's rows handed to `after` (nullable)
  // as soon as it has them; false (nothing done) where it does not pay. Split
  // by column panels, the rows are final only at the end of the call: the
  // LayerNorm after the Linear, or the next Linear's quantization, then ran
  // in a region of their own, reading half of every row from the other core,
  // and a residual's rows were taken over by both (dense MiniLM INT8 per run:
  // 64 tokens 0.82-0.85 -> 0.78 ms, 128 tokens 1.61-1.68 -> 1.46-1.51, 8 x
  // 128 11.8-12.9 -> 11.1-11.4; BERT-base 8 x 128 59.5-60.4 -> 53.5-56.7,
  // for the Linears with a residual). Each thread then reads all the
  // weights: only where they are small (<= 1 MB) or the rows many (K <=
  // 8 M). BERT-base's FFN2 (2.4 MB) at 128 tokens so split slowed the other
  // Linears of the run (8.2 -> 8.7 ms). esz: bytes per value of y.
  auto amx_by_rows = [&](const qgemm_detail::AmxS8Args& a, size_t esz, const RowsDone* after) {
    const int64_t threads = std::max(1, tbb::this_task_arena::max_concurrency());
    if (threads < 2 || M <= 16 || !(im.K * im.N <= (int64_t{1} << 20) || im.K <= 8 * M)) return false;
    const int64_t tiles = (M + 15) / 16, per = (tiles + threads - 1) / threads;
    const int64_t pieces = (tiles + per - 1) / per;
    note_pool(Pool::Tbb);
    tbb::parallel_for(
        tbb::blocked_range<int64_t>(0, pieces, 1),
        [&](const tbb::blocked_range<int64_t>& r) {
          for (int64_t t = r.begin(); t < r.end(); ++t) {
            const int64_t m0 = 16 * per * t, m1 = std::min(M, m0 + 16 * per);
            QEpilogue et = *a.ep;
            if (et.residual) et.residual += m0 * et.ld_residual;
            qgemm_detail::AmxS8Args at = a;
            at.x = a.x + m0 * a.ldx;
            at.M = m1 - m0;
            at.x_scale = a.x_scale + m0;
            at.x_zp = a.x_zp + m0;
            at.ep = &et;
            at.y = static_cast<char*>(a.y) + static_cast<size_t>(m0 * a.ldy) * esz;
            at.stream_y = false;  // (its rows are read right after, by this thread)
            const size_t pad = static_cast<size_t>(qgemm_detail::amx_s8_pad_bytes(at.M, im.K, at.x, at.ldx));
            qgemm_detail::amx_s8_run(at, 0, qgemm_detail::amx_s8_panels(im.N),
                                     static_cast<uint8_t*>(thread_buffer(5, pad)));
            if (after) after->fn(after->ctx, m0, m1 - m0);
          }
        },
        tbb::static_partitioner());
    return true;
  };
  if (qout) {
    const size_t parts = im.parts.size();
    if (!im.amx && im.on_tbb && vec &&
        !dense_split_by_columns(M, im.K, im.N, 1, parts, im.split)) {
      // Each task holds whole rows: every part's accumulators for its rows
      // (part p's at rows * n0_p, rows x its columns), then per row the
      // epilogue into a row buffer (every part's columns), quantized from
      // there. y is never written.
      note_pool(Pool::Tbb);
      try {
        for_dense_tasks(
            M, im.K, N, 1, parts, im.split,
            [&](int64_t m0, int64_t m1, size_t p) {
              int32_t* acc = static_cast<int32_t*>(thread_buffer(1, sizeof(int32_t) * (m1 - m0) * N));
              im.parts[p]->matmul(x + m0 * ldx, m1 - m0, ldx, acc + (m1 - m0) * im.part_n0[p]);
            },
            [&](int64_t m0, int64_t m1) {
              const int64_t rows = m1 - m0;
              const int32_t* acc = static_cast<const int32_t*>(thread_buffer(1, sizeof(int32_t) * rows * N));
              thread_local std::vector<float> row;
              if (static_cast<int64_t>(row.size()) < N) row.resize(N);
              for (int64_t i = 0; i < rows; ++i) {
                // (Row stride 0: row i's values land in the row buffer.)
                for (size_t p = 0; p < parts; ++p)
                  finish(acc + rows * im.part_n0[p] + i * im.parts[p]->N, m0 + i, m0 + i + 1, im.part_n0[p],
                         im.parts[p]->N, row.data(), 0);
                qgemm_detail::quantize_rows_u8_here(row.data(), 1, N, N, qout->xq + (m0 + i) * N,
                                                    qout->scale + m0 + i, qout->zp + m0 + i, qout->mul);
              }
            });
      } catch (const dnnl::error& err) {
        throw std::runtime_error(std::string("DenseLinearU8S8: oneDNN matmul failed: ") + err.what());
      }
      return;
    }
    // Elsewhere: y, then its rows quantized as they are final.
    const QuantizeFinalRows q{static_cast<const float*>(y), ldy, im.N, qout};
    const RowsDone rows{&QuantizeFinalRows::run, &q, rows_per_task(im.N)};
    if (im.amx) {
      // The AMX kernel finishes every row only at its end (threads split the
      // columns), so its output is read back once, after it: dense BERT-base
      // INT8 on AMX, 8 x 128 tokens, FFN1 (768 -> 3072) took 35 ms per run of
      // 12 layers in f32, 16 ms of it the stores, against 18 ms for FFN2's
      // same products. So the values go out as f16 (y * mul: the only use of
      // y here is this quantization), half the bytes, each 32-column row of
      // a block one 64-byte line, streamed where they are too many to stay
      // in cache until read back (> ~1 MB per thread). FFN1 per run: f32
      // streamed 26.4-27.7 ms -> f16 streamed 23.5-24.1 (f16 not streamed
      // 25.1-26.1); at 128 tokens (not streamed) 3.97-4.17 -> 3.59-3.67.
      // (f32 was streamed only with rows a multiple of 4 KB apart, where
      // its 32 rows x 128 bytes per block fell into two L1 sets.)
      const int64_t threads = std::max(1, tbb::this_task_arena::max_concurrency());
      qgemm_detail::AmxS8Args a = amx_args(qgemm_detail::OutKind::F32);
      a.y_f16 = true;
      a.y_mul = qout->mul;
      a.ldy = N;
      a.stream_y = M * N * static_cast<int64_t>(sizeof(uint16_t)) / threads > kStreamF16MinBytesPerThread;
      std::atomic<bool> not_finite{false};
      const QuantizeF16Rows qh{static_cast<const uint16_t*>(y), N, qout, &not_finite};
      const RowsDone quantize_f16{&QuantizeF16Rows::run, &qh, rows_per_task(N)};
      if (!amx_by_rows(a, sizeof(uint16_t), &quantize_f16)) {
        run_amx(a);
        qgemm_detail::rows_done_all(quantize_f16, 0, M);
      }
      if (!not_finite.load()) return;
      // A value past the f16 range (or a NaN or Inf already in f32): all
      // rows again from f32 y, the first form of QuantOut's bits.
      a.y_f16 = false;
      a.y_mul = nullptr;
      a.ldy = ldy;
      const int64_t row_bytes = ldy * static_cast<int64_t>(sizeof(float));
      a.stream_y = row_bytes % 4096 == 0 && M * row_bytes / threads > kStreamMinBytesPerThread;
      run_amx(a);
      qgemm_detail::rows_done_all(rows, 0, M);
      return;
    }
    run(x, M, ldx, x_scale, x_zp, ep, y, ldy, &rows, nullptr);
    return;
  }
  if (im.amx) {
    qgemm_detail::AmxS8Args a = amx_args(ep.requantize ? qgemm_detail::OutKind::U8 : qgemm_detail::OutKind::F32);
    a.y_bf16 = ep.out_bf16;
    // Where it adds a residual or hands its rows to the LayerNorm after it,
    // by rows (amx_by_rows).
    if ((ep.residual || done) && !ep.out_bf16 && amx_by_rows(a, ep.requantize ? 1 : sizeof(float), done)) return;
    run_amx(a);
    if (done) qgemm_detail::rows_done_all(*done, 0, M);
    return;
  }
  // Rows [m0, m1) x part p: the matmul, then its epilogue while the
  // accumulators are in this core's cache.
  auto unit = [&](int64_t m0, int64_t m1, size_t p) {
    Part& part = *im.parts[p];
    int32_t* acc = static_cast<int32_t*>(thread_buffer(1, sizeof(int32_t) * (m1 - m0) * part.N));
    part.matmul(x + m0 * ldx, m1 - m0, ldx, acc);
    finish(acc, m0, m1, im.part_n0[p], part.N, y, ldy);
  };
  if (im.on_tbb) {
    note_pool(Pool::Tbb);
    try {
      // Split by rows, a task's rows are final when its parts are done: on
      // to the work after them on that thread (the rows still in its cache).
      const bool by_columns = for_dense_tasks(M, im.K, N, 1, im.parts.size(), im.split, unit,
                                              [&](int64_t m0, int64_t m1) {
                                                if (done) done->fn(done->ctx, m0, m1 - m0);
                                              });
      if (by_columns && done) qgemm_detail::rows_done_all(*done, 0, M);
    } catch (const dnnl::error& err) {
      throw std::runtime_error(std::string("DenseLinearU8S8: oneDNN matmul failed: ") + err.what());
    }
    return;
  }
  note_pool(Pool::OpenMP);  // oneDNN's threads and the epilogue below: see parallel_util.h
  int32_t* acc = static_cast<int32_t*>(thread_buffer(1, sizeof(int32_t) * M * N));
  try {
    im.parts[0]->matmul(x, M, ldx, acc);
  } catch (const dnnl::error& err) {
    throw std::runtime_error(std::string("DenseLinearU8S8: oneDNN matmul failed: ") + err.what());
  }
  // Same OpenMP pool and budget as the matmul; rows in contiguous chunks.
  const int threads = std::max(1, std::min<int>(omp_get_max_threads(), static_cast<int>((M + 7) / 8)));
#pragma omp parallel num_threads(threads)
  {
    const int nt = omp_get_num_threads(), id = omp_get_thread_num();
    const int64_t per = (M + nt - 1) / nt;
    const int64_t m0 = std::min<int64_t>(M, id * per), m1 = std::min<int64_t>(M, m0 + per);
    if (m1 > m0) {
      finish(acc + m0 * N, m0, m1, 0, N, y, ldy);
      // This thread's rows are final: on to the work after them, in this
      // region (the rows still in this core's cache).
      if (done) done->fn(done->ctx, m0, m1 - m0);
    }
  }
}

}  // namespace spinel::kernels
