// The benchmark's Service on a real model: N sessions of T threads over one
// loaded model (sessions share its prepared weights), fed from a pool of
// synthetic queries.
#pragma once

#include <memory>
#include <vector>

#include "runtime/session.h"
#include "tools/spinel/bench/harness.h"
#include "tools/spinel/bench/queries.h"

namespace spinel::bench {

// The token space of a model's synthetic queries: its vocabulary less the
// special tokens, with [CLS]/[SEP] where its tokenizer puts them.
TokenSpace token_space(const Model& model);

class SessionService : public Service {
 public:
  // Query q runs pool[q % pool.size()].
  SessionService(std::shared_ptr<const Model> model, int instances, int threads,
                 std::shared_ptr<const std::vector<Sequence>> pool);
  int instances() const override { return static_cast<int>(sessions_.size()); }
  void run(int instance, int64_t first, int64_t count) override;
  int64_t tokens(int64_t q) const override;
  // Runs a batch of `max_batch` of the pool's longest queries on every
  // instance (one at a time), so that arenas are grown before anything is timed.
  void warm(size_t max_batch);
  // Median seconds of `reps` batches of `count` pool queries on instance 0
  // alone (the start of a rate search).
  double time_batch(size_t count, int reps);
  // Tokens per slice of the instances' runs (Session::slice_tokens; 0: whole
  // batches).
  int64_t slice_tokens() const { return sessions_.empty() ? 0 : sessions_.front()->slice_tokens(); }

 private:
  std::shared_ptr<const Model> model_;
  std::vector<std::unique_ptr<Session>> sessions_;
  std::shared_ptr<const std::vector<Sequence>> pool_;
  std::vector<std::vector<Sequence>> batch_;  // per instance, reused
};

}  // namespace spinel::bench
