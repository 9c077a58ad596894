// A session runs a loaded model on packed variable-length batches, on one
// backend (kernels/backend.h). The model (weights mapped from the .spnl) and
// its prepared state for that backend (packed weights, kernel choices:
// runtime/prepared.h) are shared read-only by every session; a session owns
// only its activation arena, its scratch and its thread budget, which both
// our TBB kernels and oneDNN honour. One session runs one batch at a time;
// use one session per thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/spnl.h"

namespace spinel {

// One input sequence: token ids (with [CLS]/[SEP] already in place) and
// optional token type ids (empty = all zeros).
struct Sequence {
  std::vector<int32_t> ids;
  std::vector<int32_t> type_ids;
};

// last_hidden_state of a batch, packed: rows offsets[i] .. offsets[i+1] of
// `hidden` belong to sequence i.
struct HiddenStates {
  std::vector<int64_t> offsets;
  int64_t width = 0;
  const float* data = nullptr;  // owned by the session, valid until its next run
  const float* row(int64_t token) const { return data + token * width; }
};

constexpr int kMaxThreads = 1024;

struct SessionOptions {
  // 0 uses every hardware thread; outside [0, kMaxThreads] is an error.
  int threads = 0;
  // "cpu" (default) or "reference" (plain loops, one thread: what tests
  // compare against); backend_names() lists what this build has.
  std::string backend = "cpu";
  // Limits of one run, 0 = none: a batch of more sequences or more tokens
  // (all sequences together) is an error naming the limit. The activation
  // arena grows with the largest batch run, so max_tokens also bounds it.
  int64_t max_batch = 0;
  int64_t max_tokens = 0;
  // A batch runs through the whole graph in slices of whole sequences of up
  // to this many tokens (a longer sequence is a slice of its own), so that
  // what one op writes is still in cache for the next: -1 (default) 128 per
  // thread per MB of a core's L2 (1 to 4 MB) where the weights are small, or
  // SPINEL_SLICE_TOKENS (auto, off or a count) when set; 0 the
  // whole batch at once. The results do not depend on it; below -1 is an
  // error.
  int64_t slice_tokens = -1;
};

// A per-sequence output of the last run (pooler_output, ...): rows =
// sequences of the batch.
struct OutputView {
  std::string name;
  int64_t rows = 0, width = 0;
  const float* data = nullptr;  // owned by the session, valid until its next run
  const float* row(int64_t i) const { return data + i * width; }
};

class PreparedModel;
class Backend;
class Executor;

class Session {
 public:
  explicit Session(std::shared_ptr<const Model> model, const SessionOptions& opts = {});
  Session(std::shared_ptr<const Model> model, int threads);
  ~Session();

  // Checks every id against the vocabulary and every length against the
  // model's limit before computing anything; throws spinel::Error naming
  // the sequence and token at fault.
  HiddenStates run(const std::vector<Sequence>& batch);
  // What run() checks first, without running: the session's limits, then
  // check_batch. Throws spinel::Error naming the limit, sequence or token.
  void check(const std::vector<Sequence>& batch) const;

  // Called with the f32 input of every Linear op before it runs (for
  // calibration). Pass an empty function to remove.
  using LinearObserver =
      std::function<void(size_t op_index, const float* x, int64_t rows, int64_t cols)>;
  void set_linear_observer(LinearObserver f);

  // A per-sequence graph output of the last run, by name (see
  // Model::graph().outputs); throws spinel::Error naming the known outputs.
  OutputView output(const std::string& name) const;

  int threads() const { return threads_; }
  int64_t max_batch() const { return max_batch_; }
  int64_t max_tokens() const { return max_tokens_; }
  // Tokens per slice of a run (SessionOptions::slice_tokens, resolved; 0:
  // whole batches, always on a device backend).
  int64_t slice_tokens() const { return slice_tokens_; }
  const Model& model() const { return *model_; }
  const Backend& backend() const;
  const PreparedModel& prepared() const { return *prepared_; }
  // Bytes of activation memory currently held by the arena and scratch.
  size_t arena_bytes() const;

  // Per-op wall time: while profiling is on, every run adds each op's time
  // (seconds, indexed like model().graph().ops) and counts the run.
  // Switching it on clears what was gathered. Off by default: two clock
  // reads per op. See runtime/profile.h for a summary by op class.
  void set_profiling(bool on);
  bool profiling() const;
  const std::vector<double>& op_seconds() const;
  int64_t profiled_runs() const;

  struct Impl;  // opaque: memory plan, arena, workspace

 private:
  std::shared_ptr<const Model> model_;
  std::shared_ptr<const PreparedModel> prepared_;
  int threads_;
  int64_t max_batch_ = 0, max_tokens_ = 0;
  int64_t slice_tokens_ = 0;  // resolved: 0 = the whole batch at once
  std::unique_ptr<Impl> impl_;
};

// Throws spinel::Error if any token id, token type or length is out of range.
void check_batch(const Model& model, const std::vector<Sequence>& batch);

enum class Pooling { Cls, Mean, None };
// One vector per sequence: the [CLS] row, or the mean of its rows.
std::vector<std::vector<float>> pool(const HiddenStates& h, Pooling how);
void l2_normalize(std::vector<float>& v);

// The sentence vectors of the last run of `s` for a pooling name: "cls",
// "mean", a per-sequence graph output ("pooler_output"; "pooler" is its
// alias), optionally L2-normalized. Throws spinel::Error for other names,
// listing what the model offers ("none" is not a pooling).
std::vector<std::vector<float>> pooled(const Session& s, const HiddenStates& h,
                                       const std::string& how, bool normalize);
// The same over outputs kept elsewhere (the C API's results): `output(name)`
// returns the per-sequence output `name` of the run that gave `h`; it is
// called only for names the model's graph has.
std::vector<std::vector<float>> pooled(const Model& m, const HiddenStates& h,
                                       const std::function<OutputView(const std::string&)>& output,
                                       const std::string& how, bool normalize);
// The names `pooled` accepts for this model, for messages and --help.
std::vector<std::string> pooling_names(const Model& m);

}  // namespace spinel
