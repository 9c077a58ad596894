// attention_f32: work items are (sequence, head, block of query rows), spread
// over the caller's arena. Each running item uses the scratch slot of the
// thread running it, so concurrent items never share memory and nothing is
// allocated per call.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>
#include <tbb/task_arena.h>

#include "kernels/cpu/f32_isa.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel_util.h"
#include "kernels/cpu/qgemm.h"

namespace spinel::kernels {
namespace {

// Query rows per work item when whole heads are too few to share out. Each
// item transposes its head's K and copies V (2 * len * head_dim floats, a
// strided scalar copy that measured ~20% of the item at len 128 with 64
// rows), so items are whole heads whenever there are enough of them
// (>= kItemsPerThread per thread); only then are heads split into blocks of
// 64 query rows, so that a single long sequence still feeds every thread.
constexpr int64_t kQueryRowsPerItem = 64;
constexpr int64_t kItemsPerThread = 4;

float* align64(float* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  return reinterpret_cast<float*>((a + 63) & ~uintptr_t{63});
}

}  // namespace

const char* attention_products_name(AttentionProducts p) {
  switch (p) {
    case AttentionProducts::F32: return "f32";
    case AttentionProducts::AmxBf16: return "amx_bf16";
    case AttentionProducts::Avx512Bf16: return "avx512_bf16";
    case AttentionProducts::Avx512S8Qk: return "avx512_s8qk";
  }
  return "unknown";
}

// One slot per thread the current arena may run (its max_concurrency), each
// big enough for one head of the longest sequence, plus alignment slack.
// attention_f32 must run in an arena with no more threads than the one this
// was called in, on sequences no longer than max_seq_len.
size_t attention_scratch_floats(int64_t max_seq_len, int64_t num_heads, int64_t head_dim) {
  const auto slots = static_cast<size_t>(std::max(1, tbb::this_task_arena::max_concurrency()));
  return slots * f32::attention_slot_floats(max_seq_len, head_dim) + f32::kPad;
}

// (The INT8 Q.K^T block quantizes Q and K from BF16 rows or K's pair words
// as it would from f32 rows of the same values.)
bool attention_reads_bf16(AttentionProducts p) {
  return p == AttentionProducts::AmxBf16 || p == AttentionProducts::Avx512Bf16 || p == AttentionProducts::Avx512S8Qk;
}

void attention_f32(const float* qkv, const int64_t* seq_offsets, int64_t num_seqs,
                   int64_t num_heads, int64_t head_dim, float scale, float* out, float* scratch,
                   const float* alibi_slopes, AttentionProducts products, bool qkv_panels, bool qkv_bf16,
                   bool k_pairs, bool v_pairs) {
  if (num_seqs <= 0 || num_heads <= 0 || head_dim <= 0) return;
  const bool bf16_reader = attention_reads_bf16(products);
  if (k_pairs && (!bf16_reader || !qkv_panels || !qkv_bf16 || head_dim % 32 != 0))
    throw std::logic_error("attention_f32: K in pair words is read by the BF16 and INT8 Q.K^T blocks only, from "
                           "BF16 head panels of whole 32-dim tile rows");
  if (v_pairs && (!k_pairs || seq_offsets[num_seqs] % 2 != 0))
    throw std::logic_error("attention_f32: V in pair words comes with K in pair words, for an even token count");
  if (qkv_bf16 && !bf16_reader)
    throw std::logic_error("attention_f32: BF16 Q, K and V are read by the BF16 and INT8 Q.K^T blocks only");
  if (products == AttentionProducts::AmxBf16 && !cpu_has_amx_bf16())
    throw std::logic_error("attention_f32: AMX-BF16 asked for on a CPU without it");
  if (products == AttentionProducts::Avx512Bf16 && !cpu_has_avx512_bf16())
    throw std::logic_error("attention_f32: AVX512_BF16 asked for on a CPU without it");
  if (products == AttentionProducts::Avx512S8Qk &&
      (!cpu_has_avx512_bf16() || active_isa() != Isa::Avx512Vnni))
    throw std::logic_error("attention_f32: INT8 Q.K^T asked for without AVX512_BF16 and AVX-512 VNNI");
  int64_t max_len = 0;
  for (int64_t s = 0; s < num_seqs; ++s)
    max_len = std::max(max_len, seq_offsets[s + 1] - seq_offsets[s]);
  if (max_len == 0) return;

  const auto& k = f32::kernel_table();
  void (*const run_block)(const f32::AttentionBlock&, float*) =
      products == AttentionProducts::AmxBf16      ? f32::attention_block_amx_bf16
      : products == AttentionProducts::Avx512Bf16 ? f32::attention_block_avx512_bf16
      : products == AttentionProducts::Avx512S8Qk ? f32::attention_block_avx512_s8qk
                                                  : k.attention_block;
  const int64_t hidden = num_heads * head_dim;
  const int64_t total_tokens = seq_offsets[num_seqs];
  // Slots are laid out for this call's longest sequence: never larger than
  // what attention_scratch_floats() reserved for its max_seq_len.
  const size_t slot_floats = f32::attention_slot_floats(max_len, head_dim);
  float* slots = align64(scratch);

  const int64_t threads = std::max(1, tbb::this_task_arena::max_concurrency());
  // Panels written split by heads (qgemm.h qkv_head_pieces) are read by
  // whole heads, split the same way (below).
  const int64_t head_pieces = qkv_panels ? qkv_head_pieces(3 * hidden, head_dim, total_tokens) : 0;
  const int64_t rows_per_item =
      head_pieces > 1 || num_seqs * num_heads >= kItemsPerThread * threads ? max_len : kQueryRowsPerItem;
  const int64_t blocks_per_head = (max_len + rows_per_item - 1) / rows_per_item;
  const int64_t items = num_seqs * num_heads * blocks_per_head;

  auto run_item = [&](int64_t item, float* slot) {
    const int64_t block = item % blocks_per_head;
    const int64_t head = (item / blocks_per_head) % num_heads;
    const int64_t seq = item / (blocks_per_head * num_heads);
    const int64_t first = seq_offsets[seq];
    const int64_t len = seq_offsets[seq + 1] - first;
    const int64_t q_begin = block * rows_per_item;
    if (q_begin >= len) return;  // shorter sequence: nothing in this block
    f32::AttentionBlock b;
    b.seq_len = len;
    b.qkv = nullptr;
    if (qkv_panels) {
      // Panel h of [3 H][T][head_dim]: rows head_dim apart.
      const int64_t panel = total_tokens * head_dim;
      if (qkv_bf16)
        b.qkv_bf16 = reinterpret_cast<const uint16_t*>(qkv) + first * head_dim;
      else
        b.qkv = qkv + first * head_dim;
      b.qkv_stride = head_dim;
      b.q_col = head * panel;
      b.k_col = (num_heads + head) * panel;
      b.v_col = (2 * num_heads + head) * panel;
      if (k_pairs) {
        // K's panel: head_dim / 2 rows of T pair words, the sequence's from
        // column first. Its last keys' tiles read up to 15 words past the
        // sequence: the next row's or, after the last row, the next panel's
        // (V's panels follow K's), so within the buffer.
        b.k2 = reinterpret_cast<const uint32_t*>(reinterpret_cast<const uint16_t*>(qkv) + b.k_col) + first;
        b.k2_stride = total_tokens;
      }
      if (v_pairs) {
        // V's panel: T / 2 rows of head_dim pair words (tokens 2g, 2g + 1).
        b.v2_pairs = reinterpret_cast<const uint32_t*>(reinterpret_cast<const uint16_t*>(qkv) + b.v_col);
        b.v2_first = first;
      }
    } else {
      if (qkv_bf16)
        b.qkv_bf16 = reinterpret_cast<const uint16_t*>(qkv) + first * 3 * hidden;
      else
        b.qkv = qkv + first * 3 * hidden;
      b.qkv_stride = 3 * hidden;
      b.q_col = head * head_dim;
      b.k_col = hidden + head * head_dim;
      b.v_col = 2 * hidden + head * head_dim;
    }
    b.head_dim = head_dim;
    b.q_begin = q_begin;
    b.q_end = std::min(len, q_begin + rows_per_item);
    b.scale = scale;
    b.alibi_slope = alibi_slopes ? alibi_slopes[head] : 0.0f;
    b.out = out + first * hidden + head * head_dim;
    b.out_stride = hidden;
    run_block(b, slot);
  };

  if (items == 1) {
    run_item(0, slots);
    return;
  }
  if (hot_pool() == Pool::OpenMP) {
    // As many OpenMP threads as the scratch has slots (the arena's size,
    // which the session sets equal to its OpenMP budget).
    omp_rows(
        items, 1,
        [&](int64_t b, int64_t e) {
          float* slot = slots + static_cast<size_t>(omp_get_thread_num()) * slot_floats;
          for (int64_t i = b; i < e; ++i) run_item(i, slot);
        },
        threads);
    return;
  }
  if (head_pieces > 1) {
    // Piece p runs whole heads [H p / P, H (p + 1) / P) of every sequence,
    // on the thread that computed their Q, K and V (the same static
    // partition, from the same calling thread).
    const int64_t pieces = head_pieces;
    tbb::parallel_for(
        tbb::blocked_range<int64_t>(0, pieces, 1),
        [&](const tbb::blocked_range<int64_t>& r) {
          const int idx = std::max(0, tbb::this_task_arena::current_thread_index());
          float* slot = slots + static_cast<size_t>(idx) * slot_floats;
          for (int64_t p = r.begin(); p < r.end(); ++p)
            for (int64_t s = 0; s < num_seqs; ++s)
              for (int64_t h = num_heads * p / pieces; h < num_heads * (p + 1) / pieces; ++h)
                for (int64_t blk = 0; blk < blocks_per_head; ++blk)
                  run_item((s * num_heads + h) * blocks_per_head + blk, slot);
        },
        tbb::static_partitioner());
    return;
  }
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, items, 1),
                    [&](const tbb::blocked_range<int64_t>& r) {
                      // Items run to completion without nested parallelism, so
                      // a thread never interleaves two items in its slot.
                      const int idx = std::max(0, tbb::this_task_arena::current_thread_index());
                      float* slot = slots + static_cast<size_t>(idx) * slot_floats;
                      for (int64_t i = r.begin(); i != r.end(); ++i) run_item(i, slot);
                    });
}

}  // namespace spinel::kernels
