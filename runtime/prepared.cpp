#include "runtime/prepared.h"

#include <chrono>

#include "runtime/error.h"

namespace spinel {

PreparedModel::PreparedModel(const Model& m, const Backend& b) : backend_(&b), variant_(b.variant()) {
  const auto t0 = std::chrono::steady_clock::now();
  const Graph& g = m.graph();
  auto weights_of = [&m, &g](size_t i) {
    OpWeights w;
    if (i >= g.ops.size()) return w;
    for (int s = 0; s < slot::kCount; ++s) {
      const int32_t t = g.ops[i].w[static_cast<size_t>(s)];
      if (t < 0) continue;
      w.data[static_cast<size_t>(s)] = m.tensor_data(t);
      w.info[static_cast<size_t>(s)] = &m.tensors()[static_cast<size_t>(t)];
    }
    return w;
  };
  for (size_t i = 0; i < g.ops.size(); ++i) {
    const Op& op = g.ops[i];
    const OpImpl* impl = b.op(op.kind);
    if (!impl)
      fail("the ", b.name(), " backend has no ", op_kind_name(op.kind), " (op #", i, " '", op.name, "')");
    PrepareArgs a{op, g, m.config(), {}, op.in0 >= 0 ? g.values[op.in0].width : 0,
                  g.values[op.out].width, weights_of};
    a.weights = weights_of(i);
    impls_.push_back(impl);
    ops_.push_back(impl->prepare(a));
    bytes_ += ops_.back()->bytes();
  }
  seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::shared_ptr<const PreparedModel> prepared_model(const Model& m, const Backend& b) {
  const std::string key = std::string(b.name()) + "/" + b.variant();
  // One preparation at a time per model: a second session arriving while the
  // first prepares waits for it and then shares the result.
  std::lock_guard<std::mutex> lock(m.prepared_mu_);
  for (const auto& [k, p] : m.prepared_)
    if (k == key) return std::static_pointer_cast<const PreparedModel>(p);
  auto p = std::make_shared<const PreparedModel>(m, b);
  m.prepared_.emplace_back(key, p);
  return p;
}

const Backend& backend_or_fail(const std::string& name) {
  if (const Backend* b = find_backend(name)) {
    const std::string why = b->unavailable();
    if (!why.empty()) fail("the ", name, " backend cannot run here: ", why);
    return *b;
  }
  const std::string missing = backend_missing_reason(name);
  if (!missing.empty()) fail("backend '", name, "': ", missing);
  std::string known;
  for (const std::string& n : backend_names()) known += (known.empty() ? "" : ", ") + n;
  fail("unknown backend '", name, "' (this build has: ", known, ")");
}

std::vector<OpKernel> kernel_report(const Model& m, const Backend& b) {
  const auto p = prepared_model(m, b);
  std::vector<OpKernel> out;
  const Graph& g = m.graph();
  for (size_t i = 0; i < g.ops.size(); ++i)
    out.push_back({i, g.ops[i].name, g.ops[i].kind, p->op(i).kernel(), p->op(i).why()});
  return out;
}

}  // namespace spinel
