// Long-lived large buffers (packed weights) carved out of shared slabs that
// the kernel is asked to back with 2 MB pages (madvise MADV_HUGEPAGE; Debian
// enables transparent huge pages on request only).
//
// Why: a forward pass of dense BERT-base INT8 streams ~85 MB of packed
// weights; on 4 KB pages that is ~21,000 pages, each a TLB miss and a page
// walk as the stream crosses it. With the weights (and the session's arena,
// see kernels/backend.cpp) on huge pages the dense layers ran 1.09x faster
// end to end (bench/RESULTS.md). One slab holds many layers so that only a
// slab's last, partly used huge page is wasted (a buffer of its own per
// layer would round every layer up to 2 MB pages: +70% for BERT-base).
#pragma once

#include <cstddef>
#include <memory>

namespace spinel::kernels {

// 64-byte aligned, uninitialized; never null (throws std::bad_alloc).
void* slab_alloc(size_t bytes);
// Gives back a slab_alloc buffer; a slab is freed with its last buffer.
void slab_free(void* p);
// Bytes of all slabs held now (tests).
size_t slab_bytes_reserved();

struct SlabDeleter {
  void operator()(void* p) const { slab_free(p); }
};
using SlabBuffer = std::unique_ptr<void, SlabDeleter>;

}  // namespace spinel::kernels
