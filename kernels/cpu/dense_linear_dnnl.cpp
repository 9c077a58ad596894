// DenseLinearF32: y = act(x W + b) + residual through oneDNN's matmul.
//
// W is reordered once, at construction, into the blocked layout oneDNN's
// matmul prefers: with W used in place ([K, N] row-major) oneDNN 2.6 repacks
// it on every call, which measured 2.4x slower for 768x3072 at M = 128 and
// 5-15% slower for square shapes. That layout did not depend on M for any
// BERT shape from M = 1 to 4096, so one packed copy serves every primitive.
//
// Packed varlen batches make M (total tokens) a different number on almost
// every run. A primitive per M costs a JIT compilation and ~30 KB per layer:
// random batches grew a MiniLM session by 320 MiB over 500 runs. So every
// layer has one primitive whose M is a run-time dimension; primitives for a
// fixed M are made only where oneDNN picks a different (faster) kernel for
// them than for the run-time M (brgemm on AVX-512), and at most
// kMaxFixedPrimitives of them: the first M values seen, the steady shapes
// of a server or a benchmark.
// Primitives run with a user-provided scratchpad (thread-local), because
// oneDNN's library-managed scratchpad is shared and would make a primitive
// unsafe to run from several sessions' threads at once.
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

#include "kernels/cpu/parallel_util.h"
#include "kernels/cpu/dnnl_engine.h"
#include "kernels/cpu/ops.h"

namespace spinel::kernels {
namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

dnnl::engine& cpu_engine() { return dnnl_engine(); }

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<void, AlignedFree>;

AlignedBuffer aligned_bytes(size_t n) {
  const size_t size = (n + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, size ? size : 64);
  if (!p) throw std::bad_alloc();
  return AlignedBuffer(p);
}

// Grows, never shrinks: after the first call of the largest primitive a
// thread allocates nothing more.
void* thread_scratchpad(size_t bytes) {
  thread_local AlignedBuffer buf;
  thread_local size_t capacity = 0;
  if (bytes > capacity) {
    buf = aligned_bytes(bytes);
    capacity = bytes;
  }
  return buf.get();
}

// How the residual enters: added by a binary post-op reading its own memory,
// or, when y already holds it (y == residual), by a sum post-op that adds
// the old dst in place.
enum class ResidualMode : int { None = 0, Binary = 1, InPlace = 2 };

dnnl::algorithm eltwise_algorithm(Activation act) {
  switch (act) {
    case Activation::GeluTanh: return dnnl::algorithm::eltwise_gelu_tanh;
    case Activation::Tanh: return dnnl::algorithm::eltwise_tanh;
    default: return dnnl::algorithm::eltwise_gelu_erf;
  }
}

constexpr size_t kMaxFixedPrimitives = 32;

struct Primitive {
  dnnl::matmul matmul;
  bool packed_weights;  // false: this primitive reads W in the caller's layout
  size_t scratchpad_bytes;
  std::string impl;     // oneDNN's name of the kernel it runs
  ResidualMode mode;    // how it takes the residual
  bool reference() const { return dnnl_reference_impl(impl); }  // dnnl_engine.h
};

// Columns [n0, n0 + N) of the layer, as oneDNN multiplies them: W's columns
// read in place (row stride ldw) or packed, y's and the residual's columns
// (row stride ldy). The whole layer is one part with ldw = ldy = N.
struct Part {
  const float* weight;  // W's column n0
  const float* bias;    // bias + n0, or null
  int64_t K, N;
  int64_t ldw, ldy;
  Activation act;
  memory::desc packed_md;  // zero desc when W is used as given
  AlignedBuffer packed;

  std::mutex mu;
  std::map<std::pair<int64_t, int>, std::shared_ptr<const Primitive>> cache;
  DnnlArgsPerThread call_args;  // the memories of run()'s calls, per thread

  // Run-time-M primitives by mode (None, InPlace); null where refused.
  std::shared_ptr<const Primitive> runtime[3];
  bool fixed_differs = false;  // oneDNN picks another kernel for a fixed M

  // The columns of x [M, K] (contiguous) W, on the calling thread's oneDNN
  // threads; y and residual point at this part's first column.
  void run(const float* x, int64_t M, const float* residual, float* y);

  // M = DNNL_RUNTIME_DIM_VAL makes a primitive for every M.
  dnnl::matmul::primitive_desc make_pd(int64_t M, ResidualMode mode,
                                       const memory::desc& wmd) const {
    const memory::desc src({M, K}, dt::f32, memory::dims{K, 1});
    const memory::desc dst({M, N}, dt::f32, memory::dims{ldy, 1});
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::post_ops po;
    if (act != Activation::None) po.append_eltwise(1.f, eltwise_algorithm(act), 0.f, 0.f);
    if (mode == ResidualMode::Binary) po.append_binary(dnnl::algorithm::binary_add, dst);
    if (mode == ResidualMode::InPlace) po.append_sum(1.f);
    attr.set_post_ops(po);
    if (bias) {
      const memory::desc bmd({1, N}, dt::f32, tag::ab);
      return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wmd, bmd, dst), attr,
                                          cpu_engine());
    }
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wmd, dst), attr, cpu_engine());
  }

  std::shared_ptr<const Primitive> create(int64_t M, ResidualMode mode) const {
    const memory::desc plain({K, N}, dt::f32, memory::dims{ldw, 1});
    if (packed) {
      try {
        auto pd = make_pd(M, mode, packed_md);
        return std::make_shared<Primitive>(
            Primitive{dnnl::matmul(pd), true, pd.scratchpad_desc().get_size(), pd.impl_info_str(), mode});
      } catch (const dnnl::error&) {
        // No implementation takes the packed layout for this M: fall back to
        // the caller's layout below (slower, still correct).
      }
    }
    auto pd = make_pd(M, mode, plain);
    return std::make_shared<Primitive>(
        Primitive{dnnl::matmul(pd), false, pd.scratchpad_desc().get_size(), pd.impl_info_str(), mode});
  }

  // Made once, at construction (the object is immutable afterwards).
  // A run-time-M primitive on oneDNN's reference loops counts as refused:
  // oneDNN 2.6 makes one for a sum post-op (the in-place residual) with the
  // packed weights, and once a layer had seen kMaxFixedPrimitives token
  // counts every attention-output and FFN2 Linear of an FP32 model ran on it
  // (MiniLM at random lengths: 3 ms per query became 12 s).
  void make_runtime_primitives() {
    for (ResidualMode mode : {ResidualMode::None, ResidualMode::InPlace}) {
      try {
        auto p = create(DNNL_RUNTIME_DIM_VAL, mode);
        if (!p->reference()) runtime[static_cast<int>(mode)] = std::move(p);
      } catch (const dnnl::error&) {
        // Refused for this mode: fixed-M primitives only.
      }
    }
    const auto& rt = runtime[static_cast<int>(ResidualMode::None)];
    fixed_differs = !rt || create(128, ResidualMode::None)->impl != rt->impl;
  }

  // The primitive for M rows: a fixed-M one where oneDNN has a faster kernel
  // for it (at most kMaxFixedPrimitives), else the run-time-M one. oneDNN
  // refuses a binary post-op with a run-time M, so a separate residual then
  // comes back as InPlace: the caller copies it into y first.
  // Null (a residual mode only): no primitive takes the residual except
  // oneDNN's reference loops, or none is left to make once the fixed ones
  // are kMaxFixedPrimitives: the caller runs the product alone (mode None)
  // and adds the residual itself (Part::run).
  std::shared_ptr<const Primitive> get(int64_t M, ResidualMode mode) {
    const ResidualMode rt_mode = mode == ResidualMode::Binary ? ResidualMode::InPlace : mode;
    const auto& rt = runtime[static_cast<int>(rt_mode)];
    if (rt && !fixed_differs) return rt;
    const auto key = std::make_pair(M, static_cast<int>(mode));
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = cache.find(key);
      if (it != cache.end()) return it->second;
      if (cache.size() >= kMaxFixedPrimitives) {
        if (rt) return rt;
        if (mode != ResidualMode::None) return nullptr;
      }
    }
    // Created outside the lock (JIT takes milliseconds); if two threads race,
    // the first insert wins and both use it.
    auto p = create(M, mode);
    if (mode != ResidualMode::None && p->reference()) p = nullptr;  // (cached: asked once per M)
    std::lock_guard<std::mutex> lock(mu);
    // Without a run-time primitive the cache must take every M: bound it by
    // evicting (callers holding a primitive keep it alive).
    if (cache.size() >= kMaxFixedPrimitives && !cache.count(key)) cache.erase(cache.begin());
    return cache.emplace(key, std::move(p)).first->second;
  }

  // Asks for the layout oneDNN prefers at a typical M (see the file comment
  // for why one M stands for all) and makes the run-time-M primitives.
  void prepare() {
    const memory::desc any({K, N}, dt::f32, tag::any);
    const auto pd = make_pd(128, ResidualMode::None, any);
    const memory::desc plain({K, N}, dt::f32, memory::dims{ldw, 1});
    if (!(pd.weights_desc() == plain)) {
      packed_md = pd.weights_desc();
      packed = aligned_bytes(packed_md.get_size());
      dnnl_reorder(plain, weight, packed_md, packed.get());
    }
    make_runtime_primitives();
  }
};

}  // namespace

struct DenseLinearF32::Impl {
  int64_t K = 0, N = 0;
  Activation act = Activation::None;
  // The matmuls run as single-threaded oneDNN calls in TBB tasks (row ranges
  // or column parts: dense_pool_tbb, dense_split_by_columns in
  // parallel_util.h), every primitive made for one thread; else on oneDNN's
  // OpenMP threads, one part.
  bool on_tbb = false;
  int split = 0;  // dense_split_forced()
  std::vector<std::unique_ptr<Part>> parts;
  std::vector<int64_t> part_n0;  // first column of each part
};

DenseLinearF32::DenseLinearF32(const float* weight, const float* bias, int64_t K, int64_t N,
                               Activation act)
    : impl_(std::make_unique<Impl>()), K_(K), N_(N) {
  if (!weight || K <= 0 || N <= 0) throw std::invalid_argument("DenseLinearF32: bad weight shape");
  Impl& im = *impl_;
  im.K = K;
  im.N = N;
  im.act = act;
  im.on_tbb = dense_pool_tbb(false);
  im.split = dense_split_forced();
  std::unique_ptr<OneOmpThread> one;
  if (im.on_tbb) one = std::make_unique<OneOmpThread>();
  const int64_t P = im.on_tbb ? dense_column_parts(N) : 1;
  try {
    for (int64_t p = 0; p < P; ++p) {
      const int64_t n0 = N * p / P, n1 = N * (p + 1) / P;
      auto part = std::make_unique<Part>();
      part->weight = weight + n0;
      part->bias = bias ? bias + n0 : nullptr;
      part->K = K;
      part->N = n1 - n0;
      part->ldw = N;
      part->ldy = N;
      part->act = act;
      part->prepare();
      im.parts.push_back(std::move(part));
      im.part_n0.push_back(n0);
    }
  } catch (const dnnl::error& e) {
    throw std::runtime_error(std::string("DenseLinearF32: oneDNN setup failed: ") + e.what());
  }
}

DenseLinearF32::~DenseLinearF32() = default;

std::string DenseLinearF32::implementation(int64_t M, bool residual, bool in_place) const {
  Impl& im = *impl_;
  // Mirrors Part::run(): an activation with a residual, or a residual no
  // primitive takes but the reference loops, runs the plain product.
  const ResidualMode mode = !residual || im.act != Activation::None ? ResidualMode::None
                            : in_place                              ? ResidualMode::InPlace
                                                                    : ResidualMode::Binary;
  std::unique_ptr<OneOmpThread> one;
  if (im.on_tbb) one = std::make_unique<OneOmpThread>();  // as run() makes them
  if (const auto p = im.parts[0]->get(M, mode)) return p->impl;
  return im.parts[0]->get(M, ResidualMode::None)->impl + " (residual added after)";
}

void DenseLinearF32::run(const float* x, int64_t M, const float* residual, float* y) const {
  if (M <= 0) return;
  Impl& im = *impl_;
  try {
    if (!im.on_tbb) {
      note_pool(Pool::OpenMP);  // oneDNN's threads: see parallel_util.h
      im.parts[0]->run(x, M, residual, y);
      return;
    }
    note_pool(Pool::Tbb);
    const int64_t K = im.K, N = im.N;
    for_dense_tasks(
        M, K, N, sizeof(float), im.parts.size(), im.split,
        [&](int64_t m0, int64_t m1, size_t p) {
          const int64_t off = m0 * N + im.part_n0[p];
          im.parts[p]->run(x + m0 * K, m1 - m0, residual ? residual + off : nullptr, y + off);
        },
        [](int64_t, int64_t) {});
  } catch (const dnnl::error& e) {
    throw std::runtime_error(std::string("DenseLinearF32: oneDNN matmul failed: ") + e.what());
  }
}

void Part::run(const float* x, int64_t M, const float* residual, float* y) {
  const ResidualMode mode = !residual          ? ResidualMode::None
                            : residual == y    ? ResidualMode::InPlace
                                               : ResidualMode::Binary;
  std::shared_ptr<const Primitive> prim;
  if (residual && act == Activation::None) prim = get(M, mode);
  if (residual && !prim) {
    // oneDNN 2.6 has no fast matmul for an eltwise post-op followed by a sum
    // or a binary add: it falls back to its reference loops (10 s instead of
    // 10 ms for 128 x 768 x 3072 on AVX2); nor for a sum with a run-time M
    // and packed weights (get() returns null). So the product is made alone
    // and the residual added after it.
    if (residual == y) {
      thread_local AlignedBuffer tmp_buf;
      thread_local size_t tmp_bytes = 0;
      const size_t bytes = sizeof(float) * static_cast<size_t>(M * ldy);
      if (bytes > tmp_bytes) {
        tmp_buf = aligned_bytes(bytes);
        tmp_bytes = bytes;
      }
      float* tmp = static_cast<float*>(tmp_buf.get());
      run(x, M, nullptr, tmp);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) y[m * ldy + n] += tmp[m * ldy + n];
    } else {
      run(x, M, nullptr, y);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) y[m * ldy + n] += residual[m * ldy + n];
    }
    return;
  }
  if (!prim) prim = get(M, mode);  // (mode None: never null)
  if (prim->mode == ResidualMode::InPlace && residual != y)
    for (int64_t m = 0; m < M; ++m)
      std::memcpy(y + m * ldy, residual + m * ldy, sizeof(float) * static_cast<size_t>(N));
  const memory::desc rows_md({M, N}, dt::f32, memory::dims{ldy, 1});  // y's and the residual's
  DnnlArgs& a = call_args.local();
  a.set(DNNL_ARG_SRC, memory::desc({M, K}, dt::f32, tag::ab), x);
  a.set(DNNL_ARG_DST, rows_md, y);
  if (prim->packed_weights)
    a.set(DNNL_ARG_WEIGHTS, packed_md, packed.get());
  else
    a.set(DNNL_ARG_WEIGHTS, memory::desc({K, N}, dt::f32, memory::dims{ldw, 1}), weight);
  if (prim->scratchpad_bytes > 0)
    a.set(DNNL_ARG_SCRATCHPAD, memory::desc({static_cast<memory::dim>(prim->scratchpad_bytes)}, dt::u8, tag::a),
          thread_scratchpad(prim->scratchpad_bytes));
  if (bias) a.set(DNNL_ARG_BIAS, memory::desc({1, N}, dt::f32, tag::ab), bias);
  if (prim->mode == ResidualMode::Binary) {
    // The binary post-op is the second one when an activation precedes it.
    const int index = act != Activation::None ? 1 : 0;
    a.set(DNNL_ARG_ATTR_MULTIPLE_POST_OP(index) | DNNL_ARG_SRC_1, rows_md, residual);
  }
  a.execute(prim->matmul);
}

}  // namespace spinel::kernels
