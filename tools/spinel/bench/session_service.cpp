#include "tools/spinel/bench/session_service.h"

#include <algorithm>
#include <chrono>

#include "runtime/error.h"

namespace spinel::bench {

TokenSpace token_space(const Model& model) {
  const Tokenizer& tok = model.tokenizer();
  TokenSpace s;
  s.vocab = std::min<int64_t>(static_cast<int64_t>(tok.vocab_size()), model.config().vocab_size);
  s.cls = tok.cls_id();
  s.sep = tok.sep_id();
  for (int32_t id : {tok.unk_id(), tok.pad_id()})
    if (id >= 0) s.excluded.push_back(id);
  for (const char* name : {"[MASK]", "<mask>", "<s>", "</s>", "<pad>", "<unk>", "[PAD]", "[UNK]"}) {
    const int32_t id = tok.token_id(name);
    if (id >= 0) s.excluded.push_back(id);
  }
  return s;
}

SessionService::SessionService(std::shared_ptr<const Model> model, int instances, int threads,
                               std::shared_ptr<const std::vector<Sequence>> pool)
    : model_(std::move(model)), pool_(std::move(pool)) {
  if (!pool_ || pool_->empty()) fail("the benchmark's query pool is empty");
  SessionOptions so;
  so.threads = threads;
  for (int i = 0; i < instances; ++i) sessions_.push_back(std::make_unique<Session>(model_, so));
  batch_.resize(sessions_.size());
}

void SessionService::run(int instance, int64_t first, int64_t count) {
  auto& batch = batch_[static_cast<size_t>(instance)];
  batch.resize(static_cast<size_t>(count));
  const auto& pool = *pool_;
  for (int64_t k = 0; k < count; ++k) batch[static_cast<size_t>(k)] = pool[static_cast<size_t>(first + k) % pool.size()];
  sessions_[static_cast<size_t>(instance)]->run(batch);
}

int64_t SessionService::tokens(int64_t q) const {
  return static_cast<int64_t>((*pool_)[static_cast<size_t>(q) % pool_->size()].ids.size());
}

void SessionService::warm(size_t max_batch) {
  std::vector<Sequence> longest(*pool_);
  std::stable_sort(longest.begin(), longest.end(),
                   [](const Sequence& a, const Sequence& b) { return a.ids.size() > b.ids.size(); });
  longest.resize(std::min(longest.size(), std::max<size_t>(max_batch, 1)));
  while (longest.size() < max_batch) longest.push_back(longest.front());
  for (auto& s : sessions_) s->run(longest);
}

double SessionService::time_batch(size_t count, int reps) {
  std::vector<double> t;
  for (int r = 0; r < std::max(1, reps); ++r) {
    const auto a = std::chrono::steady_clock::now();
    run(0, static_cast<int64_t>(r) * static_cast<int64_t>(count), static_cast<int64_t>(count));
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace spinel::bench
