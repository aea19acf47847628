// Internal (not installed): CPU kernels written as plain loops over contiguous memory are also
// compiled for AVX2 + FMA on x86-64 Linux and the variant is picked at load time.
#pragma once

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define SWAMP_TARGET_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
// AVX-512 only: a kernel body instantiated with 64-byte vectors for CPUs that have them (GCC
// lowers 64-byte vector types badly where they are emulated: on an AVX2 CPU such a loop ran 10x
// slower than the same loop on 32-byte vectors), chosen at run time with cpu_has_avx512().
#define SWAMP_TARGET_AVX512 __attribute__((target("arch=x86-64-v4")))
namespace swamp {
inline bool cpu_has_avx512() {
  static const bool yes = __builtin_cpu_supports("x86-64-v4");
  return yes;
}
}  // namespace swamp
#else
#define SWAMP_TARGET_CLONES
#define SWAMP_TARGET_AVX512
namespace swamp {
inline bool cpu_has_avx512() { return false; }
}  // namespace swamp
#endif
