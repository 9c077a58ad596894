// A session runs a loaded model on packed variable-length batches. The model
// (weights mapped from the .spnl) is shared read-only; the session owns its
// kernels' state, a memory arena reused across runs and a thread budget that
// both our TBB kernels and oneDNN honour.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
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

class Session {
 public:
  // threads = 0 uses every hardware thread; outside [0, kMaxThreads] is an error.
  Session(std::shared_ptr<const Model> model, int threads = 0);
  ~Session();

  // Checks every id against the vocabulary and every length against the
  // model's limit before computing anything; throws spinel::Error naming
  // the sequence and token at fault.
  HiddenStates run(const std::vector<Sequence>& batch);

  // Called with the f32 input of every Linear op before it runs (for
  // calibration). Pass an empty function to remove.
  using LinearObserver =
      std::function<void(size_t op_index, const float* x, int64_t rows, int64_t cols)>;
  void set_linear_observer(LinearObserver f);

  int threads() const { return threads_; }
  const Model& model() const { return *model_; }
  // Bytes of activation memory currently held by the arena.
  size_t arena_bytes() const;

  struct Impl;  // opaque: kernels, memory plan, arena

 private:
  std::shared_ptr<const Model> model_;
  int threads_;
  std::unique_ptr<Impl> impl_;
};

// The same computation through the plain reference kernels, single-threaded;
// returns [total_tokens, hidden] row-major. For tests.
std::vector<float> run_reference(const Model& model, const std::vector<Sequence>& batch);

// Throws spinel::Error if any token id, token type or length is out of range.
void check_batch(const Model& model, const std::vector<Sequence>& batch);

enum class Pooling { Cls, Mean, None };
// One vector per sequence: the [CLS] row, or the mean of its rows.
std::vector<std::vector<float>> pool(const HiddenStates& h, Pooling how);
void l2_normalize(std::vector<float>& v);

}  // namespace spinel
