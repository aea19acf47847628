// Internal (not installed): CPU kernels written as plain loops over contiguous memory are also
// compiled for AVX2 + FMA on x86-64 Linux and the variant is picked at load time.
#pragma once

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define SWAMP_TARGET_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
// AVX-512 as well (for kernels written with 64-byte vectors)
#define SWAMP_TARGET_CLONES_512 \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SWAMP_TARGET_CLONES
#define SWAMP_TARGET_CLONES_512
#endif
