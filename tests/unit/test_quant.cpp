// Convert-time INT8 quantization and the S8 Linear paths of a session, on
// random BERT-shaped models with some layers 4x1 block-pruned.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "converters/calibrate.h"
#include "converters/quantize.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/qgemm.h"
#include "kernels/cpu/select.h"
#include "runtime/error.h"
#include "runtime/prepared.h"
#include "runtime/session.h"
#include "tests/unit/reference_run.h"
#include "tests/unit/tiny_model.h"

using namespace spinel;

namespace {

// These tests check the INT8 Linear kernels against the reference backend, to
// the rounding of erf: attention runs in FP32 for them (SPINEL_ATTENTION=f32,
// read when a model is prepared). BF16 attention has its own check below.
struct Fp32Attention {
  std::string old;
  bool had;
  Fp32Attention() {
    const char* v = std::getenv("SPINEL_ATTENTION");
    had = v != nullptr;
    if (had) old = v;
    setenv("SPINEL_ATTENTION", "f32", 1);
  }
  ~Fp32Attention() {
    if (had)
      setenv("SPINEL_ATTENTION", old.c_str(), 1);
    else
      unsetenv("SPINEL_ATTENTION");
  }
};

// Zeroes whole 4x1 blocks (4 consecutive output channels at one input
// channel) of a Linear's f32 weight [K, N] with probability `frac`.
void prune_blocks(SpnlWriter& w, int32_t wid, double frac, unsigned seed) {
  const TensorInfo t = w.tensors()[wid];
  const int64_t K = t.shape[0], N = t.shape[1];
  std::vector<float> W(static_cast<const float*>(w.tensor_data(wid)),
                       static_cast<const float*>(w.tensor_data(wid)) + K * N);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; n += 4)
      if (u(rng) < frac)
        for (int c = 0; c < 4; ++c) W[k * N + n + c] = 0.f;
  w.set_tensor(wid, DType::F32, {K, N}, W.data(), W.size() * sizeof(float));
}

testing::TinySpec spec(Activation act) {
  testing::TinySpec s;
  s.hidden = 64;
  s.heads = 4;
  s.intermediate = 128;
  s.layers = 2;
  s.positions = 64;
  s.act = act;
  return s;
}

std::vector<Sequence> batch_for(int64_t vocab) {
  std::mt19937 rng(9);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(vocab - 1));
  std::vector<Sequence> b;
  for (int len : {1, 5, 17, 64, 33}) {
    Sequence s;
    for (int t = 0; t < len; ++t) s.ids.push_back(id(rng));
    b.push_back(s);
  }
  return b;
}

double cosine(const float* a, const float* b, int64_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < n; ++i) {
    ab += double(a[i]) * b[i];
    aa += double(a[i]) * a[i];
    bb += double(b[i]) * b[i];
  }
  return ab / std::sqrt(aa * bb);
}

}  // namespace

TEST_CASE("int8 conversion: weights per channel, sparse where pruned, close to f32") {
  for (Activation act : {Activation::GeluErf, Activation::GeluTanh}) {
    SpnlWriter w;
    testing::fill_tiny_model(w, spec(act));
    // Prune the intermediate and output Linears of layer 0 to ~80%.
    std::vector<size_t> pruned_ops;
    for (size_t i = 0; i < w.graph.ops.size(); ++i) {
      const Op& op = w.graph.ops[i];
      if (op.kind == OpKind::Linear && op.name.rfind("layer0.", 0) == 0 &&
          (op.name == "layer0.intermediate" || op.name == "layer0.output")) {
        prune_blocks(w, op.w[slot::kWeight], 0.8, static_cast<unsigned>(i));
        pruned_ops.push_back(i);
      }
    }
    REQUIRE(pruned_ops.size() == 2);
    const std::string dir = testing::temp_dir("quant");
    w.write(dir + "/f32.spnl");

    const auto reps = quantize_linears_int8(w, QuantOptions{});
    REQUIRE(reps.size() == 8);  // 4 Linears x 2 layers
    for (const auto& r : reps) {
      INFO(r.name, " sparsity ", r.block_sparsity);
      CHECK(r.max_rel_error <= 0.5 / 127 + 1e-6);  // rounding to the nearest step
      const bool pruned = r.name == "layer0.intermediate" || r.name == "layer0.output";
      CHECK(r.precision == (pruned ? Precision::S8Sparse : Precision::S8Dense));
      if (pruned) CHECK(r.block_sparsity > 0.7);
    }
    w.write(dir + "/int8.spnl");

    auto f32 = Model::load(dir + "/f32.spnl");
    auto q = Model::load(dir + "/int8.spnl");
    if (kernels::choose_attention(/*int8_model=*/true).products != kernels::AttentionProducts::F32) {
      // The default on this CPU: attention in BF16 (AMX-BF16 tiles or
      // AVX512_BF16 dot products, select.h). BF16 rounding of
      // Q, K, P and V (2^-9 relative each) moves hidden states by ~1e-3 of
      // their norm here: every token's cosine with the reference stays > 0.999.
      auto q_amx = Model::load(dir + "/int8.spnl");
      Session s(q_amx, 2);
      const HiddenStates h = s.run(batch_for(q->config().vocab_size));
      const auto want = reference_run(q, batch_for(q->config().vocab_size));
      const int64_t H = q->config().hidden_size;
      double min_cos = 1;
      for (int64_t t = 0; t < h.offsets.back(); ++t)
        min_cos = std::min(min_cos, cosine(h.row(t), want.data() + t * H, H));
      INFO("act ", activation_name(act));
      CHECK(min_cos > 0.999);
    } else {
      MESSAGE("INT8 models' attention runs in FP32 on this CPU: the BF16 attention path is not run here");
    }
    const Fp32Attention fp32_attention;
    for (size_t i : pruned_ops) CHECK(q->graph().ops[i].precision == Precision::S8Sparse);
    const auto batch = batch_for(q->config().vocab_size);
    const auto ref_q = reference_run(q, batch);
    const auto ref_f = reference_run(f32, batch);
    const int64_t H = q->config().hidden_size;

    for (kernels::Isa isa : {kernels::Isa::Avx512Vnni, kernels::Isa::Avx2Vnni, kernels::Isa::Avx2,
                             kernels::Isa::Scalar}) {
      if (!kernels::cpu_supports(isa)) {
        MESSAGE("CPU lacks ", kernels::isa_name(isa), "; that path is not run here");
        continue;
      }
      const kernels::Isa prev = kernels::set_max_isa(isa);
      Session s(q, 2);
      const HiddenStates h = s.run(batch);
      kernels::set_max_isa(prev);
      // Kernels and reference agree up to the erf rounding, which can move an
      // activation across a u8 rounding boundary of the next layer.
      double worst = 0;
      for (size_t j = 0; j < ref_q.size(); ++j)
        worst = std::max(worst, std::fabs(double(h.data[j]) - ref_q[j]));
      INFO("isa ", kernels::isa_name(isa), " act ", activation_name(act));
      CHECK(worst < 2e-2);
      for (int64_t t = 0; t < h.offsets.back(); ++t)
        CHECK(cosine(h.row(t), ref_q.data() + t * H, H) > 0.9999);
    }
    // INT8 stays close to FP32 token by token.
    double min_cos = 1;
    for (int64_t t = 0; t < static_cast<int64_t>(ref_f.size()) / H; ++t)
      min_cos = std::min(min_cos, cosine(ref_q.data() + t * H, ref_f.data() + t * H, H));
    CHECK(min_cos > 0.99);
  }
}

TEST_CASE("int8 conversion options") {
  SpnlWriter w;
  testing::fill_tiny_model(w, spec(Activation::GeluErf));
  SUBCASE("sparse off keeps every layer dense") {
    QuantOptions o;
    o.sparse_auto = false;
    for (const auto& r : quantize_linears_int8(w, o)) CHECK(r.precision == Precision::S8Dense);
  }
  SUBCASE("threshold 0 sends every layer to the sparse kernel") {
    QuantOptions o;
    o.sparse_threshold = 0.0;
    for (const auto& r : quantize_linears_int8(w, o)) CHECK(r.precision == Precision::S8Sparse);
  }
  SUBCASE("a threshold outside [0, 1] is an error") {
    QuantOptions o;
    o.sparse_threshold = 1.5;
    CHECK_THROWS_AS(quantize_linears_int8(w, o), Error);
  }
}

TEST_CASE("static calibration: one scale per layer from the observed input range") {
  SpnlWriter w;
  testing::fill_tiny_model(w, spec(Activation::GeluErf));
  const std::string dir = testing::temp_dir("calib");
  w.write(dir + "/f32.spnl");
  const auto samples = batch_for(w.config.vocab_size);
  size_t last_progress = 0;
  const auto ranges = calibrate_linear_inputs(w, samples, 1, 2, [&](size_t d) { last_progress = d; });
  CHECK(last_progress == samples.size());
  REQUIRE(ranges.size() == w.graph.ops.size());
  for (size_t i = 0; i < ranges.size(); ++i) {
    const bool linear = w.graph.ops[i].kind == OpKind::Linear;
    CHECK(ranges[i].seen == linear);
    if (linear) CHECK(ranges[i].lo < 0.f);  // LayerNorm outputs straddle 0
    if (linear) CHECK(ranges[i].hi > 0.f);
  }
  quantize_linears_int8(w, QuantOptions{});
  CHECK(apply_static_quantization(w, ranges) == 8);
  for (const Op& op : w.graph.ops)
    if (op.kind == OpKind::Linear) {
      CHECK(op.act_scale > 0.f);
      // The observed range maps onto [0, 255].
      const ActRange& r = ranges[&op - w.graph.ops.data()];
      CHECK(op.act_scale * 255.f == doctest::Approx(r.hi - r.lo).epsilon(1e-5));
    }
  w.write(dir + "/static.spnl");
  const Fp32Attention fp32_attention;
  auto f32 = Model::load(dir + "/f32.spnl");
  auto q = Model::load(dir + "/static.spnl");
  const auto ref_q = reference_run(q, samples);
  const auto ref_f = reference_run(f32, samples);
  Session s(q, 2);
  const HiddenStates h = s.run(samples);
  const int64_t H = q->config().hidden_size;
  for (int64_t t = 0; t < h.offsets.back(); ++t) {
    CHECK(cosine(h.row(t), ref_q.data() + t * H, H) > 0.9999);
    CHECK(cosine(h.row(t), ref_f.data() + t * H, H) > 0.98);
  }
}

TEST_CASE("calibration refuses an already quantized model and empty samples") {
  SpnlWriter w;
  testing::fill_tiny_model(w, spec(Activation::GeluErf));
  CHECK_THROWS_AS(calibrate_linear_inputs(w, {}, 1, 4), Error);
  quantize_linears_int8(w, QuantOptions{});
  CHECK_THROWS_AS(calibrate_linear_inputs(w, batch_for(w.config.vocab_size), 1, 4), Error);
}

TEST_CASE("Linear chain: a sparse FFN gives the same bits with and without it") {
  if (!kernels::cpu_supports(kernels::Isa::Avx512Vnni)) {
    MESSAGE("Linear chain not tested end to end: this CPU has no AVX-512 VNNI (the chain's kernel)");
    return;
  }
  SpnlWriter w;
  testing::fill_tiny_model(w, spec(Activation::GeluErf));
  for (size_t i = 0; i < w.graph.ops.size(); ++i) {
    const Op& op = w.graph.ops[i];
    if (op.kind == OpKind::Linear)
      prune_blocks(w, op.w[slot::kWeight], 0.9, static_cast<unsigned>(i + 50));
  }
  quantize_linears_int8(w, QuantOptions{});
  const std::string dir = testing::temp_dir("chain");
  w.write(dir + "/int8.spnl");
  const kernels::Isa prev = kernels::set_max_isa(kernels::Isa::Avx512Vnni);

  struct Run {
    std::vector<float> h;  // the hidden states, copied out of the session
    std::vector<std::vector<float>> observed;  // Linear inputs, by op
    std::vector<OpKernel> report;
  };
  auto run = [&](const char* chain_env, bool observe) {
    if (chain_env)
      setenv("SPINEL_LINEAR_CHAIN", chain_env, 1);
    else
      unsetenv("SPINEL_LINEAR_CHAIN");
    auto m = Model::load(dir + "/int8.spnl");  // a fresh model: prepared under this setting
    Run r;
    r.report = kernel_report(*m, backend_or_fail("cpu"));
    Session s(m, 2);
    if (observe)
      s.set_linear_observer([&](size_t i, const float* x, int64_t rows, int64_t cols) {
        if (r.observed.size() <= i) r.observed.resize(i + 1);
        r.observed[i].assign(x, x + rows * cols);
      });
    const HiddenStates h = s.run(batch_for(m->config().vocab_size));
    r.h.assign(h.data, h.data + h.offsets.back() * h.width);
    unsetenv("SPINEL_LINEAR_CHAIN");
    return r;
  };
  const Run on = run(nullptr, false), off = run("off", false);
  int chained = 0;
  for (const OpKernel& k : on.report) chained += k.why.find("next Linear in the kernel's layout") != std::string::npos;
  for (const OpKernel& k : off.report) CHECK(k.why.find("kernel's layout") == std::string::npos);
  // One FFN per layer, where the chain's kernel runs (not under SPINEL_ISA
  // capped below avx512vnni: then none, and the rest holds all the same).
  CHECK(chained == (kernels::active_isa() >= kernels::Isa::Avx512Vnni ? 2 : 0));
  REQUIRE(on.h.size() == off.h.size());
  CHECK(std::memcmp(on.h.data(), off.h.data(), on.h.size() * sizeof(float)) == 0);

  // Observed runs (calibration) write every value: the FFN2 inputs seen with
  // the chain prepared are the real FFN1 outputs.
  const Run obs_on = run(nullptr, true), obs_off = run("off", true);
  REQUIRE(obs_on.observed.size() == obs_off.observed.size());
  int compared = 0;
  for (size_t i = 0; i < obs_on.observed.size(); ++i) {
    CAPTURE(i);
    CHECK(obs_on.observed[i] == obs_off.observed[i]);
    compared += !obs_on.observed[i].empty();
  }
  CHECK(compared == 8);
  CHECK(std::memcmp(obs_on.h.data(), on.h.data(), on.h.size() * sizeof(float)) == 0);

  // The FFN's GELU is the coarse polynomial (its output only feeds the second
  // INT8 Linear): the report says so for each layer's first FFN Linear, and
  // SPINEL_GELU_COARSE=off gives the exact GELU, close to the same states but
  // not the same bits.
  int coarse = 0;
  for (const OpKernel& k : on.report) coarse += k.why.find("GELU to 2e-5") != std::string::npos;
  CHECK(coarse == 2);
  setenv("SPINEL_GELU_COARSE", "off", 1);
  const Run exact = run(nullptr, false);
  unsetenv("SPINEL_GELU_COARSE");
  for (const OpKernel& k : exact.report) CHECK(k.why.find("GELU to 2e-5") == std::string::npos);
  REQUIRE(exact.h.size() == on.h.size());
  double worst = 0;
  for (size_t i = 0; i < on.h.size(); ++i) worst = std::max(worst, double(std::fabs(on.h[i] - exact.h[i])));
  INFO("coarse vs exact GELU, worst hidden-state difference " << worst);  // 0.0012 when written
  // The vector kernels apply the coarse form; the scalar kernel (SPINEL_ISA=
  // scalar) has none and keeps the exact one.
  if (kernels::active_isa() >= kernels::Isa::Avx2)
    CHECK(worst > 0);
  else
    CHECK(worst == 0);
  CHECK(worst < 0.01);  // a quantization step of a token flipped here and there, then LayerNorm
  kernels::set_max_isa(prev);
}

namespace {

// The tiny model in INT8 with its Linears pruned to 90% (every other one
// when mixed, so that some stay dense; none and smoothed when dense),
// written to a fresh folder.
std::string write_pruned_int8(const char* name, unsigned seed, bool mixed, bool dense = false) {
  SpnlWriter w;
  testing::TinySpec ts = spec(Activation::GeluErf);  // 4 heads of 16
  // Dense: FFN1 wide enough for oneDNN's column parts (one per thread, none
  // narrower than 128 columns).
  if (dense) ts.intermediate = 384;
  testing::fill_tiny_model(w, ts);
  for (size_t i = 0; i < w.graph.ops.size(); ++i) {
    const Op& op = w.graph.ops[i];
    if (op.kind == OpKind::Linear && !dense && (!mixed || i % 2 == 0))
      prune_blocks(w, op.w[slot::kWeight], 0.9, static_cast<unsigned>(i) + seed);
  }
  if (dense) {
    // Smoothed from calibrated input ranges: every Linear gets an input scale.
    const auto ranges = calibrate_linear_inputs(w, batch_for(w.config.vocab_size), 1, 2, [](size_t) {});
    for (const LinearQuantReport& r : quantize_linears_int8(w, QuantOptions{}, &ranges)) REQUIRE(r.smoothed);
  } else {
    quantize_linears_int8(w, QuantOptions{});
  }
  const std::string path = testing::temp_dir(name) + "/int8.spnl";
  w.write(path);
  return path;
}

struct EnvRun {
  std::vector<float> h;  // the hidden states, copied out of the session
  std::vector<OpKernel> report;
};

// The model loaded (so prepared) and run under the environment variables
// env (value null: unset), optionally with a Linear observer; the variables
// are unset again afterwards.
// lengths: the batch's sequence lengths (empty: batch_for's).
EnvRun run_under_env(const std::string& path, const std::vector<std::pair<const char*, const char*>>& env,
                     bool observe = false, const std::vector<int>& lengths = {}) {
  for (const auto& [k, v] : env) v ? setenv(k, v, 1) : unsetenv(k);
  auto m = Model::load(path);
  EnvRun r;
  r.report = kernel_report(*m, backend_or_fail("cpu"));
  Session s(m, 2);
  int seen = 0;
  if (observe) s.set_linear_observer([&](size_t, const float*, int64_t, int64_t) { ++seen; });
  std::vector<Sequence> batch = batch_for(m->config().vocab_size);
  if (!lengths.empty()) {
    std::mt19937 rng(11);
    std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(m->config().vocab_size - 1));
    batch.assign(lengths.size(), Sequence{});
    for (size_t i = 0; i < lengths.size(); ++i)
      for (int t = 0; t < lengths[i]; ++t) batch[i].ids.push_back(id(rng));
  }
  const HiddenStates h = s.run(batch);
  if (observe) CHECK(seen > 0);
  r.h.assign(h.data, h.data + h.offsets.back() * h.width);
  for (const auto& kv : env) unsetenv(kv.first);
  return r;
}

int ops_saying(const EnvRun& r, const char* text) {
  int n = 0;
  for (const OpKernel& k : r.report) n += k.why.find(text) != std::string::npos;
  return n;
}

bool same_bits(const EnvRun& a, const EnvRun& b) {
  return a.h.size() == b.h.size() && std::memcmp(a.h.data(), b.h.data(), a.h.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("QKV head panels: the same bits with and without, observed runs included") {
  const std::string path = write_pruned_int8("panels", 70, false);  // panels of 16
  const EnvRun on = run_under_env(path, {{"SPINEL_QKV_PANELS", nullptr}}),
               off = run_under_env(path, {{"SPINEL_QKV_PANELS", "off"}}),
               observed = run_under_env(path, {{"SPINEL_QKV_PANELS", nullptr}}, true);
  // Every layer's QKV Linear and its attention, where the sparse kernel runs
  // (every ISA level has one).
  CHECK(ops_saying(on, "output in head panels") == 2);
  CHECK(ops_saying(on, "read from head panels") == 2);
  CHECK(ops_saying(off, "head panels") == 0);
  CHECK(same_bits(on, off));
  // Observed runs keep token rows (the attention reads what it is handed).
  CHECK(same_bits(observed, on));
}

TEST_CASE("QKV as BF16 for a BF16 attention: the same bits with and without, observed runs included") {
  // The sparse QKV Linear writes BF16 head panels where the 64-token kernel
  // runs on a CPU with AVX512_BF16 and the attention is a BF16 kind
  // (select.h qkv_bf16_rows); the attention rounds Q, K and V so itself.
  const std::string path = write_pruned_int8("qkvbf16", 75, false);
  const EnvRun on = run_under_env(path, {{"SPINEL_QKV_BF16", nullptr}}),
               off = run_under_env(path, {{"SPINEL_QKV_BF16", "off"}}),
               observed = run_under_env(path, {{"SPINEL_QKV_BF16", nullptr}}, true);
  const auto kind = kernels::choose_attention(/*int8_model=*/true, 16).products;
  const bool here = kernels::spmm_u8s8_bf16_available() &&
                    (kind == kernels::AttentionProducts::AmxBf16 || kind == kernels::AttentionProducts::Avx512Bf16);
  if (!here) MESSAGE("QKV as BF16 does not apply here (no AVX512_BF16, the ISA capped, or an FP32 attention)");
  CHECK(ops_saying(on, "output in BF16 for the BF16 attention") == (here ? 2 : 0));
  CHECK(ops_saying(on, "read as BF16") == (here ? 2 : 0));
  CHECK(ops_saying(off, "BF16 for the BF16 attention") == 0);
  CHECK(same_bits(on, off));
  // Observed runs keep f32 (the attention reads what the Linear's tag says).
  CHECK(same_bits(observed, on));
}

TEST_CASE("LayerNorm quantizing the next Linear's input: the same bits with and without, observed runs included") {
  const std::string path = write_pruned_int8("lnquant", 90, true);  // sparse and dense layers
  const EnvRun on = run_under_env(path, {{"SPINEL_LN_QUANT", nullptr}}),
               off = run_under_env(path, {{"SPINEL_LN_QUANT", "off"}}),
               observed = run_under_env(path, {{"SPINEL_LN_QUANT", nullptr}}, true);
  // Each layer's LayerNorm before its FFN, and the first layer's last
  // LayerNorm before the second layer's QKV (the first QKV follows the
  // embedding): 2 layers -> 3 pairs.
  CHECK(ops_saying(on, "quantized to 8 bits per token for the next Linear") == 3);
  CHECK(ops_saying(on, "input quantized by the LayerNorm before it") == 3);
  CHECK(ops_saying(off, "quantized by the LayerNorm") == 0);
  CHECK(same_bits(on, off));
  CHECK(same_bits(observed, on));
}

TEST_CASE("Sparse kernels quantizing their own input: the same bits with and without") {
  const std::string path = write_pruned_int8("kquant", 110, false);
  // With and without the LayerNorm fusion (without it, every sparse Linear
  // but the chain's first quantizes in its kernel, QKV with head panels).
  const EnvRun ref = run_under_env(path, {{"SPINEL_KERNEL_QUANT", "off"}, {"SPINEL_LN_QUANT", "off"}});
  CHECK(ops_saying(ref, "quantized by the kernel's threads") == 0);
  for (const char* lnq : {"off", "on"}) {
    CAPTURE(lnq);
    const EnvRun got = run_under_env(path, {{"SPINEL_KERNEL_QUANT", nullptr}, {"SPINEL_LN_QUANT", lnq}});
    // Every sparse Linear with f32 input but a chain's first: each layer's
    // QKV, attention output and FFN2 (and FFN1 where there is no chain,
    // below AVX-512 VNNI) without the LayerNorm fusion; with it, the
    // LayerNorms feed the QKV of layer 2 and each FFN1 instead.
    const bool chain = kernels::spmm_u8s8_chain_available();
    const int want = std::strcmp(lnq, "off") == 0 ? (chain ? 6 : 8) : 5;
    CHECK(ops_saying(got, "input quantized by the kernel's threads") == want);
    CHECK(same_bits(got, ref));
  }
}

TEST_CASE("LayerNorm on the Linear's threads: the same bits with and without, at several token counts") {
  // Token counts: one block whose channels both threads compute (its rows
  // are normalized after the kernel's region), whole blocks per thread, and
  // both at once.
  const std::vector<std::vector<int>> batches = {{}, {40}, {60, 60, 60, 60, 60}, {3, 64, 61}};
  const std::string path = write_pruned_int8("lnfuse", 130, false);
  for (const auto& lengths : batches) {
    CAPTURE(lengths.size());
    const EnvRun off = run_under_env(path, {{"SPINEL_LN_FUSE", "off"}}, false, lengths);
    CHECK(ops_saying(off, "LayerNorm after it runs") == 0);
    // With the LayerNorm quantizing the next Linear's input or not, and the
    // kernels' inputs quantized in a separate pass (the u8 paths) or not.
    for (const char* lnq : {"on", "off"})
      for (const char* kq : {"on", "off"}) {
        CAPTURE(lnq);
        CAPTURE(kq);
        const EnvRun on = run_under_env(
            path, {{"SPINEL_LN_FUSE", nullptr}, {"SPINEL_LN_QUANT", lnq}, {"SPINEL_KERNEL_QUANT", kq}}, false, lengths);
        // Each layer's attention output and FFN2.
        CHECK(ops_saying(on, "the LayerNorm after it runs on the kernel's threads") == 4);
        CHECK(ops_saying(on, "run by the Linear before it") == 4);
        CHECK(same_bits(on, off));
      }
    // Observed runs (every value written) keep the LayerNorm apart.
    const EnvRun observed = run_under_env(path, {{"SPINEL_LN_FUSE", nullptr}}, true, lengths);
    CHECK(same_bits(observed, off));
  }
  // Dense INT8 Linears (oneDNN: each epilogue thread's rows) run it too:
  // with every other Linear pruned, one of each layer's two pairs is dense.
  const std::string mixed = write_pruned_int8("lnfuse_mixed", 140, true);
  for (const auto& lengths : batches) {
    CAPTURE(lengths.size());
    const EnvRun on = run_under_env(mixed, {{"SPINEL_LN_FUSE", nullptr}}, false, lengths),
                 off = run_under_env(mixed, {{"SPINEL_LN_FUSE", "off"}}, false, lengths);
    CHECK(ops_saying(on, "the LayerNorm after it runs on the kernel's threads") == 4);
    CHECK(same_bits(on, off));
  }
}

TEST_CASE("A Linear quantizing the next dense Linear's input: the same bits with and without, every way dense layers run") {
  // Token counts as for the LayerNorm fusion: split blocks, whole blocks, both.
  const std::vector<std::vector<int>> batches = {{}, {40}, {60, 60, 60, 60, 60}, {3, 64, 61}};
  const std::string dense = write_pruned_int8("linquant", 150, false, true);
  for (const auto& lengths : batches) {
    CAPTURE(lengths.size());
    // (oneDNN's matmul, also where the AMX kernel would be the default.)
    const EnvRun off = run_under_env(dense, {{"SPINEL_LINEAR_QUANT", "off"}, {"SPINEL_DENSE_S8", "dnnl"}}, false,
                                     lengths);
    CHECK(ops_saying(off, "for the next Linear on the kernel's threads") == 0);
    CHECK(ops_saying(off, "input quantized by the Linear before it") == 0);
    // oneDNN in TBB tasks by rows (each task quantizes its rows) or by column
    // parts (the rows after the region), and on oneDNN's OpenMP threads.
    for (const char* pool : {"tbb", "omp"})
      for (const char* split : {"rows", "cols"}) {
        CAPTURE(pool);
        CAPTURE(split);
        const EnvRun on = run_under_env(dense,
                                        {{"SPINEL_LINEAR_QUANT", nullptr},
                                         {"SPINEL_DENSE_S8", "dnnl"},
                                         {"SPINEL_DENSE_POOL", pool},
                                         {"SPINEL_DENSE_SPLIT", split}},
                                        false, lengths);
        // Each layer's FFN1 -> FFN2.
        CHECK(ops_saying(on, "output quantized per token for the next Linear on the kernel's threads") == 2);
        CHECK(ops_saying(on, "input quantized by the Linear before it") == 2);
        CHECK(same_bits(on, off));
      }
    setenv("SPINEL_DENSE_S8", "dnnl", 1);
    // Observed runs (every value written) keep the quantization apart.
    const EnvRun observed = run_under_env(dense, {{"SPINEL_LINEAR_QUANT", nullptr}}, true, lengths);
    unsetenv("SPINEL_DENSE_S8");
    CHECK(same_bits(observed, off));
    // The AMX kernel (its default where the CPU has AMX-INT8) hands FFN1's
    // output to the quantization as f16 (DenseLinearU8S8::QuantOut): one
    // rounding to f16 on FFN2's input, which flips some of its u8 values,
    // and those flips travel on. So not the same bits: the hidden states
    // within a relative error of 1e-2 of those quantized from f32. Off, the
    // AMX kernel's f32 epilogue gives oneDNN's bits.
    if (kernels::cpu_has_amx_int8() && kernels::active_isa() == kernels::Isa::Avx512Vnni) {
      const EnvRun amx_off = run_under_env(dense, {{"SPINEL_LINEAR_QUANT", "off"}}, false, lengths),
                   amx_on = run_under_env(dense, {{"SPINEL_LINEAR_QUANT", nullptr}}, false, lengths);
      CHECK(ops_saying(amx_on, "output quantized per token for the next Linear on the kernel's threads") == 2);
      CHECK(same_bits(amx_off, off));
      REQUIRE(amx_on.h.size() == off.h.size());
      double d2 = 0, r2 = 0;
      for (size_t i = 0; i < off.h.size(); ++i) {
        d2 += (double(amx_on.h[i]) - off.h[i]) * (double(amx_on.h[i]) - off.h[i]);
        r2 += double(off.h[i]) * off.h[i];
      }
      const double rel = std::sqrt(d2 / r2);
      MESSAGE("AMX QuantOut (f16) vs f32 hand-off: relative error " << rel);
      CHECK(rel <= 1e-2);
    }
  }
  // Not before a block-sparse Linear (it quantizes its own input): with
  // every Linear pruned, no pair; with every other one, only a sparse FFN1
  // before a dense FFN2 (its kernel threads hand the rows over).
  const EnvRun sparse = run_under_env(write_pruned_int8("linquant_sparse", 160, false), {});
  CHECK(ops_saying(sparse, "for the next Linear on the kernel's threads") == 0);
  // (Dense layers on oneDNN: where they run the sparse kernel, the pair chains instead.)
  const std::string mixed = write_pruned_int8("linquant_mixed", 170, true);
  const EnvRun mixed_on =
      run_under_env(mixed, {{"SPINEL_LINEAR_QUANT", nullptr}, {"SPINEL_DENSE_S8", "dnnl"}}, false, {60, 60, 3});
  const EnvRun mixed_off =
      run_under_env(mixed, {{"SPINEL_LINEAR_QUANT", "off"}, {"SPINEL_DENSE_S8", "dnnl"}}, false, {60, 60, 3});
  // (Ops: embedding, then per layer QKV, attention, output, LayerNorm, FFN1,
  // FFN2, LayerNorm; even indices pruned: layer 2's FFN1, not its FFN2.)
  CHECK(ops_saying(mixed_on, "output quantized per token for the next Linear on the kernel's threads") == 1);
  CHECK(ops_saying(mixed_on, "input quantized by the Linear before it") == 1);
  CHECK(same_bits(mixed_on, mixed_off));
}
