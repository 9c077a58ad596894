#include "kernels/cpu/huge_slab.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SPINEL_SLAB_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define SPINEL_SLAB_ASAN 1
#endif
#ifdef SPINEL_SLAB_ASAN
#include <sanitizer/asan_interface.h>
// Under ASan a slab is poisoned except for live buffers, and each buffer is
// followed by 64 poisoned bytes: a read or write past one is reported as it
// would be for its own allocation.
#define SLAB_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define SLAB_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
constexpr size_t kRedzone = 64;
#else
#define SLAB_POISON(p, n) ((void)(p), (void)(n))
#define SLAB_UNPOISON(p, n) ((void)(p), (void)(n))
constexpr size_t kRedzone = 0;
#endif

namespace spinel::kernels {
namespace {

constexpr size_t kHuge = size_t{2} << 20;
constexpr size_t kSlab = size_t{32} << 20;

struct Slab {
  char* base;
  size_t size;
  size_t used;  // bump pointer
  size_t live;  // buffers not yet freed
};

struct Slabs {
  std::mutex mu;
  std::vector<Slab> slabs;
  std::unordered_map<char*, size_t> sizes;  // live buffers' requested sizes
};

Slabs& slabs() {
  static Slabs* s = new Slabs;  // never destroyed: buffers may outlive static destruction order
  return *s;
}

}  // namespace

void* slab_alloc(size_t bytes) {
  const size_t need = (bytes + 63) / 64 * 64 + kRedzone;
  Slabs& s = slabs();
  std::lock_guard<std::mutex> lock(s.mu);
  for (Slab& sl : s.slabs)
    if (sl.size - sl.used >= need) {
      void* p = sl.base + sl.used;
      sl.used += need;
      ++sl.live;
      SLAB_UNPOISON(p, bytes);
      s.sizes[static_cast<char*>(p)] = bytes;
      return p;
    }
  const size_t size = need > kSlab ? (need + kHuge - 1) / kHuge * kHuge : kSlab;
  void* base = std::aligned_alloc(kHuge, size);
  if (!base) throw std::bad_alloc();
  madvise(base, size, MADV_HUGEPAGE);  // a hint: without THP the slab is ordinary memory
  SLAB_POISON(base, size);
  SLAB_UNPOISON(base, bytes);
  s.slabs.push_back(Slab{static_cast<char*>(base), size, need, 1});
  s.sizes[static_cast<char*>(base)] = bytes;
  return base;
}

void slab_free(void* p) {
  if (!p) return;
  Slabs& s = slabs();
  std::lock_guard<std::mutex> lock(s.mu);
  for (size_t i = 0; i < s.slabs.size(); ++i) {
    Slab& sl = s.slabs[i];
    char* c = static_cast<char*>(p);
    if (c < sl.base || c >= sl.base + sl.size) continue;
    // Its bytes stay poisoned until the slab goes: a use after free is reported.
    auto it = s.sizes.find(c);
    if (it != s.sizes.end()) {
      SLAB_POISON(c, it->second);
      s.sizes.erase(it);
    }
    if (--sl.live == 0) {
      SLAB_UNPOISON(sl.base, sl.size);
      std::free(sl.base);
      s.slabs.erase(s.slabs.begin() + static_cast<std::ptrdiff_t>(i));
    }
    return;
  }
}

size_t slab_bytes_reserved() {
  Slabs& s = slabs();
  std::lock_guard<std::mutex> lock(s.mu);
  size_t n = 0;
  for (const Slab& sl : s.slabs) n += sl.size;
  return n;
}

}  // namespace spinel::kernels
