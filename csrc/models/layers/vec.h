// 32-byte vectors of floats / doubles for the sparse kernels, written with GCC/Clang vector
// extensions (AVX2 in the x86-64-v3 clone of a SWAMP_TARGET_CLONES function, SSE pairs
// otherwise). Internal to swamp_core.
#pragma once

#include <cstdint>
#include <cstring>

#include "../../common/simd.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // vector values never cross a non-inlined call

namespace swamp::layers {

template <typename T, int Bytes = 32>
struct Vec {
  typedef T type __attribute__((vector_size(Bytes)));
  static constexpr int64_t lanes = Bytes / sizeof(T);
  static inline type load(const T* p) {
    type v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  static inline void store(T* p, type v) { std::memcpy(p, &v, sizeof(v)); }
};

}  // namespace swamp::layers
