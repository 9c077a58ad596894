// A model prepared for one backend: per op, what the backend's prepare() made
// (packed weights, the kernel choice). Made once per model, backend and
// variant, under the model's lock, and shared read-only by every session.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "runtime/spnl.h"

namespace spinel {

class PreparedModel {
 public:
  PreparedModel(const Model& m, const Backend& b);
  const Backend& backend() const { return *backend_; }
  const std::string& variant() const { return variant_; }
  // Null for ops of kinds the backend lacks (never: preparing fails then).
  const PreparedOp& op(size_t i) const { return *ops_[i]; }
  const OpImpl& impl(size_t i) const { return *impls_[i]; }
  size_t bytes() const { return bytes_; }
  double prepare_seconds() const { return seconds_; }

 private:
  const Backend* backend_;
  std::string variant_;
  std::vector<const OpImpl*> impls_;
  std::vector<std::unique_ptr<PreparedOp>> ops_;
  size_t bytes_ = 0;
  double seconds_ = 0;
};

// The prepared state of `m` for `b` at its current variant: made on first use,
// then shared. Thread-safe. Throws spinel::Error naming the op a backend
// cannot run.
std::shared_ptr<const PreparedModel> prepared_model(const Model& m, const Backend& b);

// The backend registered as `name`; throws spinel::Error listing the known
// ones when there is none.
const Backend& backend_or_fail(const std::string& name);

// What each op of a model runs on a backend, for `inspect` and the C API.
struct OpKernel {
  size_t op_index = 0;
  std::string op_name;
  OpKind kind = OpKind::Linear;
  std::string kernel;
  std::string why;
};
std::vector<OpKernel> kernel_report(const Model& m, const Backend& b);

}  // namespace spinel
