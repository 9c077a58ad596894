#include "runtime/session.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "kernels/backend.h"
#include "runtime/error.h"
#include "runtime/prepared.h"

namespace spinel {

namespace {

// Assigns every graph value to a buffer so that values whose lifetimes do not
// overlap share memory. Widths are in floats per token; the arena holds
// sum(buffer widths) * tokens floats.
struct MemoryPlan {
  std::vector<int> buffer_of_value;
  std::vector<int64_t> buffer_width;
  std::vector<int64_t> buffer_offset;  // floats per token before this buffer
  int64_t floats_per_token = 0;

  explicit MemoryPlan(const Graph& g) {
    const size_t nv = g.values.size();
    std::vector<size_t> last_use(nv, 0);
    for (size_t i = 0; i < g.ops.size(); ++i) {
      const Op& op = g.ops[i];
      for (int32_t v : {op.in0, op.in1})
        if (v >= 0) last_use[v] = std::max(last_use[v], i);
      last_use[op.out] = std::max(last_use[op.out], i);
    }
    // The results outlive the graph.
    if (g.output >= 0) last_use[g.output] = g.ops.size();
    for (const GraphOutput& o : g.outputs)
      if (o.value >= 0) last_use[o.value] = g.ops.size();
    buffer_of_value.assign(nv, -1);
    std::vector<bool> busy;
    for (size_t i = 0; i < g.ops.size(); ++i) {
      const Op& op = g.ops[i];
      // The output never shares a buffer with this op's inputs: kernels may
      // not support aliasing, and inputs are freed only after the op.
      // A result of the graph gets a buffer of its own, which no other value
      // ever uses: a run in slices (Session::run) writes each slice's rows of
      // every value, and a value sharing a result's buffer would write over
      // the results of the slices before (rows of a narrower value, or
      // sequence rows, start before the same token's rows of the result).
      int best = -1;
      const int64_t w = g.values[op.out].width;
      const bool result = last_use[op.out] == g.ops.size();
      for (size_t b = 0; b < busy.size() && !result; ++b) {
        if (busy[b] || buffer_width[b] < w) continue;
        if (best < 0 || buffer_width[b] < buffer_width[best]) best = static_cast<int>(b);
      }
      if (best < 0) {
        best = static_cast<int>(buffer_width.size());
        buffer_width.push_back(w);
        busy.push_back(false);
      }
      busy[best] = true;
      buffer_of_value[op.out] = best;
      for (int32_t v : {op.in0, op.in1, op.out})
        if (v >= 0 && last_use[v] == i) busy[buffer_of_value[v]] = false;
    }
    for (int64_t w : buffer_width) {
      buffer_offset.push_back(floats_per_token);
      floats_per_token += w;
    }
  }
};

// A run's slices: the whole graph runs on up to this many tokens of whole
// sequences at a time (a sequence longer than that is a slice of its own),
// so that what a layer writes and the next op reads stays in the cores' own
// caches, at the price of reading every Linear's weights once per slice.
// 128 tokens per thread per MB of L2 (below), when no op reads more than
// kSliceMaxWeightBytes of weights per run. Measured on two Zen 5 cores (1 MB
// L2 each, 32 MB shared L3), 8 x 128 tokens, whole batch against slices of
// 256 tokens: BERT-base 90% INT8 (its largest Linear reads ~0.35 MB) 1.10x
// offline (the f32 FFN intermediate alone is 12.6 MB at 1024 tokens); dense
// MiniLM INT8 (0.59 MB) 1.0x; dense BERT-base INT8 (2.4 MB) 0.96x and MiniLM
// FP32 (2.4 MB) 0.94x. The tokens per thread scale with the L2 (128 per MB,
// 1 to 4 MB): on an Intel Xeon with 2 MB per core, BERT-base 90% INT8
// offline ran 0.957x the whole batch in slices of 256 tokens, 0.999x in
// slices of 512 (1.025x and 1.037x over 256). SPINEL_SLICE_TOKENS: auto
// (unset: this rule), off (0: the whole batch at once), or a token count.
constexpr int64_t kSliceTokensPerL2Mb = 128;
constexpr size_t kSliceMaxWeightBytes = 512 * 1024;

// A core's L2 in whole MB, 1 to 4 (1 where the system does not say).
int64_t l2_megabytes() {
  const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
  const int64_t mb = l2 > 0 ? static_cast<int64_t>(l2) / (1024 * 1024) : 1;
  return std::min<int64_t>(4, std::max<int64_t>(1, mb));
}

int64_t auto_slice_tokens(int threads, size_t max_op_weight_bytes) {
  const int64_t fallback = max_op_weight_bytes <= kSliceMaxWeightBytes
                               ? kSliceTokensPerL2Mb * l2_megabytes() * std::max(1, threads)
                               : 0;
  const char* v = std::getenv("SPINEL_SLICE_TOKENS");
  if (!v || !*v || !std::strcmp(v, "auto")) return fallback;
  if (!std::strcmp(v, "off") || !std::strcmp(v, "0")) return 0;
  char* end = nullptr;
  const long long n = std::strtoll(v, &end, 10);
  if (end && *end == 0 && n > 0) return n;
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true))
    std::fprintf(stderr, "spinel: warning: SPINEL_SLICE_TOKENS=%s is not auto, off or a token count; using auto\n", v);
  return fallback;
}

}  // namespace

void check_batch(const Model& model, const std::vector<Sequence>& batch) {
  const ModelConfig& c = model.config();
  if (batch.empty()) fail("the batch is empty");
  for (size_t i = 0; i < batch.size(); ++i) {
    const Sequence& s = batch[i];
    if (s.ids.empty()) fail("sequence ", i, " has no tokens");
    if (static_cast<int64_t>(s.ids.size()) > c.max_position)
      fail("sequence ", i, " has ", s.ids.size(), " tokens; the model accepts at most ",
           c.max_position);
    if (!s.type_ids.empty() && s.type_ids.size() != s.ids.size())
      fail("sequence ", i, " has ", s.ids.size(), " token ids but ", s.type_ids.size(),
           " token type ids");
    for (size_t t = 0; t < s.ids.size(); ++t) {
      if (s.ids[t] < 0 || s.ids[t] >= c.vocab_size)
        fail("sequence ", i, ", token ", t, ": id ", s.ids[t], " is outside the vocabulary [0, ",
             c.vocab_size, ")");
    }
    for (size_t t = 0; t < s.type_ids.size(); ++t) {
      if (s.type_ids[t] < 0 || s.type_ids[t] >= std::max<int64_t>(c.type_vocab_size, 1))
        fail("sequence ", i, ", token ", t, ": token type ", s.type_ids[t], " is outside [0, ",
             std::max<int64_t>(c.type_vocab_size, 1), ")");
    }
  }
}

struct Session::Impl {
  std::unique_ptr<Executor> exec;
  MemoryPlan plan;
  float* arena = nullptr;  // the executor's arena (its memory) during and after a run
  // Host-readable results of the last run (the executor's to_host): slot 0
  // is the graph output, slot 1 + i graph output i.
  std::vector<const float*> host_out;
  Session::LinearObserver observer;
  std::vector<int32_t> ids, type_ids, positions;
  std::vector<int64_t> offsets;
  int64_t last_seqs = 0, last_tokens = 0;
  bool profiling = false;
  std::vector<double> op_seconds;
  int64_t profiled_runs = 0;

  explicit Impl(const Model& m) : plan(m.graph()) {}
};

Session::Session(std::shared_ptr<const Model> model, int threads)
    : Session(std::move(model), SessionOptions{threads, "cpu"}) {}

Session::Session(std::shared_ptr<const Model> model, const SessionOptions& opts)
    : model_(std::move(model)) {
  if (!model_) fail("no model given to the session");
  if (opts.threads < 0 || opts.threads > kMaxThreads)
    fail("thread count ", opts.threads, " is outside [0, ", kMaxThreads, "] (0 = all cores)");
  if (opts.max_batch < 0) fail("max_batch ", opts.max_batch, " is negative (0 = no limit)");
  if (opts.max_tokens < 0) fail("max_tokens ", opts.max_tokens, " is negative (0 = no limit)");
  if (opts.slice_tokens < -1)
    fail("slice_tokens ", opts.slice_tokens, " is below -1 (-1 = auto, 0 = the whole batch at once)");
  max_batch_ = opts.max_batch;
  max_tokens_ = opts.max_tokens;
  threads_ = opts.threads > 0 ? opts.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const Backend& b = backend_or_fail(opts.backend);
  prepared_ = prepared_model(*model_, b);
  impl_ = std::make_unique<Impl>(*model_);
  impl_->exec = b.make_executor(threads_);
  size_t max_weight_bytes = 0;
  for (size_t i = 0; i < model_->graph().ops.size(); ++i)
    max_weight_bytes = std::max(max_weight_bytes, prepared_->op(i).run_weight_bytes());
  // A device backend runs whole batches.
  slice_tokens_ = !impl_->exec->host_memory() ? 0
                  : opts.slice_tokens >= 0   ? opts.slice_tokens
                                             : auto_slice_tokens(threads_, max_weight_bytes);
}

Session::~Session() = default;

const Backend& Session::backend() const { return prepared_->backend(); }

void Session::set_linear_observer(LinearObserver f) { impl_->observer = std::move(f); }

void Session::set_profiling(bool on) {
  impl_->profiling = on;
  if (on) {
    impl_->op_seconds.assign(model_->graph().ops.size(), 0.0);
    impl_->profiled_runs = 0;
  }
}
bool Session::profiling() const { return impl_->profiling; }
const std::vector<double>& Session::op_seconds() const { return impl_->op_seconds; }
int64_t Session::profiled_runs() const { return impl_->profiled_runs; }

size_t Session::arena_bytes() const {
  return impl_->exec->bytes();
}

void Session::check(const std::vector<Sequence>& batch) const {
  if (max_batch_ > 0 && static_cast<int64_t>(batch.size()) > max_batch_)
    fail("the batch has ", batch.size(), " sequences, more than this session's max_batch of ", max_batch_);
  if (max_tokens_ > 0) {
    int64_t tokens = 0;
    for (const Sequence& q : batch) tokens += static_cast<int64_t>(q.ids.size());
    if (tokens > max_tokens_)
      fail("the batch has ", tokens, " tokens, more than this session's max_tokens of ", max_tokens_);
  }
  check_batch(*model_, batch);
}

HiddenStates Session::run(const std::vector<Sequence>& batch) {
  check(batch);
  Impl& s = *impl_;
  const Graph& g = model_->graph();

  // Pack the batch: token ids, types and positions back to back.
  s.ids.clear();
  s.type_ids.clear();
  s.positions.clear();
  s.offsets.assign(1, 0);
  for (const Sequence& q : batch) {
    s.ids.insert(s.ids.end(), q.ids.begin(), q.ids.end());
    if (q.type_ids.empty())
      s.type_ids.insert(s.type_ids.end(), q.ids.size(), 0);
    else
      s.type_ids.insert(s.type_ids.end(), q.type_ids.begin(), q.type_ids.end());
    for (size_t t = 0; t < q.ids.size(); ++t) s.positions.push_back(static_cast<int32_t>(t));
    s.offsets.push_back(static_cast<int64_t>(s.ids.size()));
  }
  const int64_t T = static_cast<int64_t>(s.ids.size());
  const int64_t num_seqs = static_cast<int64_t>(batch.size());

  // Grow, never shrink: the arena is sized by the largest batch seen. A
  // value with sequence rows fits in its buffer (num_seqs <= T).
  // The arena and the scratch are the executor's, in its memory.
  Executor& ex = *s.exec;
  const size_t need = static_cast<size_t>(T * s.plan.floats_per_token);
  s.arena = static_cast<float*>(ex.arena(std::max<size_t>(need, 1) * sizeof(float)));
  auto value_ptr = [&](int32_t v) -> float* {
    if (v < 0) return nullptr;
    return s.arena + s.plan.buffer_offset[s.plan.buffer_of_value[v]] * T;
  };
  auto rows_of = [&](int32_t v) -> int64_t {
    return g.values[v].rows == Rows::Sequences ? num_seqs : T;
  };

  // Slices of whole sequences [first, last) (see slice_tokens): each runs
  // every op on its own rows of the values' buffers (token rows from its
  // first token, sequence rows from its first sequence), so the results are
  // where one run of the whole batch puts them. Not on a device backend, nor
  // when an observer is to see each Linear's whole input.
  std::vector<std::pair<int64_t, int64_t>> slices;
  const int64_t per_slice = s.observer ? 0 : slice_tokens_;
  for (int64_t q = 0; q < num_seqs;) {
    int64_t e = q + 1;
    if (per_slice > 0)
      while (e < num_seqs && s.offsets[e + 1] - s.offsets[q] <= per_slice) ++e;
    else
      e = num_seqs;
    slices.emplace_back(q, e);
    q = e;
  }
  const PreparedModel& p = *prepared_;
  std::vector<float> observed;  // the observer's host copy on a device backend
  std::vector<int64_t> slice_offsets;

  s.last_tokens = 0;  // outputs are unreadable if the run fails
  for (const auto& slice : slices) {
    // (Plain copies: C++17 lambdas cannot capture structured bindings.)
    const int64_t first = slice.first, last = slice.second;
    const int64_t tok0 = s.offsets[first], Ts = s.offsets[last] - tok0, seqs = last - first;
    slice_offsets.resize(static_cast<size_t>(seqs + 1));
    int64_t max_len = 0;
    for (int64_t q = 0; q <= seqs; ++q) {
      slice_offsets[q] = s.offsets[first + q] - tok0;
      if (q > 0) max_len = std::max(max_len, slice_offsets[q] - slice_offsets[q - 1]);
    }
    auto slice_ptr = [&](int32_t v) -> float* {
      float* base = value_ptr(v);
      if (!base) return nullptr;
      return base + (g.values[v].rows == Rows::Sequences ? first : tok0) * g.values[v].width;
    };
    auto slice_rows = [&](int32_t v) -> int64_t { return g.values[v].rows == Rows::Sequences ? seqs : Ts; };
    BatchView bv;
    bv.ids = s.ids.data() + tok0;
    bv.type_ids = s.type_ids.data() + tok0;
    bv.positions = s.positions.data() + tok0;
    bv.tokens = Ts;
    bv.seq_offsets = slice_offsets.data();
    bv.num_seqs = seqs;
    bv.max_len = max_len;
    const BatchView staged = ex.stage(bv);
    RunContext ctx{staged, ex.workspace(), threads_, &ex};
    ctx.keep_values = static_cast<bool>(s.observer);
    ex.execute([&] {
      for (size_t i = 0; i < g.ops.size(); ++i) {
        const Op& op = g.ops[i];
        OpIO io;
        io.in0 = slice_ptr(op.in0);
        io.in1 = slice_ptr(op.in1);
        io.in_rows = op.in0 >= 0 ? slice_rows(op.in0) : Ts;
        io.in_width = op.in0 >= 0 ? g.values[op.in0].width : 0;
        io.out = slice_ptr(op.out);
        io.out_rows = slice_rows(op.out);
        io.out_width = g.values[op.out].width;
        io.next_out = i + 1 < g.ops.size() ? slice_ptr(g.ops[i + 1].out) : nullptr;
        if (op.kind == OpKind::Linear && s.observer) {
          if (ex.host_memory()) {
            s.observer(i, io.in0, io.in_rows, io.in_width);
          } else {
            observed.resize(static_cast<size_t>(io.in_rows * io.in_width));
            ex.copy_to_host(observed.data(), io.in0, observed.size() * sizeof(float));
            s.observer(i, observed.data(), io.in_rows, io.in_width);
          }
        }
        if (!s.profiling) {
          p.impl(i).run(op, p.op(i), io, ctx);
          continue;
        }
        const auto t0 = std::chrono::steady_clock::now();
        p.impl(i).run(op, p.op(i), io, ctx);
        ex.synchronize();  // a device backend's op has finished only then
        s.op_seconds[i] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
    });
  }
  if (s.profiling) ++s.profiled_runs;

  // The results, readable on the host (the same pointers on a host backend).
  s.host_out.assign(1 + g.outputs.size(), nullptr);
  s.host_out[0] = ex.to_host(0, value_ptr(g.output),
                             static_cast<size_t>(rows_of(g.output) * g.values[g.output].width));
  for (size_t o = 0; o < g.outputs.size(); ++o) {
    const int32_t v = g.outputs[o].value;
    if (v >= 0)
      s.host_out[1 + o] = ex.to_host(static_cast<int>(1 + o), value_ptr(v),
                                     static_cast<size_t>(rows_of(v) * g.values[v].width));
  }
  s.last_seqs = num_seqs;
  s.last_tokens = T;

  HiddenStates h;
  h.offsets = s.offsets;
  h.width = g.values[g.output].width;
  h.data = s.host_out[0];
  return h;
}

OutputView Session::output(const std::string& name) const {
  const Graph& g = model_->graph();
  const int i = g.find_output(name);
  if (i < 0) {
    std::string known;
    for (const GraphOutput& o : g.outputs) known += (known.empty() ? "" : ", ") + o.name;
    fail("the model has no output '", name, "'", known.empty() ? " (it has no per-sequence outputs)"
                                                               : " (it has: " + known + ")");
  }
  if (impl_->last_tokens == 0) fail("output '", name, "' is read before the first run");
  const int32_t v = g.outputs[static_cast<size_t>(i)].value;
  const Impl& s = *impl_;
  OutputView o;
  o.name = name;
  o.rows = s.last_seqs;
  o.width = g.values[v].width;
  o.data = s.host_out[1 + static_cast<size_t>(i)];
  return o;
}

std::vector<std::vector<float>> pool(const HiddenStates& h, Pooling how) {
  std::vector<std::vector<float>> out;
  const size_t n = h.offsets.empty() ? 0 : h.offsets.size() - 1;
  for (size_t i = 0; i < n; ++i) {
    const int64_t b = h.offsets[i], e = h.offsets[i + 1];
    std::vector<float> v(static_cast<size_t>(h.width), 0.f);
    if (how == Pooling::Cls) {
      std::copy(h.row(b), h.row(b) + h.width, v.begin());
    } else {
      // Accumulate in double: sequences can be hundreds of tokens long.
      std::vector<double> acc(static_cast<size_t>(h.width), 0.0);
      for (int64_t t = b; t < e; ++t)
        for (int64_t j = 0; j < h.width; ++j) acc[j] += h.row(t)[j];
      for (int64_t j = 0; j < h.width; ++j) v[j] = static_cast<float>(acc[j] / double(e - b));
    }
    out.push_back(std::move(v));
  }
  return out;
}

void l2_normalize(std::vector<float>& v) {
  double ss = 0;
  for (float x : v) ss += double(x) * x;
  const double n = std::max(std::sqrt(ss), 1e-12);
  for (float& x : v) x = static_cast<float>(x / n);
}

std::vector<std::string> pooling_names(const Model& m) {
  std::vector<std::string> names{"cls", "mean"};
  for (const GraphOutput& o : m.graph().outputs) {
    if (o.name == "pooler_output") names.push_back("pooler");
    names.push_back(o.name);
  }
  return names;
}

std::vector<std::vector<float>> pooled(const Model& m, const HiddenStates& h,
                                       const std::function<OutputView(const std::string&)>& output,
                                       const std::string& how, bool normalize) {
  std::vector<std::vector<float>> out;
  if (how == "cls" || how == "mean") {
    out = pool(h, how == "cls" ? Pooling::Cls : Pooling::Mean);
  } else {
    const Graph& g = m.graph();
    const std::string name = how == "pooler" && g.find_output("pooler_output") >= 0 ? "pooler_output" : how;
    if (g.find_output(name) < 0) {
      std::string known;
      for (const std::string& n : pooling_names(m)) known += (known.empty() ? "" : ", ") + n;
      fail("pooling '", how, "' is not available for this model (it has: ", known, ")");
    }
    const OutputView o = output(name);
    for (int64_t r = 0; r < o.rows; ++r) out.emplace_back(o.row(r), o.row(r) + o.width);
  }
  if (normalize)
    for (auto& v : out) l2_normalize(v);
  return out;
}

std::vector<std::vector<float>> pooled(const Session& s, const HiddenStates& h, const std::string& how,
                                       bool normalize) {
  return pooled(s.model(), h, [&](const std::string& name) { return s.output(name); }, how, normalize);
}

}  // namespace spinel
