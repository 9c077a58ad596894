// CPU feature detection for the INT8 kernels; see isa.h.
#include "kernels/cpu/isa.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define SPINEL_X86 1
#endif
#if defined(__linux__) && defined(SPINEL_X86)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace spinel::kernels {
namespace {

#ifdef SPINEL_X86
struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};

Regs cpuid(unsigned leaf, unsigned sub) {
  Regs r;
  // __get_cpuid_count checks the maximum leaf first; it returns 0 (and leaves
  // zeros) for a leaf the CPU does not have.
  __get_cpuid_count(leaf, sub, &r.a, &r.b, &r.c, &r.d);
  return r;
}

// XGETBV is only executed after CPUID says OSXSAVE is set (otherwise it faults).
unsigned long long xcr0() {
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<unsigned long long>(hi) << 32) | lo;
}

struct Features {
  bool avx2 = false, avxvnni = false, avx512vnni = false, amx_int8 = false, amx_bf16 = false;
  bool avx512_core = false;  // F + BW + VL + DQ with ZMM state saved (no VNNI needed)
  bool avx512_bf16 = false;  // AVX512_BF16 on an AVX-512 VNNI CPU
  bool amd = false;          // vendor AuthenticAMD
};

// Linux hands out the AMX tile data state only on request (arch_prctl
// ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA, once per process; oneDNN makes
// the same request before it uses AMX). True if granted.
bool amx_permitted() {
#if defined(__linux__) && defined(SPINEL_X86) && defined(SYS_arch_prctl)
  constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

Features probe_features() {
  Features f;
  const Regs l1 = cpuid(1, 0);
  const bool osxsave = (l1.c >> 27) & 1;
  const bool avx = (l1.c >> 28) & 1;
  const bool fma = (l1.c >> 12) & 1;
  if (!osxsave || !avx) return f;
  const unsigned long long x = xcr0();
  const bool ymm_state = (x & 0x6) == 0x6;     // SSE + AVX state
  const bool zmm_state = (x & 0xE6) == 0xE6;   // + opmask, ZMM_Hi256, Hi16_ZMM
  if (!ymm_state) return f;

  const Regs l7 = cpuid(7, 0);
  const bool avx2 = (l7.b >> 5) & 1;
  if (!avx2 || !fma) return f;
  f.avx2 = true;

  const bool avx512f = (l7.b >> 16) & 1, avx512dq = (l7.b >> 17) & 1;
  const bool avx512bw = (l7.b >> 30) & 1, avx512vl = (l7.b >> 31) & 1;
  const bool avx512vnni = (l7.c >> 11) & 1;
  f.avx512_core = zmm_state && avx512f && avx512dq && avx512bw && avx512vl;
  f.avx512vnni = f.avx512_core && avx512vnni;

  // Sub-leaf 1 (AVX-VNNI: EAX 4, AVX512_BF16: EAX 5) exists only if sub-leaf
  // 0 reports it (EAX = highest sub-leaf).
  const Regs l71 = l7.a >= 1 ? cpuid(7, 1) : Regs{};
  f.avxvnni = (l71.a >> 4) & 1;
  f.avx512_bf16 = f.avx512vnni && ((l71.a >> 5) & 1);

  // AMX-TILE (EDX 24) + AMX-INT8 (EDX 25), with the OS saving tile config and
  // data (XCR0 bits 17, 18) and granting this process their use.
  const bool tiles = f.avx512vnni && ((l7.d >> 24) & 1) && (x & 0x60000) == 0x60000 && amx_permitted();
  f.amx_int8 = tiles && ((l7.d >> 25) & 1);
  // AMX-BF16 (EDX 22) for our attention tiles, which also convert with
  // AVX512_BF16.
  f.amx_bf16 = tiles && ((l7.d >> 22) & 1) && f.avx512_bf16;

  const Regs l0 = cpuid(0, 0);  // vendor string in EBX, EDX, ECX: "Auth" "enti" "cAMD"
  f.amd = l0.b == 0x68747541u && l0.d == 0x69746E65u && l0.c == 0x444D4163u;
  return f;
}
#else
Features probe_features() { return {}; }
#endif

const Features& features() {
  static const Features f = probe_features();
  return f;
}

Isa probe() {
  const Features& f = features();
  if (f.avx512vnni) return Isa::Avx512Vnni;
  // The ymm VNNI level also runs on AVX-512 VNNI CPUs without AVX-VNNI (EVEX
  // encoding of the same instruction), but those already take the level above.
  if (f.avxvnni) return Isa::Avx2Vnni;
  if (f.avx2) return Isa::Avx2;
  return Isa::Scalar;
}

Isa env_cap() {
  const char* v = std::getenv("SPINEL_ISA");
  if (!v || !*v) return Isa::Avx512Vnni;
  Isa cap;
  if (parse_isa(v, &cap)) return cap;
  std::fprintf(stderr,
               "spinel: warning: SPINEL_ISA=%s is not one of avx512vnni, avxvnni, avx2, scalar "
               "(or avx512, generic); ignored\n",
               v);
  return Isa::Avx512Vnni;
}

std::atomic<int> g_api_cap{static_cast<int>(Isa::Avx512Vnni)};

Isa min_isa(Isa a, Isa b) { return static_cast<int>(a) < static_cast<int>(b) ? a : b; }

}  // namespace

Isa detected_isa() {
  static const Isa d = probe();
  return d;
}

bool cpu_has_avxvnni() { return features().avxvnni; }

bool cpu_has_avx512_core() { return features().avx512_core && features().avx2; }

bool cpu_has_amx_int8() { return features().amx_int8; }
bool cpu_has_amx_bf16() { return features().amx_bf16; }
bool cpu_has_avx512_bf16() { return features().avx512_bf16; }
bool cpu_bf16_dot_full_rate() { return features().avx512_bf16 && features().amd; }
bool cpu_vnni_unpacks_free() { return features().avx512vnni && features().amd; }

bool cpu_supports(Isa isa) { return static_cast<int>(isa) <= static_cast<int>(detected_isa()); }

Isa active_isa() {
  static const Isa env = env_cap();
  return min_isa(min_isa(detected_isa(), env),
                 static_cast<Isa>(g_api_cap.load(std::memory_order_relaxed)));
}

Isa set_max_isa(Isa cap) {
  return static_cast<Isa>(g_api_cap.exchange(static_cast<int>(cap), std::memory_order_relaxed));
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx2Vnni: return "avxvnni";
    case Isa::Avx512Vnni: return "avx512vnni";
  }
  return "unknown";
}

bool parse_isa(const char* name, Isa* out) {
  static const struct {
    const char* name;
    Isa isa;
  } table[] = {{"scalar", Isa::Scalar},         {"generic", Isa::Scalar},
               {"avx2", Isa::Avx2},             {"avxvnni", Isa::Avx2Vnni},
               {"avx_vnni", Isa::Avx2Vnni},     {"avx512vnni", Isa::Avx512Vnni},
               {"avx512_vnni", Isa::Avx512Vnni}, {"avx512", Isa::Avx512Vnni}};
  if (!name) return false;
  for (const auto& e : table)
    if (!std::strcmp(name, e.name)) {
      if (out) *out = e.isa;
      return true;
    }
  return false;
}

}  // namespace spinel::kernels
