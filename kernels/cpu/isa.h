// Run-time x86 ISA detection and capping: the one vocabulary of every kernel
// family (INT8 Linear, FP32 rows, the kernel choice in select.h).
//
// The CPU is probed once (CPUID + XGETBV, so a feature counts only when the OS
// also saves its register state). The level actually used is the detected one,
// lowered by the environment variable SPINEL_ISA (read once, at first use) and
// by set_max_isa(). Neither can raise it past what the CPU runs, so forcing a
// level never leads to SIGILL.
//
// SPINEL_ISA values: avx512vnni | avxvnni | avx2 | scalar (also the FP32
// kernels' names avx512 and generic, as aliases of avx512vnni and scalar).
// An unknown value is ignored with a one-line warning on stderr naming the
// accepted values: a typo in an environment variable should not stop a
// service, and the level chosen is still a safe one.
#pragma once

namespace spinel::kernels {

// Ordered: each level implies the ones before it.
enum class Isa : int {
  Scalar = 0,      // plain C++
  Avx2 = 1,        // AVX2 + FMA; u8 x s8 dot products emulated with vpmaddwd
  Avx2Vnni = 2,    // ymm kernels with vpdpbusd: AVX-VNNI (VEX, e.g. Alder Lake), or the
                   // EVEX form on AVX-512 VNNI CPUs that lack AVX-VNNI
  Avx512Vnni = 3,  // AVX-512 F/BW/VL/DQ + VNNI (EVEX vpdpbusd on zmm), e.g. Cascade Lake and later
};

// Best level this CPU and OS run (ignores every cap).
Isa detected_isa();
// detected_isa() capped by SPINEL_ISA and set_max_isa(): what kernels dispatch on.
Isa active_isa();
// Caps the level for later calls (process-wide). Passing a level above the
// detected one is allowed and simply has no effect beyond the detected level.
// Returns the previous cap. Not meant to race with running kernels.
Isa set_max_isa(Isa cap);
// True when this CPU runs `isa` (regardless of caps).
bool cpu_supports(Isa isa);
// True when the CPU has AVX-VNNI proper (VEX vpdpbusd). Without it, an
// AVX-512 VNNI CPU runs the Avx2Vnni level's kernels in their EVEX-encoded
// build, so that level (and its tests) still run there.
bool cpu_has_avxvnni();
// True when the CPU runs AVX-512 F/BW/VL/DQ (the FP32 row kernels' AVX-512
// build, which needs no VNNI). Not affected by caps.
bool cpu_has_avx512_core();
// True when the CPU has AMX-INT8 and the OS lets this process use it: dense
// INT8 layers then run on dense_s8_amx.cpp (at the avx512vnni level), which
// moves the sparse/dense crossover (select.h kCrossoverAmx). Not affected by
// caps.
bool cpu_has_amx_int8();
// True when the CPU has AMX-BF16 tiles (and AVX512_BF16 conversions, and
// AVX-512 VNNI) and the OS lets this process use them: the attention block of
// attention_amx.cpp runs then. Not affected by caps (the choice checks the
// active level itself).
bool cpu_has_amx_bf16();
// True when the CPU has AVX512_BF16 (and AVX-512 VNNI): the attention block
// of attention_bf16.cpp can run. Not affected by caps.
bool cpu_has_avx512_bf16();
// True when AVX512_BF16's vdpbf16ps issues at vfmadd's rate (32 products per
// instruction against 16), so BF16 attention products beat FP32 ones: AMD's
// AVX-512 cores (Zen 4 and later; measured on Zen 5, select.h). On Intel's
// (Sapphire Rapids, measured) it issues at half the rate and AMX does the
// work instead.
bool cpu_bf16_dot_full_rate();
// True on AMD's AVX-512 VNNI cores (Zen 4 and later), where the block-sparse
// kernel's byte unpacks issue beside vpdpbusd instead of competing with it:
// its inner loop runs at the VNNI peak (on Zen 4, bench_spmm_s8's
// BM_VnniUnpackLoop equals BM_VnniPeak; on Intel's the unpacks cap it near
// 2/3). There it runs dense INT8 layers too, every block kept (select.h
// dense_s8_mode). Measured on Zen 4; Zen 5 assumed alike. Not affected by caps.
bool cpu_vnni_unpacks_free();
// "scalar", "avx2", "avxvnni", "avx512vnni".
const char* isa_name(Isa isa);
// Parses the names above (and the aliases "generic", "avx512"); false if unknown.
bool parse_isa(const char* name, Isa* out);

}  // namespace spinel::kernels
