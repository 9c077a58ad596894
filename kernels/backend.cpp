#include "kernels/backend.h"

#include <mutex>
#include <stdexcept>

namespace spinel {

void* Workspace::get(int slot_id, size_t bytes) {
  if (slot_id < 0) throw std::invalid_argument("workspace slot must be >= 0");
  if (static_cast<size_t>(slot_id) >= blocks_.size()) blocks_.resize(static_cast<size_t>(slot_id) + 1);
  Block& b = blocks_[static_cast<size_t>(slot_id)];
  if (b.size < bytes) {
    // 64-byte aligned, grow-only; contents are not kept.
    const size_t n = (bytes + 63) / 64 * 64;
    b.mem.reset(static_cast<uint8_t*>(::operator new[](n, std::align_val_t(64))));
    b.size = n;
  }
  return b.mem.get();
}

size_t Workspace::bytes() const {
  size_t n = 0;
  for (const Block& b : blocks_) n += b.size;
  return n;
}

namespace {

struct Registry {
  std::mutex mu;
  std::vector<std::unique_ptr<Backend>> backends;
  bool builtins = false;
};

Registry& registry() {
  static Registry r;
  return r;
}

void add_locked(Registry& r, std::unique_ptr<Backend> b) {
  for (const auto& x : r.backends)
    if (std::string(x->name()) == b->name())
      throw std::invalid_argument(std::string("backend '") + b->name() + "' is registered twice");
  r.backends.push_back(std::move(b));
}

Registry& with_builtins() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  if (!r.builtins) {
    r.builtins = true;
    add_locked(r, make_cpu_backend());
    add_locked(r, make_reference_backend());
  }
  return r;
}

}  // namespace

const Backend* find_backend(const std::string& name) {
  Registry& r = with_builtins();
  std::lock_guard<std::mutex> lock(r.mu);
  for (const auto& b : r.backends)
    if (name == b->name()) return b.get();
  return nullptr;
}

std::vector<std::string> backend_names() {
  Registry& r = with_builtins();
  std::lock_guard<std::mutex> lock(r.mu);
  std::vector<std::string> names;
  for (const auto& b : r.backends) names.emplace_back(b->name());
  return names;
}

void register_backend(std::unique_ptr<Backend> b) {
  Registry& r = with_builtins();
  std::lock_guard<std::mutex> lock(r.mu);
  add_locked(r, std::move(b));
}

}  // namespace spinel
