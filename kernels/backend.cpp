#include "kernels/backend.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <mutex>
#include <stdexcept>

namespace spinel {

// Buffers of 4 MB and more (a session's arena, large workspace slots) start
// on a 2 MB boundary and their whole 2 MB pieces are offered to transparent
// huge pages (madvise; the tail stays on 4 KB pages, so nothing is rounded
// up): rows of a [tokens, width] matrix lie pages apart, and on 4 KB pages a
// kernel walking 32 of them at once missed the TLB on most (dense BERT-base
// INT8 1.09x end to end with this and the weights on huge pages,
// kernels/cpu/huge_slab.h).
Allocator host_allocator() {
  Allocator a;
  a.alloc = [](size_t bytes) -> void* {
    constexpr size_t kHuge = size_t{2} << 20;
    const bool big = bytes >= 2 * kHuge;
    void* p = nullptr;
    if (posix_memalign(&p, big ? kHuge : 64, bytes > 0 ? bytes : 1) != 0 || !p) throw std::bad_alloc();
    if (big) madvise(p, bytes / kHuge * kHuge, MADV_HUGEPAGE);
    return p;
  };
  a.free = [](void* p) { std::free(p); };
  return a;
}

Workspace::~Workspace() {
  for (Block& b : blocks_) alloc_.free(b.mem);
}

void* Workspace::get(int slot_id, size_t bytes) {
  if (slot_id < 0) throw std::invalid_argument("workspace slot must be >= 0");
  if (static_cast<size_t>(slot_id) >= blocks_.size()) blocks_.resize(static_cast<size_t>(slot_id) + 1);
  Block& b = blocks_[static_cast<size_t>(slot_id)];
  if (b.size < bytes) {
    // 64-byte aligned, grow-only; contents are not kept. A new block is
    // zeroed once (a tag slot read before any op wrote it then reads 0).
    const size_t n = (bytes + 63) / 64 * 64;
    alloc_.free(b.mem);
    b.mem = nullptr;
    b.size = 0;
    b.mem = alloc_.alloc(n);
    b.size = n;
    std::memset(b.mem, 0, n);
  }
  return b.mem;
}

size_t Workspace::bytes() const {
  size_t n = 0;
  for (const Block& b : blocks_) n += b.size;
  return n;
}

Executor::~Executor() { alloc_.free(arena_); }

void* Executor::arena(size_t bytes) {
  if (arena_size_ < bytes) {
    const size_t n = (bytes + 63) / 64 * 64;
    alloc_.free(arena_);
    arena_ = nullptr;
    arena_size_ = 0;
    arena_ = alloc_.alloc(n);
    arena_size_ = n;
  }
  return arena_;
}

void Executor::copy_from_host(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
}

void Executor::copy_to_host(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
}

std::string backend_missing_reason(const std::string& name) {
#ifndef SPINEL_HAVE_CUDA
  if (name == "cuda") return "spinel was built without CUDA (configure with -DSPINEL_CUDA=ON)";
#endif
  return {};
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
#ifdef SPINEL_HAVE_CUDA
    add_locked(r, make_cuda_backend());
#endif
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
