// Where a session's time goes: the per-op times a profiling session gathers
// (Session::set_profiling), summed by op class: the op kind, the kernel that
// ran it and, for Linear layers, the shape ("Linear spmm_u8s8_4x1_16x4_avx2
// 768->2304", "Attention attention_f32_avx2"), so that BERT's four Linear
// roles (QKV, attention output, FFN1, FFN2) get a row each.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace spinel {

class Session;

struct ProfileClass {
  std::string kind;    // op kind name (Linear, Attention, ...)
  std::string kernel;  // the prepared op's kernel name
  std::string shape;   // Linear: "K->N" (input and output widths); else empty
  int64_t ops = 0;     // ops of this class in the graph
  double ms_per_run = 0;
  double percent = 0;  // of the summed op time
};

// Classes by decreasing time. Empty when nothing was profiled.
std::vector<ProfileClass> profile_by_class(const Session& s);

// A table for people: class, shape, ops, ms per run, %, and the total.
std::string profile_table(const std::vector<ProfileClass>& rows, int64_t runs);

}  // namespace spinel
