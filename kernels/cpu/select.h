// The one place where the cpu backend chooses a Linear layer's kernel, from
// the CPU (detected once, capped by SPINEL_ISA / set_max_isa) and the layer's
// block sparsity as stored in the .spnl. The converter's default threshold
// comes from the same table.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/ir.h"

namespace spinel::kernels {

enum class LinearImpl { DnnlF32, DnnlU8S8, SparseU8S8 };
const char* linear_impl_name(LinearImpl impl);  // "dnnl-f32", "dnnl-u8s8", "sparse-u8s8"

// Block sparsity from which the 4x1 block-sparse kernel beats oneDNN's dense
// u8s8 matmul (M = 128 tokens, 1 and 2 threads; bench/RESULTS.md "Sparse vs
// dense crossover"), by the dense kernel oneDNN has on the CPU.
struct SparseCrossover {
  const char* dense_kernel;  // what oneDNN's u8s8 runs on
  double min_sparsity;
};
// On AVX-512 VNNI (and below): convert's default --sparse-threshold.
constexpr SparseCrossover kCrossoverVnni{"avx512_core_vnni", 0.4};
// On AMX-INT8 the dense kernel is much faster, and the sparse one wins later.
constexpr SparseCrossover kCrossoverAmx{"avx512_core_amx", 0.7};

// The crossover that applies on this CPU at the active ISA level.
const SparseCrossover& crossover_here();

struct LinearChoice {
  LinearImpl impl = LinearImpl::DnnlF32;
  std::string why;  // one line: "block sparsity 0.91 >= 0.40 (avx512_core_vnni)"
};

// precision: what the file says (F32, S8Dense, or S8Sparse = the converter
// found the layer sparse enough for the sparse kernel). block_sparsity: the
// stored value, or < 0 when the file has none (then it is measured from W,
// s8 [K, N], which must be given for S8Sparse layers).
//   F32 -> DnnlF32; S8Dense -> DnnlU8S8;
//   S8Sparse -> SparseU8S8, unless AMX-INT8 is usable at the active level and
//               the sparsity is below kCrossoverAmx (then DnnlU8S8); an ISA
//               cap below AVX-512 VNNI asks for that level's sparse kernel.
LinearChoice choose_linear(Precision precision, double block_sparsity, const int8_t* W, int64_t K,
                           int64_t N);

}  // namespace spinel::kernels
