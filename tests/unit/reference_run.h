// Expected values for the tests: the same model and batch on the reference
// backend (plain loops, one thread).
#pragma once

#include <memory>
#include <vector>

#include "runtime/session.h"

namespace spinel {

// last_hidden_state [total_tokens, hidden] row-major.
inline std::vector<float> reference_run(const std::shared_ptr<const Model>& m,
                                        const std::vector<Sequence>& batch) {
  SessionOptions o;
  o.threads = 1;
  o.backend = "reference";
  Session s(m, o);
  const HiddenStates h = s.run(batch);
  return std::vector<float>(h.data, h.data + h.offsets.back() * h.width);
}

}  // namespace spinel
